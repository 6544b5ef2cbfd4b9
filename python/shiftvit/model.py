#!/usr/bin/python3
"""Independent PyTorch reference of the ShiftViT model (SPEC sections 1-3).

Written from /work/shared/SPEC.md, not from the C code. Semantics are NHWC and
the parameters carry the Keras names and shapes the C model uses, so a
reference file written from this model can be loaded into the C model tensor
by tensor:

    patch_projection/kernel            [p, p, 3, C0]      Conv2D, Keras layout
    patch_projection/bias              [C0]
    stage{s}/block{b}/layer_norm/gamma [C]                s = 1..4
    stage{s}/block{b}/layer_norm/beta  [C]
    stage{s}/block{b}/mlp/fc1/kernel   [C, r*C]           Dense: y = x @ kernel + bias
    stage{s}/block{b}/mlp/fc1/bias     [r*C]
    stage{s}/block{b}/mlp/fc2/kernel   [r*C, C]
    stage{s}/block{b}/mlp/fc2/bias     [C]
    stage{s}/patch_merge/layer_norm/gamma [C]             s = 1..3
    stage{s}/patch_merge/layer_norm/beta  [C]
    stage{s}/patch_merge/reduction/kernel [2, 2, C, 2C]   no bias
    classifier/kernel                  [C_last, K]
    classifier/bias                    [K]

Dropout and drop path are identity here (the reference is the inference /
zero-rate computation). Run with Debian's /usr/bin/python3 (torch 1.13).

`/usr/bin/python3 tests/reference/shiftvit_torch.py` runs a self-check (shift on
a hand example, "same" padding, patch merging against a manual im2col, the
recipe parameter count 11,690,602, autograd of the shift against its adjoint).
"""

import configparser
import math
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

# SPEC section 1 recipe; used for keys a config file does not set.
RECIPE = {
    "embed_dim": 96,
    "depths": (2, 4, 8, 2),
    "mlp_ratio": 2,
    "num_div": 12,
    "shift_pixel": 1,
    "patch_size": 4,
    "layer_norm_eps": 1e-5,
    "num_classes": 10,
    "image_size": 48,
}
RECIPE_NUM_PARAMS = 11690602


def load_config(path=None):
    """Model dimensions from an INI file ([model] keys and [data] image_size);
    missing keys (or path None) fall back to the recipe."""
    cfg = dict(RECIPE)
    if path is None:
        return cfg
    cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    with open(path) as f:
        cp.read_file(f)

    def get(section, key, conv):
        if cp.has_section(section) and cp.has_option(section, key):
            return conv(cp.get(section, key).strip().strip('"'))
        return cfg[key]

    cfg["embed_dim"] = get("model", "embed_dim", int)
    cfg["depths"] = get("model", "depths",
                        lambda s: tuple(int(v) for v in s.replace(" ", "").split(",") if v))
    cfg["mlp_ratio"] = get("model", "mlp_ratio", int)
    cfg["num_div"] = get("model", "num_div", int)
    cfg["shift_pixel"] = get("model", "shift_pixel", int)
    cfg["patch_size"] = get("model", "patch_size", int)
    cfg["layer_norm_eps"] = get("model", "layer_norm_eps", float)
    cfg["num_classes"] = get("model", "num_classes", int)
    cfg["image_size"] = get("data", "image_size", int)
    if len(cfg["depths"]) != 4:
        raise ValueError("%s: model.depths must have 4 entries, got %r" % (path, cfg["depths"]))
    if cfg["image_size"] % cfg["patch_size"]:
        raise ValueError("%s: image_size %d not divisible by patch_size %d"
                         % (path, cfg["image_size"], cfg["patch_size"]))
    return cfg


def channels(cfg):
    return [cfg["embed_dim"] * 2 ** s for s in range(4)]


def sides(cfg):
    h = cfg["image_size"] // cfg["patch_size"]
    out = []
    for _ in range(4):
        out.append(h)
        h = (h + 1) // 2  # ceil: TF "same" padding of the 2x2 stride-2 merge
    return out


