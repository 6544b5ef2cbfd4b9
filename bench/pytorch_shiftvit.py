#!/usr/bin/python3
"""PyTorch peer of `shiftvit bench`: the ShiftViT recipe of SPEC section 1,
timed the same way (training step = forward + loss + backward + AdamW, or the
inference forward with --eval), on synthetic images, for the issue-6 speed
comparison (scripts/bench.sh, `make bench`).

Run with Debian's interpreter, which has torch 1.13:

    /usr/bin/python3 bench/pytorch_shiftvit.py --threads 2 [--batch 256]
        [--steps 10] [--warmup 3] [--eval] [--json]

The model (python/shiftvit/model.py's ShiftViT, written for speed in eager
PyTorch, checked against that module's functional reference by --check):
- activations are NHWC tokens [N, H, W, C] (channels last), the layout every
  Linear / LayerNorm of the blocks wants; the input is the NHWC image batch
  [N, 48, 48, 3] like the C trainer's;
- patch projection (4x4 stride 4) and patch merging (LayerNorm, 2x2 stride 2,
  TF "same" padding, no bias) as patch reshape + nn.Linear by default
  (--patch conv / --merge conv: oneDNN conv2d on a channels-last tensor);
- shift blocks: shift (slices + zero pads + cat), nn.LayerNorm(eps 1e-5),
  Linear(C, 2C) + exact GELU + Dropout(0.2), Linear(2C, C) + Dropout(0.2),
  per-sample DropPath with rates linspace(0, 0.2, depth) in each stage,
  residual on the shifted x; head: mean over H, W + Linear(768, 10);
- loss: cross entropy; optimiser: torch.optim.AdamW (multi-tensor "foreach"
  path), beta 0.9/0.999, eps 1e-7, decoupled weight decay 1e-4 applied the
  TensorFlow-Addons way (w -= wd * w: the group's weight_decay is set to
  wd / lr every step), WarmUpCosine learning rate, grads set to None.
  (torch adds eps to sqrt(v_hat) instead of sqrt(v): same work.)
Training mode is on during the timed training steps, so dropout and drop
path draw their random masks like the C trainer does.

Environment ("--env best", the default: the peer at its best settings, see
/work/shared/MACHINE_NOTES.md): re-executes itself with
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736
if GLIBC_TUNABLES is not set (freed memory stays mapped, no page faults per
step), removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, and when the system
libblas.so.3 is BLIS on an AVX-512 CPU sets BLIS_ARCH_TYPE=0 (skx kernels)
unless the caller set it. "--env asis" leaves the environment alone.
OMP_NUM_THREADS and BLIS_NUM_THREADS are always set to --threads (BLIS reads
its thread count from the environment, not from torch.set_num_threads).
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736"
LIBBLAS = "/usr/lib/x86_64-linux-gnu/libblas.so.3"

RECIPE = dict(embed_dim=96, depths=(2, 4, 8, 2), mlp_ratio=2, num_div=12, shift_pixel=1,
              patch_size=4, dropout=0.2, drop_path=0.2, layer_norm_eps=1e-5,
              num_classes=10, image_size=48, lr_start=1e-5, lr_max=1e-3,
              warmup_fraction=0.15, weight_decay=1e-4, beta1=0.9, beta2=0.999,
              eps=1e-7, epochs=100, train_size=40000, batch_size=256)
RECIPE_NUM_PARAMS = 11690602


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="intra-op threads (torch.set_num_threads; OMP/BLIS env)")
    ap.add_argument("--batch", type=int, default=RECIPE["batch_size"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--eval", action="store_true", help="time the inference forward pass")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="bf16 (with --eval only): the model and the images cast to bfloat16 "
                         "(model.to(torch.bfloat16)); CPU autocast fails on this model in 1.13")
    ap.add_argument("--env", choices=("best", "asis"), default="best",
                    help="best: malloc tunables, no OPENBLAS_* overrides, BLIS skx (default)")
    ap.add_argument("--patch", choices=("linear", "conv"), default="linear",
                    help="patch projection as reshape+Linear or channels-last conv2d")
    ap.add_argument("--merge", choices=("linear", "conv"), default="linear",
                    help="patch merging as reshape+Linear or channels-last conv2d")
    ap.add_argument("--no-dropout", action="store_true",
                    help="dropout and drop path off (for a profile; not the recipe)")
    ap.add_argument("--profile", action="store_true",
                    help="print torch.autograd.profiler's table of one step (stderr)")
    ap.add_argument("--kernels", action="store_true",
                    help="with --eval: after the timed steps, --steps more under torch.profiler, "
                         "each op's self time summed per kind of kernel (patch gather/product, "
                         "shift, LayerNorm, fc1, GELU, fc2, residual, merge LayerNorm/gather/"
                         "product, pooling, classifier): profile_ms in the JSON")
    ap.add_argument("--check", action="store_true",
                    help="compare the module with the functional reference and exit")
    a = ap.parse_args(argv)
    if a.kernels and not a.eval:
        ap.error("--kernels is for --eval only")
    if a.threads < 1 or a.batch < 1 or a.steps < 1 or a.warmup < 0:
        ap.error("--threads, --batch and --steps must be >= 1, --warmup >= 0")
    return a


def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split()
    except OSError:
        pass
    return False


def setup_env(a):
    """Before torch is imported: the peer's best settings and thread counts."""
    if a.env == "best":
        if "GLIBC_TUNABLES" not in os.environ:
            # glibc reads its tunables only at process start: run again with them.
            os.environ["GLIBC_TUNABLES"] = TUNABLES
            os.execv(sys.executable, [sys.executable] + sys.argv)
        os.environ.pop("OPENBLAS_CORETYPE", None)
        os.environ.pop("OPENBLAS_L2_SIZE", None)
        if "blis" in os.path.realpath(LIBBLAS) and cpu_has("avx512f"):
            os.environ.setdefault("BLIS_ARCH_TYPE", "0")
    n = str(a.threads)
    os.environ["OMP_NUM_THREADS"] = n
    os.environ["BLIS_NUM_THREADS"] = n
    os.environ["OPENBLAS_NUM_THREADS"] = n
    os.environ["MKL_NUM_THREADS"] = n


