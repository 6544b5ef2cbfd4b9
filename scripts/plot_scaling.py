#!/usr/bin/python3
"""Plots a scaling sweep (scripts/scaling.sh CSV) beside an alpha-beta projection of
ring all-reduce data parallelism to many nodes.

    /usr/bin/python3 scripts/plot_scaling.py results/scaling/<host>-<date>.csv \
        [-o results/scaling/scaling.png] [--bandwidth-gbps 100] [--latency-us 2] \
        [--max-nodes 64] [--markdown]

Model (printed with --markdown, and on the plot):
  * a node is the measured machine: its compute time per image is the measured
    forward+backward time of the best single-node strong-scaling point divided by its
    global batch; AdamW takes the measured optimiser time per step whatever the batch;
    per-image time is assumed independent of the batch (optimistic for small batches);
  * one rank per node; the S-byte gradient (from the all-reduce rows) is all-reduced
    in k = ceil(S / 4 MiB) buckets, each a ring all-reduce:
        T_ar(N) = 2 (N-1) k alpha + 2 (N-1)/N * S / beta
    alpha = link latency per message, beta = link bandwidth;
  * step time between "no overlap" (compute + T_ar) and "full overlap of the
    all-reduce with the backward pass" (forward + max(backward, T_ar) + optimiser);
  * strong scaling: global batch fixed (the sweep's, 256), B/N images per node;
    weak scaling: the sweep's per-node batch on every node;
  * efficiency = images/s / (cores x images/s of the 1 rank x 1 thread point).
"""
import argparse
import csv
import math
import sys

BUCKET = 4 << 20


def load(path):
    rows = list(csv.DictReader(open(path)))
    num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None
    for r in rows:
        for k in ("ranks", "threads", "cores", "global_batch", "images_per_s", "step_ms",
                  "compute_ms", "allreduce_ms", "forward_ms", "backward_ms", "optimizer_ms",
                  "allreduce_bytes", "busbw_GBps", "efficiency", "step_min_ms", "step_max_ms"):
            r[k] = num(r, k)
    return rows


