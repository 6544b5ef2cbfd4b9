#!/usr/bin/python3
"""The per-kind table of README.md from profile.jsonl (run.sh) and bench/*.csv
(scripts/bench.sh's unprofiled runs): ms per batch of 256, ours and PyTorch,
1 and 2 threads, and the bound (ours with every non-product kernel at zero).
Usage: table.py DIR  (prints Markdown)."""
import csv, glob, json, os, sys

d = sys.argv[1]
prof = {}
for line in open(os.path.join(d, "profile.jsonl")):
    r = json.loads(line)
    prof[(r["impl"], r["threads"])] = r
ips = {}
for path in sorted(glob.glob(os.path.join(d, "bench", "*.csv"))):
    for r in csv.DictReader(open(path)):
        if r["mode"] == "eval" and r["images_per_s"]:
            ips[(r["impl"], int(r["threads"]))] = float(r["images_per_s"])
T = (1, 2)
o = {t: prof[("ours", t)]["profile_ms"] for t in T}
p = {t: prof[("pytorch", t)]["profile_ms"] for t in T}
rows = [  # label, ours kinds, PyTorch kinds, product?
    ("patch projection: window gather", ["patch_gather"], ["patch_gather"], 0),
    ("patch projection: product (+ bias)", ["patch_product"], ["patch_product"], 1),
    ("block: shift + LayerNorm (ours: one kernel)", ["shift_layernorm"], ["shift", "layernorm"], 0),
    ("  of which PyTorch's shift", None, ["shift"], 0),
    ("  of which PyTorch's LayerNorm", None, ["layernorm"], 0),
    ("block: fc1 product (PyTorch: + bias, addmm)", ["fc1_product"], ["fc1_product"], 1),
    ("block: GELU (ours: + fc1 bias)", ["gelu"], ["gelu"], 0),
    ("block: fc2 product (PyTorch: + bias, addmm)", ["fc2_product"], ["fc2_product"], 1),
    ("block: residual add (ours: + fc2 bias)", ["residual"], ["residual"], 0),
    ("merge: LayerNorm + 2x2 window gather (ours: one kernel)", ["merge_layernorm_gather"],
     ["merge_layernorm", "merge_gather"], 0),
    ("merge: reduction product", ["merge_product"], ["merge_product"], 1),
    ("global average pooling", ["pool"], ["pool"], 0),
    ("classifier product (+ bias)", ["classifier_product"], ["classifier_product"], 1),
    ("PyTorch: other ops outside the modules", None, ["other"], 0),
    ("PyTorch: in no op (Python, hooks, profiler)", None, ["unattributed"], 0),
]
f = lambda v: "%.1f" % v if v is not None else ""
def val(src, kinds):
    return sum(src[k] for k in kinds) if kinds is not None else None
print("| kind | ours 1 thread | PyTorch 1 thread | ours 2 threads | PyTorch 2 threads |")
print("|---|---|---|---|---|")
for label, ok, pk, _ in rows:
    print("| %s | %s | %s | %s | %s |" % (label, *(x for t in T for x in (f(val(o[t], ok)), f(val(p[t], pk))))))
tot = {}
for t in T:
    po, pp = prof[("ours", t)], prof[("pytorch", t)]
    tot[t] = (po["profile_products_ms"], po["profile_other_ms"], pp["profile_products_ms"], pp["profile_other_ms"],
              pp["profiled_step_ms"], po["median_ms"])
print("| **matrix products** | **%s** | **%s** | **%s** | **%s** |" % tuple(f(x) for t in T for x in tot[t][0:4:2]))
print("| **everything else** | **%s** | **%s** | **%s** | **%s** |" % tuple(f(x) for t in T for x in tot[t][1:4:2]))
print("| step, profiled run (ours: median; PyTorch: mean under the profiler) | %s | %s | %s | %s |"
      % tuple(f(x) for t in T for x in (tot[t][5], tot[t][4])))
print("| step, unprofiled (bench.sh run, median) | %s | %s | %s | %s |"
      % tuple(f(256e3 / ips[(i, t)]) if (i, t) in ips else "" for t in T for i in ("ours", "pytorch")))
print()
print("| threads | ours images/s | PyTorch images/s | ratio | target 1.5x PyTorch | ours products ms | "
      "bound: ours with the rest at 0 ms, images/s | bound / PyTorch | ours non-product ms | "
      "non-product ms allowed at 1.5x | share of non-product time that must go |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for t in T:
    oi, pi = ips[("ours", t)], ips[("pytorch", t)]
    prod, rest = tot[t][0], tot[t][1]
    target = 1.5 * pi
    bound = 256e3 / prod
    allowed = 256e3 / target - prod
    must = 1 - allowed / rest if allowed > 0 else float("inf")
    print("| %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.1f | %.2fx | %.1f | %s | %s |"
          % (t, oi, pi, oi / pi, target, prod, bound, bound / pi, rest, "%.1f" % allowed if allowed > 0 else "none",
             "%.0f%%" % (100 * must) if allowed > 0 else "unreachable"))