ARGS = parse_args(sys.argv[1:])
setup_env(ARGS)

import torch  # noqa: E402  (after the environment is set)
import torch.nn.functional as F  # noqa: E402


# ---------------------------------------------------------------- model (NHWC)
# The nn.Module is python/shiftvit/model.py's ShiftViT, the same module the
# PyTorch export (scripts/export_torch.py) holds.

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from shiftvit.model import ShiftViT, keras_init  # noqa: E402


def warmup_cosine(step, cfg):
    total = int(cfg["train_size"] / cfg["batch_size"] * cfg["epochs"])
    warm = int(cfg["warmup_fraction"] * total)
    if step > total:
        return 0.0
    if step < warm:
        return cfg["lr_start"] + (cfg["lr_max"] - cfg["lr_start"]) / warm * step
    return 0.5 * cfg["lr_max"] * (1 + math.cos(math.pi * (step - warm) / (total - warm)))


# ---------------------------------------------------------------- check

def check(a):
    """Forward (eval, float64) of the module against the independent
    functional reference with the same random weights (both patch and merge
    modes), the shift and its backward, parameter count; drop rates."""
    from shiftvit import model as ref
    cfg = dict(RECIPE)
    n = sum(p.numel() for p in ShiftViT(cfg).parameters())
    assert n == RECIPE_NUM_PARAMS == ref.count_params(ref.RECIPE), n
    print("parameters: %d (SPEC 11,690,602): ok" % n)
    ref.check_module(ref.RECIPE)
    m = ShiftViT(cfg)
    rates = [[blk.drop_path.p for blk in st] for st in m.stages]
    print("drop path rates per stage:", [[round(r, 4) for r in st] for st in rates])
    assert abs(rates[2][1] - 0.2 / 7) < 1e-12 and rates[0] == [0.0, 0.2]
    # training mode: dropout and drop path change the output, eval does not
    x = torch.rand(8, 48, 48, 3)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
    print("training mode is stochastic, eval deterministic: ok")
    print("check passed")


# ---------------------------------------------------------------- bench