def param_shapes(cfg):
    """OrderedDict name -> Keras shape, in forward order."""
    p, r, K = cfg["patch_size"], cfg["mlp_ratio"], cfg["num_classes"]
    C = channels(cfg)
    shapes = OrderedDict()
    shapes["patch_projection/kernel"] = (p, p, 3, C[0])
    shapes["patch_projection/bias"] = (C[0],)
    for s in range(4):
        c = C[s]
        for b in range(cfg["depths"][s]):
            pre = "stage%d/block%d/" % (s + 1, b)
            shapes[pre + "layer_norm/gamma"] = (c,)
            shapes[pre + "layer_norm/beta"] = (c,)
            shapes[pre + "mlp/fc1/kernel"] = (c, r * c)
            shapes[pre + "mlp/fc1/bias"] = (r * c,)
            shapes[pre + "mlp/fc2/kernel"] = (r * c, c)
            shapes[pre + "mlp/fc2/bias"] = (c,)
        if s < 3:
            pre = "stage%d/patch_merge/" % (s + 1)
            shapes[pre + "layer_norm/gamma"] = (c,)
            shapes[pre + "layer_norm/beta"] = (c,)
            shapes[pre + "reduction/kernel"] = (2, 2, c, 2 * c)
    shapes["classifier/kernel"] = (C[3], K)
    shapes["classifier/bias"] = (K,)
    return shapes


def count_params(cfg):
    return sum(math.prod(s) for s in param_shapes(cfg).values())


# ---------------------------------------------------------------- layers (NHWC)

def shift(x, num_div, pixel):
    """SPEC section 2 on x [N, H, W, C]: g = C // num_div; [0,g) left
    (out[w] = in[w+pixel]), [g,2g) right (out[w] = in[w-pixel]), [2g,3g) up
    (out[h] = in[h+pixel]), [3g,4g) down (out[h] = in[h-pixel]); vacated
    positions are zero, the remaining channels are copied."""
    N, H, W, C = x.shape
    g = C // num_div
    out = torch.zeros_like(x)
    pw, ph = min(pixel, W), min(pixel, H)
    # left: out[:, :, w] = x[:, :, w + p] for w < W - p
    out[:, :, :W - pw, 0:g] = x[:, :, pw:, 0:g]
    # right: out[:, :, w] = x[:, :, w - p] for w >= p
    out[:, :, pw:, g:2 * g] = x[:, :, :W - pw, g:2 * g]
    # up: out[:, h] = x[:, h + p] for h < H - p
    out[:, :H - ph, :, 2 * g:3 * g] = x[:, ph:, :, 2 * g:3 * g]
    # down: out[:, h] = x[:, h - p] for h >= p
    out[:, ph:, :, 3 * g:4 * g] = x[:, :H - ph, :, 3 * g:4 * g]
    out[..., 4 * g:] = x[..., 4 * g:]
    return out


def layer_norm(x, gamma, beta, eps):
    """Keras LayerNormalization over the last axis (biased variance)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * gamma + beta


def gelu(x):
    """Exact GELU: 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def dense(x, kernel, bias=None):
    y = x @ kernel
    return y + bias if bias is not None else y


