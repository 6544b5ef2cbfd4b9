#!/usr/bin/python3
"""Fits the alpha-beta model of the bucketed ring all-reduce to the emulated-cluster
measurements of scripts/vcluster_sweep.sh, checks it against the measured training
steps, and projects data-parallel training to 64 nodes.

    /usr/bin/python3 scripts/fit_allreduce.py results/scaling/vcluster-<date>.csv \
        [--max-nodes 64] [-o PREFIX]      # writes PREFIX-allreduce.png, PREFIX-scaling.png, PREFIX.md

Model (one rank per node; S bytes all-reduced in k = ceil(S / 4 MiB) buckets):
    ring:      T_ar(P, S) = 2 (P-1) k alpha + 2 (P-1)/P * S / beta
    binomial:  T_ar(P, S) = 2 r k alpha + 2 r S / beta,  r = ceil(log2 P)
               (--algorithm binomial: Open MPI's own choice for in-place calls)
alpha (latency per message step) and beta (bytes/s per link) are fitted per link rate
by least squares on relative error over every all-reduce row (P = 2, 4, 8 and all sizes).

Step time of P nodes, from the 1-node point of the same kind and link rate (per-image
forward and backward time, and the optimiser's time per step):
    no overlap:   fwd + bwd + T_ar + opt
    full overlap: fwd + max(bwd, T_ar) + opt      (buckets start during the backward pass)
with B/P images per node for strong scaling, the fixed per-node batch for weak scaling.
"""
import argparse
import csv
import math
import sys

BUCKET = 4 << 20


ALGORITHM = "ring"
GAMMA = 0.0  # ms of node CPU per byte the node sends (fitted in main)


def steps_and_volume(p):
    """Message steps and bytes per link, per byte of the buffer, of one all-reduce."""
    if ALGORITHM == "binomial":  # reduce to rank 0, then broadcast: whole buffer each step
        r = math.ceil(math.log2(p))
        return 2 * r, 2 * r
    return 2 * (p - 1), 2 * (p - 1) / p


def t_ar(p, size, alpha, beta):
    if p <= 1:
        return 0.0
    k = max(1, math.ceil(size / BUCKET))
    steps, vol = steps_and_volume(p)
    return steps * k * alpha + vol * size / beta


def fit(rows):
    """Weighted least squares for T = alpha * x1 + (1/beta) * x2, weights 1/T."""
    s11 = s12 = s22 = b1 = b2 = 0.0
    for r in rows:
        p, size, t = r["nodes"], r["bytes"], r["median_ms"] / 1e3
        k = max(1, math.ceil(size / BUCKET))
        steps, vol = steps_and_volume(p)
        x1, x2, w = steps * k / t, vol * size / t, 1.0
        s11 += w * x1 * x1; s12 += w * x1 * x2; s22 += w * x2 * x2
        b1 += w * x1; b2 += w * x2
    det = s11 * s22 - s12 * s12
    a = (b1 * s22 - b2 * s12) / det
    inv_beta = (s11 * b2 - s12 * b1) / det
    if a < 0:  # a latency cannot be negative: the best fit with alpha = 0
        a, inv_beta = 0.0, b2 / s22
    return a, 1.0 / inv_beta


