#!/usr/bin/python3
"""PyTorch peer of `shiftvit bench`: the ShiftViT recipe of SPEC section 1,
timed the same way (training step = forward + loss + backward + AdamW, or the
inference forward with --eval), on synthetic images, for the issue-6 speed
comparison (scripts/bench.sh, `make bench`).

Run with Debian's interpreter, which has torch 1.13:

    /usr/bin/python3 bench/pytorch_shiftvit.py --threads 2 [--batch 256]
        [--steps 10] [--warmup 3] [--eval] [--json]

The model (written for speed in eager PyTorch, checked against the
independent reference tests/reference/shiftvit_torch.py by --check):
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
    ap.add_argument("--check", action="store_true",
                    help="compare with tests/reference/shiftvit_torch.py and exit")
    a = ap.parse_args(argv)
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
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ---------------------------------------------------------------- model (NHWC)

def _shift(x, g, pixel, reverse):
    """SPEC section 2 on x [N, H, W, C]: channel groups [0,g) left, [g,2g)
    right, [2g,3g) up, [3g,4g) down by `pixel` (vacated positions zero), the
    rest copied; reverse=True moves each group the opposite way (the adjoint,
    i.e. the backward pass). One read and one write of x."""
    N, H, W, C = x.shape
    pw, ph = min(pixel, W), min(pixel, H)
    out = torch.empty_like(x)
    lo, hi = (g, 0) if reverse else (0, g)  # channel start of the left / right groups
    up, dn = (3 * g, 2 * g) if reverse else (2 * g, 3 * g)
    out[:, :, :W - pw, lo:lo + g] = x[:, :, pw:, lo:lo + g]  # left: out[w] = x[w + p]
    out[:, :, W - pw:, lo:lo + g] = 0
    out[:, :, pw:, hi:hi + g] = x[:, :, :W - pw, hi:hi + g]  # right: out[w] = x[w - p]
    out[:, :, :pw, hi:hi + g] = 0
    out[:, :H - ph, :, up:up + g] = x[:, ph:, :, up:up + g]  # up: out[h] = x[h + p]
    out[:, H - ph:, :, up:up + g] = 0
    out[:, ph:, :, dn:dn + g] = x[:, :H - ph, :, dn:dn + g]  # down: out[h] = x[h - p]
    out[:, :ph, :, dn:dn + g] = 0
    out[..., 4 * g:] = x[..., 4 * g:]
    return out


class Shift(torch.autograd.Function):
    """The shift with its adjoint as the backward (one pass each way; autograd
    of slices + pads + cat would build a zero-filled full-size gradient per
    slice)."""

    @staticmethod
    def forward(ctx, x, g, pixel):
        ctx.g, ctx.pixel = g, pixel
        return _shift(x, g, pixel, False)

    @staticmethod
    def backward(ctx, dy):
        return _shift(dy.contiguous(), ctx.g, ctx.pixel, True), None, None


def shift(x, num_div, pixel):
    return Shift.apply(x, x.shape[-1] // num_div, pixel)


class DropPath(nn.Module):
    """Stochastic depth: per sample keep with k = 1 - p, kept samples / k."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, y):
        if not self.training or self.p == 0.0:
            return y
        k = 1.0 - self.p
        mask = torch.empty((y.shape[0],) + (1,) * (y.dim() - 1), dtype=y.dtype)
        return y * mask.bernoulli_(k).div_(k)


class ShiftBlock(nn.Module):
    def __init__(self, c, cfg, drop_path):
        super().__init__()
        self.num_div, self.pixel = cfg["num_div"], cfg["shift_pixel"]
        self.norm = nn.LayerNorm(c, eps=cfg["layer_norm_eps"])
        self.fc1 = nn.Linear(c, cfg["mlp_ratio"] * c)
        self.fc2 = nn.Linear(cfg["mlp_ratio"] * c, c)
        self.drop1 = nn.Dropout(cfg["dropout"])
        self.drop2 = nn.Dropout(cfg["dropout"])
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = shift(x, self.num_div, self.pixel)
        # 2-D [tokens, C] operands: nn.Linear then runs one addmm (bias in the
        # GEMM) instead of matmul + a separate bias pass for 4-D inputs.
        y = self.norm(x).reshape(-1, x.shape[-1])
        y = self.drop1(F.gelu(self.fc1(y)))
        y = self.drop2(self.fc2(y)).view(x.shape)
        return x + self.drop_path(y)