def blas_libraries():
    """Shared objects providing BLAS that this process has mapped."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(p)
            if any(s in base for s in ("blas", "blis", "mkl", "dnnl")):
                libs.add(p)
    return sorted(libs)


# The kinds of kernel of `shiftvit bench --eval --profile` (src/model/model.c),
# with PyTorch's shift and LayerNorm (one kernel in ours) and its merge
# LayerNorm and window gather (idem) as separate kinds.
KINDS = ("patch_gather", "patch_product", "shift", "layernorm", "fc1_product", "gelu", "fc2_product",
         "residual", "merge_layernorm", "merge_gather", "merge_product", "pool", "classifier_product",
         "other")
PRODUCTS = ("patch_product", "fc1_product", "fc2_product", "merge_product", "classifier_product")


def _kind(label, op):
    """Kind of an aten op from the innermost module region around it."""
    if label == "block":  # ShiftBlock.forward itself: the shift, GELU, residual add
        return {"aten::gelu": "gelu", "aten::add": "residual"}.get(op, "shift")
    if label is None:
        return "pool" if op == "aten::mean" else "other"
    return {"patch": "patch_gather", "patch.proj": "patch_product", "block.norm": "layernorm",
            "block.fc1": "fc1_product", "block.fc2": "fc2_product", "merge.norm": "merge_layernorm",
            "merge": "merge_gather", "merge.proj": "merge_product", "head": "classifier_product"}[label]


def kernel_profile(model, step, steps):
    """Mean ms per step of each kind (KINDS) over `steps` calls of step(),
    under torch.profiler: every op's self CPU time (the calling thread's wall
    time, the intra-op threads working inside it), attributed by the module
    region (record_function opened by forward hooks) it ran in. Time in no op
    (Python, hooks, the profiler) is "unattributed". Returns (dict, profiled
    step ms)."""
    from torch.profiler import ProfilerActivity, profile, record_function
    labels = {model.patch: "patch", model.patch.proj: "patch.proj", model.head: "head"}
    for stage in model.stages:
        for blk in stage:
            labels.update({blk: "block", blk.norm: "block.norm", blk.fc1: "block.fc1", blk.fc2: "block.fc2"})
    for mg in model.merges:
        labels.update({mg[0]: "merge.norm", mg[1]: "merge", mg[1].proj: "merge.proj"})
    open_regions, hooks = [], []
    for mod, name in labels.items():
        hooks.append(mod.register_forward_pre_hook(
            lambda m, i, n=name: open_regions.append(record_function("sv::" + n).__enter__())))
        hooks.append(mod.register_forward_hook(lambda m, i, o: open_regions.pop().__exit__(None, None, None)))
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - t0) / steps
    for h in hooks:
        h.remove()
    us = dict.fromkeys(KINDS, 0.0)
    for e in prof.events():
        if e.name.startswith("sv::"):
            continue
        p = e.cpu_parent
        while p is not None and not p.name.startswith("sv::"):
            p = p.cpu_parent
        us[_kind(p.name[4:] if p is not None else None, e.name)] += e.self_cpu_time_total
    ms = {k: v / 1e3 / steps for k, v in us.items()}
    ms["unattributed"] = 1e3 * wall - sum(ms.values())
    return ms, 1e3 * wall


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(a):
    if a.check:
        check(a)
        return 0
    if a.dtype == "bf16" and not a.eval:
        sys.exit("pytorch_shiftvit.py: --dtype bf16 is for --eval only (a bf16-cast model does not "
                 "train as mixed precision does)")
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(42)
    rss_import = peak_rss_mib()
    cfg = dict(RECIPE)
    if a.no_dropout:
        cfg["dropout"] = cfg["drop_path"] = 0.0
    model = ShiftViT(cfg, a.patch, a.merge)
    keras_init(model)
    S, K, n = cfg["image_size"], cfg["num_classes"], a.batch
    x = torch.rand(n, S, S, 3)
    if a.dtype == "bf16":
        model = model.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    labels = torch.arange(n) % K
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr_max"],
                            betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                            weight_decay=0.0, foreach=True)
    ph = [0.0, 0.0, 0.0]  # forward (+loss), backward, optimiser

    def train_step(step, acc):
        t0 = time.perf_counter()
        model.train()
        loss = F.cross_entropy(model(x), labels)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        lr = warmup_cosine(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
            g["weight_decay"] = cfg["weight_decay"] / lr if lr > 0 else 0.0  # w -= wd * w
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if acc:
            ph[0] += t1 - t0
            ph[1] += t2 - t1
            ph[2] += t3 - t2
        return t3 - t0

    def eval_step(step, acc):
        t0 = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            model(x)
        t1 = time.perf_counter()
        if acc:
            ph[0] += t1 - t0
        return t1 - t0

    fn = eval_step if a.eval else train_step
    for s in range(a.warmup):
        fn(s, False)
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            fn(a.warmup, False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30),
              file=sys.stderr)
    times, cpu = [], []
    for s in range(a.steps):
        c0 = time.process_time()
        times.append(fn(a.warmup + s, True))
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    prof_ms = None
    if a.kernels:
        prof_ms, prof_step_ms = kernel_profile(model, lambda: fn(0, False), a.steps)
    flop_img = 207.8e6 * (1 if a.eval else 3)
    res = {
        "impl": "pytorch" if a.dtype == "fp32" else "pytorch-bf16",
        "dtype": a.dtype,
        "mode": "eval" if a.eval else "train",
        "images_per_s": round(n / med, 2),
        "median_ms": round(1e3 * med, 3),
        "min_ms": round(1e3 * min(times), 3),
        "max_ms": round(1e3 * max(times), 3),
        "cpu_ms": round(1e3 * statistics.median(cpu), 3),  # process CPU time, all threads
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "threads": a.threads,
        "batch": n,
        "steps": a.steps,
        "warmup": a.warmup,
        "torch_version": torch.__version__,
        "gflops": round(n / med * flop_img / 1e9, 2),
        "forward_ms": round(1e3 * ph[0] / a.steps, 3),
        "backward_ms": round(1e3 * ph[1] / a.steps, 3),
        "optimizer_ms": round(1e3 * ph[2] / a.steps, 3),
        "rss_after_import_mib": round(rss_import, 1),
        "layout": "NHWC",
        "patch": a.patch,
        "merge": a.merge,
        "dropout": not a.no_dropout,
        "env": a.env,
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "BLIS_ARCH_TYPE": os.environ.get("BLIS_ARCH_TYPE"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "blas_libraries": blas_libraries(),
        "libblas_so_3": os.path.realpath(LIBBLAS),
    }
    if prof_ms is not None:
        res["profile_ms"] = {k: round(v, 3) for k, v in prof_ms.items()}
        res["profile_products_ms"] = round(sum(prof_ms[k] for k in PRODUCTS), 3)
        res["profile_other_ms"] = round(sum(v for k, v in prof_ms.items() if k not in PRODUCTS), 3)
        res["profiled_step_ms"] = round(prof_step_ms, 3)
    if a.json:
        print(json.dumps(res))
    else:
        print("PyTorch %s %s step (%s), batch %d, %d thread(s), %d steps after %d warm-up:"
              % (res["torch_version"], "inference" if a.eval else "training", a.dtype, n, a.threads,
                 a.steps, a.warmup))
        print("  step time   median %.1f ms, min %.1f, max %.1f"
              % (res["median_ms"], res["min_ms"], res["max_ms"]))
        print("  throughput  %.1f images/s, %.1f GFLOP/s" % (res["images_per_s"], res["gflops"]))
        print("  peak RSS    %.1f MiB (%.1f after import torch)" % (res["peak_rss_mib"], rss_import))
        print("  phases (mean ms): forward %.1f, backward %.1f, optimiser %.1f"
              % (res["forward_ms"], res["backward_ms"], res["optimizer_ms"]))
        print("  env: GLIBC_TUNABLES=%s BLIS_ARCH_TYPE=%s; BLAS: %s"
              % (res["GLIBC_TUNABLES"], res["BLIS_ARCH_TYPE"], ", ".join(res["blas_libraries"])))
        if prof_ms is not None:
            print("  kernels (mean ms per profiled step of %.1f ms):" % prof_step_ms)
            for k, v in prof_ms.items():
                print("    %-20s %8.2f%s" % (k, v, "  (product)" if k in PRODUCTS else ""))
        print("images_per_s=%.2f" % res["images_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