def rate_gbit(rate):
    return float(rate.replace("gbit", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("-o", "--prefix", help="output prefix (default: the CSV path without .csv)")
    ap.add_argument("--max-nodes", type=int, default=64)
    ap.add_argument("--own-core-nodes", type=lambda v: {int(x) for x in v.split(",")}, default={2},
                    help="node counts at which every node had its own cores (cpuset), comma-separated; "
                         "the second fit uses only those rows (default 2)")
    ap.add_argument("--algorithm", choices=("ring", "binomial"), default="ring",
                    help="all-reduce algorithm the runs used (Open MPI libnbc: ring is what shiftvit "
                         "asks for; binomial is libnbc's choice for in-place calls)")
    a = ap.parse_args()
    global ALGORITHM
    ALGORITHM = a.algorithm
    prefix = a.prefix or a.csv.rsplit(".csv", 1)[0]
    rows = [r for r in csv.DictReader(l for l in open(a.csv) if not l.startswith("#"))]
    for r in rows:
        for k in ("nodes", "cpus_per_node", "bytes", "global_batch", "median_ms", "min_ms", "max_ms",
                  "busbw_GBps", "images_per_s", "forward_ms", "backward_ms", "allreduce_wait_ms",
                  "optimizer_ms"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    ar = [r for r in rows if r["kind"] == "allreduce" and r["median_ms"]]
    if not ar:
        sys.exit("fit_allreduce.py: no all-reduce rows in " + a.csv)
    model_bytes = max(r["bytes"] for r in ar)
    out = []
    fits = {}
    for title, subset in (("every row", None), (f"P = {', '.join(map(str, sorted(a.own_core_nodes)))} only (every node on its own cores)", a.own_core_nodes)):
        out.append(f"## Alpha-beta fit of the all-reduce ({ALGORITHM} algorithm), fitted on {title}\n")
        out.append("| link | alpha (us) | beta (Gbit/s) | beta / link rate | rows fitted | max rel. error, all rows | "
                   "RMS rel. error, all rows | RMS rel. error, fitted rows |")
        out.append("|---|---|---|---|---|---|---|---|")
        for rate in sorted({r["rate"] for r in ar}, key=rate_gbit):
            rr = [r for r in ar if r["rate"] == rate]
            fr = [r for r in rr if subset is None or r["nodes"] in subset]
            if not fr:
                continue
            alpha, beta = fit(fr)
            err = lambda rows: [t_ar(r["nodes"], r["bytes"], alpha, beta) / (r["median_ms"] / 1e3) - 1 for r in rows]
            rms = lambda e: math.sqrt(sum(x * x for x in e) / len(e)) * 100
            e_all, e_fit = err(rr), err(fr)
            fits[rate] = (alpha, beta)  # the last table's fit is the one used below
            out.append(f"| {rate} | {alpha * 1e6:.0f} | {beta * 8 / 1e9:.2f} | {beta * 8 / 1e9 / rate_gbit(rate):.2f} | "
                       f"{len(fr)} | {max(abs(x) for x in e_all) * 100:.0f}% | {rms(e_all):.0f}% | {rms(e_fit):.0f}% |")
        out.append("")
    out.append(f"The second fit (nodes that own their cores: no CPU-quota throttling) is used below.\n")
    out.append("")
    out.append("| link | nodes | bytes | measured ms | modelled ms | error | busbw GB/s |")
    out.append("|---|---|---|---|---|---|---|")
    for r in sorted(ar, key=lambda r: (rate_gbit(r["rate"]), r["nodes"], r["bytes"])):
        alpha, beta = fits[r["rate"]]
        m = t_ar(r["nodes"], r["bytes"], alpha, beta) * 1e3
        out.append(f"| {r['rate']} | {r['nodes']:.0f} | {r['bytes']:.0f} | {r['median_ms']:.2f} | {m:.2f} | "
                   f"{(m / r['median_ms'] - 1) * 100:+.0f}% | {r['busbw_GBps']:.3f} |")

    # Training steps: predicted against measured.
    st = [r for r in rows if r["kind"] in ("strong", "weak") and r["median_ms"]]
    preds = []
    if st:
        out.append("\n## Training step across emulated nodes: measured against the model\n")
        out.append("Per-node compute from the 1-node point of the same kind and link rate; the all-reduce "
                   "from the fit above (the model's gradient, %.1f MiB).\n" % (model_bytes / 2 ** 20))
        # The all-reduce costs CPU time on the node while it overlaps the backward
        # pass (TCP, copies, the reduction): the backward pass grows with the bytes
        # a node moves. gamma (ms per byte moved) by least squares through the origin.
        global GAMMA
        num = den = 0.0
        for r in st:
            base = next((b for b in st if b["kind"] == r["kind"] and b["rate"] == r["rate"] and b["nodes"] == 1), None)
            if not base or r["nodes"] < 2:
                continue
            extra = r["backward_ms"] - base["backward_ms"] / base["global_batch"] * r["global_batch"] / r["nodes"]
            vol = steps_and_volume(r["nodes"])[1] * model_bytes
            num += extra * vol
            den += vol * vol
        GAMMA = num / den if den else 0.0
        out.append(f"Communication CPU cost: the backward pass of a node grows by gamma = {GAMMA * 1e6:.2f} ms per MB "
                   f"it sends (fitted on the multi-node points: {GAMMA * 1e6 * steps_and_volume(2)[1] * model_bytes / 1e6:.0f} ms "
                   f"per step at 2 nodes), the CPU time of TCP, copies and the reduction inside the node's CPU share.\n")
        out.append("| kind | link | nodes | global batch | measured ms | exposed all-reduce ms | "
                   "model, full overlap | model, no overlap | model + comm. CPU | error (full overlap) | "
                   "error (+ comm. CPU) | images/s | efficiency |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for kind in ("strong", "weak"):
            for rate in sorted({r["rate"] for r in st}, key=rate_gbit):
                rr = sorted([r for r in st if r["kind"] == kind and r["rate"] == rate], key=lambda r: r["nodes"])
                base = next((r for r in rr if r["nodes"] == 1), None)
                if not base or rate not in fits:
                    continue
                alpha, beta = fits[rate]
                f1 = base["forward_ms"] / base["global_batch"]
                b1 = base["backward_ms"] / base["global_batch"]
                o1 = base["optimizer_ms"]
                for r in rr:
                    p = r["nodes"]
                    per_node = r["global_batch"] / p
                    tar = t_ar(p, model_bytes, alpha, beta) * 1e3
                    vol = steps_and_volume(p)[1] * model_bytes if p > 1 else 0.0
                    full = f1 * per_node + max(b1 * per_node, tar) + o1
                    none = f1 * per_node + b1 * per_node + tar + o1
                    cpu = f1 * per_node + max(b1 * per_node + GAMMA * vol, tar) + o1
                    eff = r["images_per_s"] / (p * base["images_per_s"])
                    preds.append((kind, rate, p, r["median_ms"], full, none, cpu))
                    out.append(f"| {kind} | {rate} | {p:.0f} | {r['global_batch']:.0f} | {r['median_ms']:.0f} | "
                               f"{r['allreduce_wait_ms']:.0f} | {full:.0f} | {none:.0f} | {cpu:.0f} | "
                               f"{(full / r['median_ms'] - 1) * 100:+.0f}% | {(cpu / r['median_ms'] - 1) * 100:+.0f}% | "
                               f"{r['images_per_s']:.1f} | {eff:.2f} |")
        if preds:
            for i, what in ((4, "full overlap"), (6, "full overlap + communication CPU cost")):
                e = [abs(p[i] / p[3] - 1) for p in preds if p[2] > 1]
                if e:
                    out.append(f"\nModel ({what}) against measured, multi-node points: mean |error| "
                               f"{sum(e) / len(e) * 100:.0f}%, max {max(e) * 100:.0f}%.")

        # Projection to many nodes with the fitted link and the measured per-node compute.
        out.append(f"\n## Projection to {a.max_nodes} nodes (fitted alpha-beta, measured 1-node compute)\n")
        out.append("| kind | link | " + " | ".join(f"{n} nodes" for n in nodes_list(a.max_nodes)) + " |")
        out.append("|---|---|" + "---|" * len(nodes_list(a.max_nodes)))
        for kind in ("strong", "weak"):
            for rate in sorted(fits, key=rate_gbit):
                base = next((r for r in st if r["kind"] == kind and r["rate"] == rate and r["nodes"] == 1), None)
                if not base:
                    base = next((r for r in st if r["kind"] == kind and r["nodes"] == 1), None)
                if not base:
                    continue
                cells = []
                for n in nodes_list(a.max_nodes):
                    ips, eff = project(kind, n, base, model_bytes, *fits[rate])
                    cells.append(f"{ips:.0f} img/s ({eff:.2f})")
                out.append(f"| {kind} | {rate} | " + " | ".join(cells) + " |")
        out.append("\nCells: images/s (parallel efficiency against N x the 1-node images/s), full overlap with the "
               "communication CPU cost. "
                   "Strong scaling keeps the global batch of 256, so from 256 nodes on a node has "
                   "under one image.")
    text = "\n".join(out) + "\n"
    open(prefix + ".md", "w").write(text)
    print(text)
    plot(ar, fits, st, preds, prefix, model_bytes, a.max_nodes)


def nodes_list(mx):
    n, out = 1, []
    while n <= mx:
        out.append(n)
        n *= 2
    return out


def project(kind, n, base, size, alpha, beta):
    f1 = base["forward_ms"] / base["global_batch"]
    b1 = base["backward_ms"] / base["global_batch"]
    o1 = base["optimizer_ms"]
    per_node = 256 / n if kind == "strong" else base["global_batch"]
    tar = t_ar(n, size, alpha, beta) * 1e3
    vol = steps_and_volume(n)[1] * size if n > 1 else 0.0
    step = f1 * per_node + max(b1 * per_node + GAMMA * vol, tar) + o1
    ips = per_node * n / step * 1e3
    ips1 = base["global_batch"] / (f1 * base["global_batch"] + b1 * base["global_batch"] + o1) * 1e3
    return ips, ips / (n * ips1)


def plot(ar, fits, st, preds, prefix, model_bytes, max_nodes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rates = sorted(fits, key=rate_gbit)
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), sharey=True, squeeze=False)
    for ax, rate in zip(axes[0], rates):
        alpha, beta = fits[rate]
        for p in sorted({r["nodes"] for r in ar}):
            rr = sorted([r for r in ar if r["rate"] == rate and r["nodes"] == p], key=lambda r: r["bytes"])
            if not rr:
                continue
            xs = [r["bytes"] for r in rr]
            line = ax.plot([x / 2 ** 20 for x in xs], [r["median_ms"] for r in rr], "o", label=f"{p:.0f} nodes")
            grid = [xs[0] * (xs[-1] / xs[0]) ** (i / 50) for i in range(51)]
            ax.plot([x / 2 ** 20 for x in grid], [t_ar(p, x, alpha, beta) * 1e3 for x in grid], "-",
                    color=line[0].get_color(), alpha=0.6)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_title(f"{rate}: alpha {alpha * 1e6:.0f} us, beta {beta * 8 / 1e9:.2f} Gbit/s", fontsize=9)
        ax.set_xlabel("all-reduce size (MiB)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time per all-reduce (ms)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("All-reduce across emulated nodes: measured (points) and fitted alpha-beta model (lines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(prefix + "-allreduce.png", dpi=110)
    if preds:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for kind, marker in (("strong", "o"), ("weak", "s")):
            pts = [p for p in preds if p[0] == kind]
            ax.plot([p[3] for p in pts], [p[4] for p in pts], marker, label=f"{kind} (full overlap)")
            ax.plot([p[3] for p in pts], [p[5] for p in pts], marker, mfc="none", label=f"{kind} (no overlap)")
            ax.plot([p[3] for p in pts], [p[6] for p in pts], "x", label=f"{kind} (overlap + comm. CPU)")
            for p in pts:
                ax.annotate(f"{p[2]:.0f}n {p[1]}", (p[3], p[4]), fontsize=6)
        lim = [min(min(p[3], p[4]) for p in preds) * 0.8, max(max(p[3], p[5]) for p in preds) * 1.2]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("measured step time (ms)"); ax.set_ylabel("modelled step time (ms)")
        ax.set_title("Training step across 1-4 emulated nodes: model against measurement", fontsize=9)
        ax.legend(fontsize=7); ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(prefix + "-scaling.png", dpi=110)


if __name__ == "__main__":
    main()