def t_allreduce(n, size, alpha, beta):
    """Seconds for a bucketed ring all-reduce of `size` bytes over n ranks."""
    if n <= 1:
        return 0.0
    k = math.ceil(size / BUCKET)
    return 2 * (n - 1) * k * alpha + 2 * (n - 1) / n * size / beta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("-o", "--output", default="results/scaling/scaling.png")
    ap.add_argument("--bandwidth-gbps", type=float, default=100.0, help="link bandwidth, Gbit/s (default 100)")
    ap.add_argument("--latency-us", type=float, default=2.0, help="latency per message, us (default 2)")
    ap.add_argument("--max-nodes", type=int, default=64)
    ap.add_argument("--markdown", action="store_true", help="print the model and tables as Markdown")
    a = ap.parse_args()

    rows = load(a.csv)
    train = [r for r in rows if r["mode"] in ("strong", "weak") and r["images_per_s"]]
    ar = [r for r in rows if r["mode"] == "allreduce"]
    if not train:
        sys.exit("plot_scaling.py: no strong/weak rows in %s" % a.csv)
    base = {m: next((r for r in train if r["mode"] == m and r["cores"] == 1), None) for m in ("strong", "weak")}
    cpn = int(max(r["cores"] for r in train if r["nodes"] in ("1", "")))  # cores per node

    def best(mode):
        c = [r for r in train if r["mode"] == mode and r["cores"] == cpn and r["nodes"] in ("1", "")]
        return max(c, key=lambda r: r["images_per_s"]) if c else None

    node = {m: best(m) for m in ("strong", "weak")}
    ns = node["strong"] or node["weak"]
    for m in node:
        node[m] = node[m] or ns
    # Per-node compute per image (forward, backward) and the fixed optimiser time, in
    # seconds, from each mode's own best single-node point.
    t_fwd = {m: node[m]["forward_ms"] / 1e3 / node[m]["global_batch"] for m in node}
    t_bwd = {m: node[m]["backward_ms"] / 1e3 / node[m]["global_batch"] for m in node}
    t_opt = {m: node[m]["optimizer_ms"] / 1e3 for m in node}
    size = next((r["allreduce_bytes"] for r in ar if r["allreduce_bytes"]), None)
    if size is None:
        size = 46762408.0  # the recipe model's gradient, 11,690,602 floats
    alpha = a.latency_us * 1e-6
    beta = a.bandwidth_gbps * 1e9 / 8
    tcp = [r for r in ar if r["transport"] == "tcp" and r["busbw_GBps"]]
    beta_tcp = max(r["busbw_GBps"] for r in tcp) * 1e9 if tcp else None
    ips1 = {m: (base[m]["images_per_s"] if base[m] else None) for m in base}
    B_strong = (node["strong"] or ns)["global_batch"]
    B_weak = (node["weak"] or ns)["global_batch"]

    nodes = [2 ** i for i in range(int(math.log2(a.max_nodes)) + 1)]

    def project(mode, N, b_link):
        b = B_strong / N if mode == "strong" else B_weak
        tar = t_allreduce(N, size, alpha, b_link)
        no = b * (t_fwd[mode] + t_bwd[mode]) + t_opt[mode] + tar
        ov = b * t_fwd[mode] + max(b * t_bwd[mode], tar) + t_opt[mode]
        gb = B_strong if mode == "strong" else B_weak * N
        return gb / no, gb / ov, tar

    proj = {m: [project(m, N, beta) for N in nodes] for m in ("strong", "weak")}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2))
    colors = {"strong": "tab:blue", "weak": "tab:orange"}
    markers = {"none": "o", "shm": "s", "tcp": "^", "default": "D"}
    cores_proj = [N * cpn for N in nodes]
    for m in ("strong", "weak"):
        lo = [p[0] for p in proj[m]]
        hi = [p[1] for p in proj[m]]
        ax[0].fill_between(cores_proj, lo, hi, color=colors[m], alpha=0.18)
        ax[0].plot(cores_proj, lo, color=colors[m], lw=1.2, label="%s, projected (no overlap .. full overlap)" % m)
        ax[0].plot(cores_proj, hi, color=colors[m], lw=1.2, ls="--")
        if ips1[m]:
            for lst, k in ((lo, 0), (hi, 1)):
                eff = [v / (c * ips1[m]) for v, c in zip(lst, cores_proj)]
                ax[1].plot(cores_proj, eff, color=colors[m], lw=1.2, ls="-" if k == 0 else "--",
                           label="%s, projected, %s" % (m, "no overlap" if k == 0 else "full overlap") )
        for tr in markers:
            pts = [r for r in train if r["mode"] == m and r["transport"] == tr]
            if not pts:
                continue
            lab = "%s, measured (%s)" % (m, {"none": "1 rank", "shm": "shared memory", "tcp": "TCP only",
                                              "default": "default transport"}[tr])
            ax[0].scatter([r["cores"] for r in pts], [r["images_per_s"] for r in pts], color=colors[m],
                          marker=markers[tr], s=46, zorder=3, label=lab, edgecolor="k", lw=0.5)
            for r in pts:
                ax[0].annotate("%dx%d" % (r["ranks"], r["threads"]), (r["cores"], r["images_per_s"]),
                               textcoords="offset points", xytext=(5, -10 if m == "weak" else 4), fontsize=7)
            if ips1[m]:
                ax[1].scatter([r["cores"] for r in pts], [r["images_per_s"] / (r["cores"] * ips1[m]) for r in pts],
                              color=colors[m], marker=markers[tr], s=46, zorder=3, edgecolor="k", lw=0.5)
    for k in (0, 1):
        ax[k].set_xscale("log", base=2)
        ax[k].set_xlabel("cores (measured: this machine; projected: nodes x %d cores)" % cpn)
        sec = ax[k].secondary_xaxis("top", functions=(lambda x: x / cpn, lambda x: x * cpn))
        sec.set_xlabel("nodes")
        sec.set_xticks(nodes)
        sec.set_xticklabels([str(n) for n in nodes])
        sec.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax[k].set_xticks([1] + cores_proj)
        ax[k].set_xticklabels([str(c) for c in [1] + cores_proj])
        ax[k].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax[k].grid(True, which="both", alpha=0.3)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("training images/s")
    ax[0].set_title("Throughput: strong (global batch %d), weak (%d per node)" % (B_strong, B_weak), fontsize=10)
    ax[0].legend(fontsize=7, loc="upper left")
    ax[1].set_ylim(0, 1.1)
    ax[1].set_ylabel("efficiency = images/s / (cores x 1x1 images/s)")
    ax[1].set_title("Parallel efficiency", fontsize=10)
    ax[1].legend(fontsize=7, loc="upper right")

    # All-reduce: model and measurements.
    Ns = [2 ** i for i in range(1, int(math.log2(a.max_nodes)) + 1)]
    ax[2].plot(Ns, [1e3 * t_allreduce(N, size, alpha, beta) for N in Ns], color="k",
               label="ring model, %.0f Gb/s, %.0f us" % (a.bandwidth_gbps, a.latency_us))
    ax[2].plot(Ns, [1e3 * t_allreduce(N, size, alpha, beta) for N in Ns], "k.")
    if beta_tcp:
        ax[2].plot(Ns, [1e3 * t_allreduce(N, size, alpha, beta_tcp) for N in Ns], color="tab:red", ls=":",
                   label="ring model at the measured TCP bus bandwidth (%.2f GB/s, one host)" % (beta_tcp / 1e9))
    for tr, mk in (("shm", "s"), ("tcp", "^"), ("default", "D")):
        pts = [r for r in ar if r["transport"] == tr]
        if pts:
            ax[2].errorbar([r["ranks"] for r in pts], [r["allreduce_ms"] for r in pts],
                           yerr=[[r["allreduce_ms"] - r["step_min_ms"] for r in pts],
                                 [r["step_max_ms"] - r["allreduce_ms"] for r in pts]],
                           fmt=mk, color="tab:green" if tr == "shm" else "tab:red", ms=7, capsize=3,
                           label="measured, %s (median, min-max)" % {"shm": "shared memory", "tcp": "TCP only",
                                                                      "default": "default"}[tr])
    tb = 1e3 * (t_fwd["strong"] + t_bwd["strong"])
    ax[2].axhline(B_strong / 64 * tb + 1e-9, color="tab:blue", lw=0.8, ls="--")
    ax[2].text(Ns[0], B_strong / 64 * tb * 1.08, "compute of a strong-scaling step at 64 nodes", fontsize=7,
               color="tab:blue")
    ax[2].set_xscale("log", base=2)
    ax[2].set_xticks(Ns)
    ax[2].set_xticklabels([str(n) for n in Ns])
    ax[2].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax[2].set_yscale("log")
    ax[2].set_xlabel("ranks (= nodes in the model)")
    ax[2].set_ylabel("ms per all-reduce of %.1f MiB (4 MiB buckets)" % (size / 2 ** 20))
    ax[2].set_title("Gradient all-reduce", fontsize=10)
    ax[2].grid(True, which="both", alpha=0.3)
    lo, hi = ax[2].get_ylim()
    ax[2].set_ylim(lo / 8, hi)  # room for the legend below the model line
    ax[2].legend(fontsize=7, loc="lower right")
    host = rows[0].get("host", "?")
    fig.suptitle("ShiftViT data-parallel scaling: %s, %s; measured on %d cores, projected to %d nodes like it "
                 "(alpha-beta ring all-reduce, %.0f Gb/s, %.0f us; compute per image from the best 1-node points: "
                 "strong %dx%d, weak %dx%d)"
                 % (host, rows[0].get("date", ""), cpn, a.max_nodes, a.bandwidth_gbps, a.latency_us,
                    node["strong"]["ranks"], node["strong"]["threads"], node["weak"]["ranks"],
                    node["weak"]["threads"]), fontsize=9)
    label = rows[0].get("label") or ""
    if label:
        fig.text(0.5, 0.005, "Measurement conditions: " + label, ha="center", fontsize=8, color="tab:red")
    fig.tight_layout(rect=(0, 0.03 if label else 0, 1, 1))
    fig.savefig(a.output, dpi=110)
    print("wrote %s" % a.output)

    if a.markdown:
        print()
        print("Model inputs: node = %d cores; gradient %.1f MiB in %d buckets of 4 MiB; alpha = %.1f us, "
              "beta = %.1f Gb/s (%.2f GB/s)." % (cpn, size / 2 ** 20, math.ceil(size / BUCKET), a.latency_us,
                                                 a.bandwidth_gbps, beta / 1e9))
        for m in ("strong", "weak"):
            print("- %s: forward %.2f ms + backward %.2f ms per image per node, AdamW %.1f ms per step "
                  "(the %dx%d point, global batch %d)" % (m, 1e3 * t_fwd[m], 1e3 * t_bwd[m], 1e3 * t_opt[m],
                  node[m]["ranks"], node[m]["threads"], node[m]["global_batch"]))
        print()
        print("Ranges: no overlap - full overlap of the all-reduce with the backward pass. Speed-up is "
              "over one node; efficiency is per core against the measured 1x1 point.")
        print()
        print("| nodes | cores | T_ar (ms) | strong images/s | strong speed-up | strong eff. "
              "| weak images/s | weak speed-up | weak eff. |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for i, N in enumerate(nodes):
            s, w = proj["strong"][i], proj["weak"][i]
            s1, w1 = proj["strong"][0], proj["weak"][0]
            c = N * cpn
            fe = lambda v, m: "%.2f" % (v / (c * ips1[m])) if ips1[m] else "-"
            print("| %d | %d | %.1f | %.0f - %.0f | %.1f - %.1f | %s - %s | %.0f - %.0f | %.1f - %.1f | %s - %s |"
                  % (N, c, 1e3 * s[2], s[0], s[1], s[0] / s1[0], s[1] / s1[1], fe(s[0], "strong"),
                     fe(s[1], "strong"), w[0], w[1], w[0] / w1[0], w[1] / w1[1], fe(w[0], "weak"), fe(w[1], "weak")))
        if beta_tcp:
            print()
            print("With the measured TCP bus bandwidth (%.2f GB/s) instead: T_ar(64) = %.0f ms."
                  % (beta_tcp / 1e9, 1e3 * t_allreduce(64, size, alpha, beta_tcp)))


if __name__ == "__main__":
    main()