def space_to_depth(x, k):
    """[N, H, W, C] -> [N, H/k, W/k, k*k*C], features in Keras kernel order
    (kh, kw, cin); H and W multiples of k."""
    N, H, W, C = x.shape
    x = x.reshape(N, H // k, k, W // k, k, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(N, H // k, W // k, k * k * C)


def same_pad(x, k):
    """TF "same" padding for kernel = stride = k on NHWC (zeros bottom/right
    for k = 2; split top/bottom in general)."""
    H, W = x.shape[1], x.shape[2]
    ph, pw = -H % k, -W % k
    if ph or pw:
        x = F.pad(x, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


class PatchConv(nn.Module):
    """Conv2D kernel = stride = k, TF "same" padding, on NHWC tokens."""

    def __init__(self, cin, cout, k, bias, mode):
        super().__init__()
        self.k, self.mode = k, mode
        if mode == "linear":
            self.proj = nn.Linear(k * k * cin, cout, bias=bias)
        else:
            self.proj = nn.Conv2d(cin, cout, k, stride=k, bias=bias)

    def forward(self, x):
        x = same_pad(x, self.k)
        if self.mode == "linear":
            p = space_to_depth(x, self.k)
            return self.proj(p.reshape(-1, p.shape[-1])).view(p.shape[:-1] + (-1,))
        # NHWC storage viewed as a channels-last NCHW tensor: no copy.
        y = self.proj(x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
        return y.permute(0, 2, 3, 1)

    def load_keras(self, kernel):
        """kernel [k, k, cin, cout] (Keras layout)."""
        with torch.no_grad():
            if self.mode == "linear":
                self.proj.weight.copy_(kernel.reshape(-1, kernel.shape[-1]).t())
            else:
                self.proj.weight.copy_(kernel.permute(3, 2, 0, 1))


class ShiftViT(nn.Module):
    def __init__(self, cfg, patch_mode="linear", merge_mode="linear"):
        super().__init__()
        C = [cfg["embed_dim"] * 2 ** s for s in range(4)]
        self.patch = PatchConv(3, C[0], cfg["patch_size"], True, patch_mode)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s in range(4):
            d = cfg["depths"][s]
            rates = [cfg["drop_path"] * i / (d - 1) if d > 1 else 0.0 for i in range(d)]
            self.stages.append(nn.Sequential(*[ShiftBlock(C[s], cfg, r) for r in rates]))
            if s < 3:
                self.merges.append(nn.Sequential(
                    nn.LayerNorm(C[s], eps=cfg["layer_norm_eps"]),
                    PatchConv(C[s], 2 * C[s], 2, False, merge_mode)))
        self.head = nn.Linear(C[3], cfg["num_classes"])

    def forward(self, x):  # x [N, H, W, 3]
        h = self.patch(x)
        for s in range(4):
            h = self.stages[s](h)
            if s < 3:
                h = self.merges[s](h)
        return self.head(h.mean(dim=(1, 2)))


def keras_init(model):
    """Keras defaults: Glorot-uniform kernels (conv fan = k*k*c), zero biases,
    LayerNorm gamma 1 / beta 0 (nn.LayerNorm's own init)."""
    gen = torch.Generator().manual_seed(42)
    conv_k = {id(m.proj): m.k for m in model.modules() if isinstance(m, PatchConv)}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = m.weight
                fan_in = w[0].numel()
                fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
                if isinstance(m, nn.Linear) and id(m) in conv_k:  # Keras conv fans
                    fan_out = w.shape[0] * conv_k[id(m)] ** 2
                lim = math.sqrt(6.0 / (fan_in + fan_out))
                w.copy_(torch.rand(w.shape, generator=gen) * 2 * lim - lim)
                if m.bias is not None:
                    m.bias.zero_()


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
    """Forward (eval, float64) against the independent reference model with
    the same random weights; parameter count; drop rates."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "tests", "reference"))
    import shiftvit_torch as ref
    cfg = dict(RECIPE)
    n = sum(p.numel() for p in ShiftViT(cfg).parameters())
    assert n == RECIPE_NUM_PARAMS == ref.count_params(ref.RECIPE), n
    print("parameters: %d (SPEC 11,690,602): ok" % n)
    for (N, H, W, C, nd, px) in [(2, 5, 4, 26, 12, 1), (1, 3, 6, 24, 6, 2), (1, 2, 2, 13, 4, 3),
                                 (3, 2, 2, 768, 12, 1), (2, 12, 12, 96, 12, 1)]:
        x = torch.randn(N, H, W, C, dtype=torch.float64, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        d = torch.randn(N, H, W, C, dtype=torch.float64)
        y = shift(x, nd, px)
        assert torch.equal(y, ref.shift(x2, nd, px)), "shift forward"
        (y * d).sum().backward()
        (ref.shift(x2, nd, px) * d).sum().backward()
        assert torch.equal(x.grad, x2.grad), "shift backward"
    print("shift forward and backward == reference shift and its autograd: ok")
    for pm in ("linear", "conv"):
        for mm in ("linear", "conv"):
            gen = torch.Generator().manual_seed(3)
            params = ref.random_params(ref.RECIPE, gen, torch.float64)
            m = ShiftViT(cfg, pm, mm).double().eval()
            m.patch.load_keras(params["patch_projection/kernel"])
            with torch.no_grad():
                m.patch.proj.bias.copy_(params["patch_projection/bias"])
                for s in range(4):
                    for b, blk in enumerate(m.stages[s]):
                        pre = "stage%d/block%d/" % (s + 1, b)
                        blk.norm.weight.copy_(params[pre + "layer_norm/gamma"])
                        blk.norm.bias.copy_(params[pre + "layer_norm/beta"])
                        blk.fc1.weight.copy_(params[pre + "mlp/fc1/kernel"].t())
                        blk.fc1.bias.copy_(params[pre + "mlp/fc1/bias"])
                        blk.fc2.weight.copy_(params[pre + "mlp/fc2/kernel"].t())
                        blk.fc2.bias.copy_(params[pre + "mlp/fc2/bias"])
                    if s < 3:
                        pre = "stage%d/patch_merge/" % (s + 1)
                        m.merges[s][0].weight.copy_(params[pre + "layer_norm/gamma"])
                        m.merges[s][0].bias.copy_(params[pre + "layer_norm/beta"])
                        m.merges[s][1].load_keras(params[pre + "reduction/kernel"])
                m.head.weight.copy_(params["classifier/kernel"].t())
                m.head.bias.copy_(params["classifier/bias"])
                x = torch.rand(4, 48, 48, 3, generator=gen, dtype=torch.float64)
                want = ref.forward(params, x, ref.RECIPE)
                got = m(x)
            err = (got - want).abs().max().item()
            assert err < 1e-9 * (1 + want.abs().max().item()), err
            print("forward == reference (patch %s, merge %s): max |diff| %.2e: ok" % (pm, mm, err))
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
        print("images_per_s=%.2f" % res["images_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