def conv_k_stride_k_same(x, kernel, bias=None):
    """Conv2D kernel = stride = k with TF "same" padding, x NHWC, Keras kernel
    [k][k][cin][cout]. For kernel == stride, TF pads total = ceil(H/k)*k - H
    rows, top = total // 2, bottom = the rest (for k = 2: one row at the
    bottom only)."""
    k = kernel.shape[0]
    N, H, W, C = x.shape
    Ho, Wo = -(-H // k), -(-W // k)
    ph, pw = Ho * k - H, Wo * k - W
    xn = x.permute(0, 3, 1, 2)  # NCHW
    # F.pad order for the last two dims: (left, right, top, bottom)
    xn = F.pad(xn, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    w = kernel.permute(3, 2, 0, 1)  # [cout][cin][kh][kw]
    y = F.conv2d(xn, w, bias, stride=k)
    assert y.shape[2] == Ho and y.shape[3] == Wo
    return y.permute(0, 2, 3, 1)


def forward(params, x, cfg):
    """Logits [N, K] for images x [N, H, W, 3] (NHWC). params: name -> tensor
    with the Keras shapes of param_shapes. Dropout / drop path: identity."""
    eps = cfg["layer_norm_eps"]
    h = conv_k_stride_k_same(x, params["patch_projection/kernel"],
                             params["patch_projection/bias"])
    for s in range(4):
        for b in range(cfg["depths"][s]):
            pre = "stage%d/block%d/" % (s + 1, b)
            h = shift(h, cfg["num_div"], cfg["shift_pixel"])
            y = layer_norm(h, params[pre + "layer_norm/gamma"],
                           params[pre + "layer_norm/beta"], eps)
            y = gelu(dense(y, params[pre + "mlp/fc1/kernel"], params[pre + "mlp/fc1/bias"]))
            y = dense(y, params[pre + "mlp/fc2/kernel"], params[pre + "mlp/fc2/bias"])
            h = h + y  # residual adds the shifted x
        if s < 3:
            pre = "stage%d/patch_merge/" % (s + 1)
            h = layer_norm(h, params[pre + "layer_norm/gamma"],
                           params[pre + "layer_norm/beta"], eps)
            h = conv_k_stride_k_same(h, params[pre + "reduction/kernel"])
    pooled = h.mean(dim=(1, 2))
    return dense(pooled, params["classifier/kernel"], params["classifier/bias"])


def loss_fn(logits, labels):
    """Mean softmax cross-entropy over the batch."""
    return F.cross_entropy(logits, labels.long(), reduction="mean")


def random_params(cfg, gen, dtype=torch.float64):
    """Random (non-Keras) weights that make every parameter matter: kernels
    uniform(-0.5, 0.5) * 2 sqrt(3 / fan_in) (unit-variance preserving),
    LayerNorm gamma 1 + 0.2 u, beta 0.2 u, biases 0.2 u, u uniform(-0.5, 0.5)."""
    params = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        u = torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5
        if name.endswith("/kernel"):
            fan_in = math.prod(shape[:-1])
            t = u * 2.0 * math.sqrt(3.0 / fan_in)
        elif name.endswith("/gamma"):
            t = 1.0 + 0.2 * u
        else:
            t = 0.2 * u
        params[name] = t.to(dtype)
    return params


# ---------------------------------------------------------------- self-check

def _self_check():
    torch.manual_seed(0)
    # 1. shift on a hand example: 1 x 3 x 3 x 12, num_div 12 -> g = 1.
    x = torch.arange(1, 1 + 3 * 3 * 12, dtype=torch.float64).reshape(1, 3, 3, 12)
    y = shift(x, 12, 1)
    m = lambda t, c: t[0, :, :, c]
    a = m(x, 0)
    assert torch.equal(m(y, 0), torch.stack([a[:, 1], a[:, 2], torch.zeros(3, dtype=a.dtype)], 1)), "left"
    a = m(x, 1)
    assert torch.equal(m(y, 1), torch.stack([torch.zeros(3, dtype=a.dtype), a[:, 0], a[:, 1]], 1)), "right"
    a = m(x, 2)
    assert torch.equal(m(y, 2), torch.stack([a[1], a[2], torch.zeros(3, dtype=a.dtype)], 0)), "up"
    a = m(x, 3)
    assert torch.equal(m(y, 3), torch.stack([torch.zeros(3, dtype=a.dtype), a[0], a[1]], 0)), "down"
    assert torch.equal(y[..., 4:], x[..., 4:]), "copy"
    # literal values for channel 0 (left): row 0 of channel 0 is 1, 13, 25
    assert y[0, 0, :, 0].tolist() == [13.0, 25.0, 0.0]
    # channel 3 (down) at column 0: x[0, h, 0, 3] = 4 + 36 h -> [0, 4, 40]
    assert y[0, :, 0, 3].tolist() == [0.0, 4.0, 40.0]
    # channel 2 (up) at column 0 -> [39, 75, 0]; channel 1 (right) row 0 -> [0, 2, 14]
    assert y[0, :, 0, 2].tolist() == [39.0, 75.0, 0.0]
    assert y[0, 0, :, 1].tolist() == [0.0, 2.0, 14.0]
    # explicit per-element definition, several pixels / sizes, C not a multiple of num_div
    for (N, H, W, C, nd, px) in [(2, 5, 4, 26, 12, 1), (1, 3, 6, 24, 6, 2), (1, 2, 2, 13, 4, 3)]:
        x = torch.randn(N, H, W, C, dtype=torch.float64)
        y = shift(x, nd, px)
        g = C // nd
        ref = torch.zeros_like(x)
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    if c < g:
                        sh, sw = h, w + px
                    elif c < 2 * g:
                        sh, sw = h, w - px
                    elif c < 3 * g:
                        sh, sw = h + px, w
                    elif c < 4 * g:
                        sh, sw = h - px, w
                    else:
                        sh, sw = h, w
                    if 0 <= sh < H and 0 <= sw < W:
                        ref[:, h, w, c] = x[:, sh, sw, c]
        assert torch.equal(y, ref), "shift element-wise %r" % ((N, H, W, C, nd, px),)
        # backward = opposite shift of the gradient (adjoint: <S x, d> = <x, S^T d>)
        xr = x.clone().requires_grad_(True)
        d = torch.randn_like(x)
        (shift(xr, nd, px) * d).sum().backward()
        # opposite shift: swap left<->right and up<->down by permuting groups
        perm = list(range(C))
        for c in range(g):
            perm[c], perm[g + c] = g + c, c
            perm[2 * g + c], perm[3 * g + c] = 3 * g + c, 2 * g + c
        opp = shift(d[..., perm], nd, px)[..., perm]
        assert torch.allclose(xr.grad, opp), "shift backward"
    print("shift: hand example, element-wise definition, backward = opposite shift: ok")

    # 2. "same" padding of the 2x2 stride-2 merge: 3x3 -> 2x2, pad bottom/right only.
    x = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    k = torch.randn(2, 2, 5, 7, dtype=torch.float64)
    y = conv_k_stride_k_same(x, k)
    assert y.shape == (2, 2, 2, 7)
    # output (1,1) only sees input (2,2) (the rest is padding): y = x[2,2] @ k[0,0]
    assert torch.allclose(y[:, 1, 1], x[:, 2, 2] @ k[0, 0])
    assert torch.allclose(y[:, 0, 1], x[:, 0, 2] @ k[0, 0] + x[:, 1, 2] @ k[1, 0])
    assert torch.allclose(y[:, 1, 0], x[:, 2, 0] @ k[0, 0] + x[:, 2, 1] @ k[0, 1])
    print("same padding 3x3 -> 2x2 (bottom/right only): ok")

    # 3. merge / patch conv against a manual im2col + GEMM with the Keras kernel.
    for (N, H, W, C, Co, kk) in [(2, 6, 6, 4, 8, 2), (3, 5, 3, 3, 6, 2), (2, 8, 8, 3, 5, 4), (1, 1, 1, 4, 8, 2)]:
        x = torch.randn(N, H, W, C, dtype=torch.float64)
        k = torch.randn(kk, kk, C, Co, dtype=torch.float64)
        b = torch.randn(Co, dtype=torch.float64)
        y = conv_k_stride_k_same(x, k, b)
        Ho, Wo = -(-H // kk), -(-W // kk)
        cols = torch.zeros(N, Ho, Wo, kk * kk * C, dtype=torch.float64)
        for i in range(Ho):
            for j in range(Wo):
                for a in range(kk):
                    for bb in range(kk):
                        yy, xx = i * kk + a, j * kk + bb
                        if yy < H and xx < W:
                            cols[:, i, j, (a * kk + bb) * C:(a * kk + bb + 1) * C] = x[:, yy, xx]
        ref = cols.reshape(-1, kk * kk * C) @ k.reshape(kk * kk * C, Co) + b
        assert torch.allclose(y.reshape(-1, Co), ref), "im2col %r" % ((N, H, W, C, Co, kk),)
    print("Conv2D k=stride=k (patch projection, merge) == im2col GEMM with the Keras kernel: ok")

    # 4. LayerNorm and GELU against torch's own.
    x = torch.randn(7, 10, dtype=torch.float64) * 3 + 1
    gm, bt = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    assert torch.allclose(layer_norm(x, gm, bt, 1e-5), F.layer_norm(x, (10,), gm, bt, 1e-5))
    assert torch.allclose(gelu(x), F.gelu(x))
    print("layer_norm == F.layer_norm, gelu == F.gelu (exact): ok")

    # 5. parameter counts.
    n = count_params(RECIPE)
    assert n == RECIPE_NUM_PARAMS, n
    print("recipe parameters: %d (SPEC: 11,690,602): ok" % n)
    tiny = dict(RECIPE, embed_dim=24, depths=(1, 1, 2, 1), image_size=16)
    print("tiny parameters: %d, sides %r" % (count_params(tiny), sides(tiny)))
    print("recipe sides %r, channels %r" % (sides(RECIPE), channels(RECIPE)))
    assert sides(RECIPE) == [12, 6, 3, 2]

    # 6. forward shapes + finite-difference gradient spot check on a tiny model.
    gen = torch.Generator().manual_seed(1)
    cfg = dict(RECIPE, embed_dim=12, depths=(1, 1, 1, 1), image_size=12, patch_size=2,
               num_div=6)  # num_div 4 would shift all channels out of the 1x1 stage 4
    params = random_params(cfg, gen)
    for p in params.values():
        p.requires_grad_(True)
    x = torch.rand(2, 12, 12, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([3, 7])
    loss = loss_fn(forward(params, x, cfg), labels)
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        idx = tuple(int(i) for i in torch.randint(0, 1 << 30, (p.dim(),), generator=gen) % torch.tensor(p.shape))
        h = 1e-6
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + h
            lp = loss_fn(forward(params, x, cfg), labels).item()
            p[idx] = old - h
            lm = loss_fn(forward(params, x, cfg), labels).item()
            p[idx] = old
        fd = (lp - lm) / (2 * h)
        assert abs(fd - g[idx].item()) <= 1e-6 + 1e-5 * abs(fd), (name, fd, g[idx].item())
        assert g.abs().max() > 0, "zero gradient for " + name
    print("autograd == finite differences on one element of each of %d tensors: ok" % len(params))
    print("self-check passed")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        cfg = load_config(sys.argv[1])
        print(cfg, "params", count_params(cfg), "sides", sides(cfg))
    else:
        _self_check()
