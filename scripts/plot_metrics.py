#!/usr/bin/python3
"""Draws the training curves of a shiftvit run into RUN_DIR/curves.png.

usage: scripts/plot_metrics.py RUN_DIR [--out FILE]
       scripts/plot_metrics.py --vs-time RUN_DIR [RUN_DIR ...] --out FILE
                               [--target TOP1]

Reads RUN_DIR/metrics.h5 (datasets /steps/<column> and /epochs/<column>), or
the CSV files metrics_steps.csv / metrics_epochs.csv when the HDF5 log is
missing or cannot be opened (e.g. while a run is writing it). Panels: train
and val loss per epoch, train and val top-1 and top-5 per epoch, and the
learning rate per step. Epochs without validation (train.val_every > 1) hold
NaN in the val columns and are left out of the val curves.

--vs-time draws val top-1 against wall-clock minutes (the running sum of the
`seconds` column: training plus validation) for each run given, with an
optional horizontal line at a target top-1 (time to accuracy). Uses Debian's python3-matplotlib and python3-h5py;
no display needed.
"""
import argparse
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

STEP_COLS = ["step", "epoch", "lr", "loss", "top1", "top5", "images_per_s"]
EPOCH_COLS = ["epoch", "train_loss", "train_top1", "train_top5", "val_loss",
              "val_top1", "val_top5", "lr", "seconds"]


def read_h5(path):
    import h5py  # only needed for the HDF5 log
    steps, epochs = {}, {}
    with h5py.File(path, "r") as f:
        for group, cols, out in (("steps", STEP_COLS, steps), ("epochs", EPOCH_COLS, epochs)):
            if group not in f:
                raise ValueError(f"{path}: no group /{group}")
            for c in cols:
                if c in f[group]:
                    out[c] = [float(v) for v in f[group][c][()]]
    return steps, epochs


def read_csv(path, cols):
    out = {c: [] for c in cols}
    if not os.path.exists(path):
        return out
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                vals = {c: float(row[c]) for c in cols if row.get(c) not in (None, "")}
            except ValueError:
                continue  # a partly written last line
            for c, v in vals.items():
                out[c].append(v)
    return out


def load(run_dir):
    h5 = os.path.join(run_dir, "metrics.h5")
    if os.path.exists(h5):
        try:
            steps, epochs = read_h5(h5)
            return steps, epochs, h5
        except Exception as e:  # noqa: BLE001 - fall back to the CSV files
            print(f"plot_metrics: cannot read {h5} ({e}); using the CSV files", file=sys.stderr)
    steps = read_csv(os.path.join(run_dir, "metrics_steps.csv"), STEP_COLS)
    epochs = read_csv(os.path.join(run_dir, "metrics_epochs.csv"), EPOCH_COLS)
    return steps, epochs, os.path.join(run_dir, "metrics_*.csv")


def validated(xs, ys):
    """The (x, y) pairs whose y is a number (NaN marks an epoch not validated)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_vs_time(run_dirs, out, target):
    fig, ax = plt.subplots(figsize=(8, 5))
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            sys.exit(f"plot_metrics: {run_dir} is not a directory")
        _, epochs, _ = load(run_dir)
        secs = epochs.get("seconds", [])
        if not secs:
            sys.exit(f"plot_metrics: {run_dir}: no epoch rows")
        minutes, t = [], 0.0
        for s in secs:
            t += s
            minutes.append(t / 60.0)
        x, y = validated(minutes, epochs["val_top1"])
        name = os.path.basename(os.path.normpath(run_dir))
        ax.plot(x, y, "o-", markersize=3,
                label=f"{name}: best {max(y):.4f}, {minutes[-1]:.1f} min in all")
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", label=f"target {target:.4f}")
    ax.set_xlabel("wall-clock minutes (training + validation)")
    ax.set_ylabel("val top-1")
    ax.set_title("val top-1 against wall-clock time")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"Time to accuracy: {out}")


def main():
    ap = argparse.ArgumentParser(description="Plot the curves of a shiftvit run.")
    ap.add_argument("run_dir", nargs="?", help="run directory (holds metrics.h5 or metrics_*.csv)")
    ap.add_argument("--out", help="output image (default RUN_DIR/curves.png)")
    ap.add_argument("--vs-time", nargs="+", metavar="RUN_DIR",
                    help="plot val top-1 against wall-clock minutes for these runs (needs --out)")
    ap.add_argument("--target", type=float, help="with --vs-time: draw this top-1 as a line")
    args = ap.parse_args()
    if args.vs_time:
        if not args.out:
            sys.exit("plot_metrics: --vs-time needs --out FILE")
        plot_vs_time(([args.run_dir] if args.run_dir else []) + args.vs_time, args.out, args.target)
        return
    if not args.run_dir:
        ap.error("RUN_DIR is required")
    if not os.path.isdir(args.run_dir):
        sys.exit(f"plot_metrics: {args.run_dir} is not a directory")
    steps, epochs, source = load(args.run_dir)
    ep = epochs.get("epoch", [])
    st = steps.get("step", [])
    if not ep and not st:
        sys.exit(f"plot_metrics: no metrics found in {args.run_dir} "
                 "(expected metrics.h5 or metrics_steps.csv / metrics_epochs.csv)")

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    if ep:
        ax.plot(ep, epochs["train_loss"], "o-", label="train")
        ax.plot(*validated(ep, epochs["val_loss"]), "s-", label="val")
    ax.set_title("loss per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")

    for ax, k in ((axes[0][1], "top1"), (axes[1][0], "top5")):
        if ep:
            ax.plot(ep, epochs["train_" + k], "o-", label="train")
            ax.plot(*validated(ep, epochs["val_" + k]), "s-", label="val")
        ax.set_title(f"{k.replace('top', 'top-')} accuracy per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)

    ax = axes[1][1]
    if st:
        ax.plot(st, steps["lr"], "-", color="tab:green", label="learning rate")
    ax.set_title("learning rate per step")
    ax.set_xlabel("step")
    ax.set_ylabel("lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    for a in axes.flat:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(True, alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend()
    fig.suptitle(f"{os.path.basename(os.path.normpath(args.run_dir))}  ({source})", fontsize=10)
    fig.tight_layout()
    out = args.out or os.path.join(args.run_dir, "curves.png")
    fig.savefig(out, dpi=100)
    print(f"Curves: {out}")


if __name__ == "__main__":
    main()
