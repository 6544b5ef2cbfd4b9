#!/usr/bin/python3
"""The ShiftViT model in PyTorch (SPEC sections 1-3), one importable module
for the bench (bench/pytorch_shiftvit.py), the tests (tests/reference/) and the
exporters (scripts/export_torch.py, scripts/export_onnx.py).

Two implementations of the same forward pass, kept apart on purpose:

- the functional reference `forward(params, x, cfg)`, written from
  /work/shared/SPEC.md and not from the C code (float64-friendly, slow, the
  shift spelled out with zero fill and slices): the independent reference the
  C model is tested against (tests/test_reference.c, test_predict_reference.c);
- `ShiftViT`, an `nn.Module` written for speed in eager PyTorch (NHWC tokens,
  patch projection and merging as space-to-depth + Linear, the shift as an
  autograd Function with its adjoint as backward): the bench's peer model and
  the module of a PyTorch export. `check_module()` compares it with the
  reference.

Semantics are NHWC: the input is [N, S, S, 3] float in [0, 1] (the output of
the evaluation transform, see shiftvit.transform). The checkpoint tensors carry
the Keras names and shapes the C model uses:

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

Dropout and drop path are identity in inference (eval mode / the reference).
Run with Debian's /usr/bin/python3 (torch 1.13).
`/usr/bin/python3 python/shiftvit/model.py` runs a self-check (shift on a hand
example, "same" padding, patch merging against a manual im2col, the recipe
parameter count 11,690,602, autograd of the shift against its adjoint, the
nn.Module against the reference).
"""

import math
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# SPEC section 1 recipe; used for keys a config does not set.
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
    "resize_size": 52,
    "dropout": 0.2,
    "drop_path": 0.2,
}
RECIPE_NUM_PARAMS = 11690602
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]

# [model] keys that shape the inference graph, and those that only matter in
# training. Any other [model] key names a model variant this module does not
# know: an error, not a silently wrong model. Unknown keys of other sections
# (data augmentation, training options added later) are ignored.
_MODEL_KEYS = {"embed_dim": int, "mlp_ratio": int, "num_div": int, "shift_pixel": int,
               "patch_size": int, "layer_norm_eps": float, "num_classes": int,
               "dropout": float, "drop_path": float}
_DATA_KEYS = {"image_size": int, "resize_size": int}


class ConfigError(ValueError):
    """A config this module cannot build a model from (message: one line)."""


def parse_ini(text):
    """{section: {key: value}} from INI text, leniently: ';' and '#' start a
    comment (whole line or after whitespace), values lose surrounding quotes,
    later duplicates win, lines that are not `key = value` are skipped."""
    out, section = {}, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and "]" in line:
            section = line[1:line.index("]")].strip().lower()
            out.setdefault(section, {})
            continue
        if "=" not in line:
            continue
        key, val = line.split("=", 1)
        for c in (" ;", " #", "\t;", "\t#"):
            if c in val:
                val = val[:val.index(c)]
        out.setdefault(section, {})[key.strip().lower()] = val.strip().strip('"')
    return out


def tta_flip_from_text(text):
    """The [train] tta_flip of a stored config (false when absent): whether
    shiftvit's evaluation averages the logits of each image and its mirror."""
    v = parse_ini(text).get("train", {}).get("tta_flip", "false").strip().lower()
    return v in ("true", "1", "yes")


def tta_translate_from_text(text):
    """The [train] tta_translate of a stored config (0 when absent or not a
    whole number): how many pixels shiftvit's evaluation moves the extra
    test-time views; 0 = none."""
    v = parse_ini(text).get("train", {}).get("tta_translate", "0").strip()
    return int(v) if v.isdigit() else 0


def config_from_text(text, source="config"):
    """Model dimensions from INI text ([model] keys, [data] image_size and
    resize_size); missing keys keep the recipe's values. Raises ConfigError
    (naming `source`) for an unknown [model] key or a bad value."""
    ini = parse_ini(text)
    cfg = dict(RECIPE)

    def conv(section, key, fn, val):
        try:
            return fn(val)
        except ValueError:
            raise ConfigError("%s: [%s] %s = %r is not a valid %s"
                              % (source, section, key, val, fn.__name__)) from None

    for key, val in ini.get("model", {}).items():
        if key == "depths":
            cfg["depths"] = tuple(conv("model", key, int, v)
                                  for v in val.replace(" ", "").split(",") if v)
        elif key in _MODEL_KEYS:
            cfg[key] = conv("model", key, _MODEL_KEYS[key], val)
        else:
            raise ConfigError("%s: unknown model variant: [model] %s = %s (this exporter knows "
                              "the keys depths, %s)" % (source, key, val, ", ".join(sorted(_MODEL_KEYS))))
    for key, fn in _DATA_KEYS.items():
        if key in ini.get("data", {}):
            cfg[key] = conv("data", key, fn, ini["data"][key])
    if len(cfg["depths"]) != 4 or min(cfg["depths"]) < 1:
        raise ConfigError("%s: model.depths must be 4 integers >= 1, got %r" % (source, cfg["depths"]))
    for key in ("embed_dim", "mlp_ratio", "num_div", "patch_size", "num_classes", "image_size",
                "resize_size"):
        if cfg[key] < 1:
            raise ConfigError("%s: %s must be >= 1, got %d" % (source, key, cfg[key]))
    if cfg["image_size"] % cfg["patch_size"]:
        raise ConfigError("%s: image_size %d not divisible by patch_size %d"
                          % (source, cfg["image_size"], cfg["patch_size"]))
    return cfg


def load_config(path=None):
    """config_from_text of an INI file; path None gives the recipe."""
    if path is None:
        return dict(RECIPE)
    with open(path) as f:
        return config_from_text(f.read(), path)


def class_names(cfg):
    K = cfg["num_classes"]
    return list(CIFAR_CLASSES) if K == 10 else ["class%d" % k for k in range(K)]


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


# ---------------------------------------------------------------- nn.Module (NHWC, for speed)

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


def _shift_cat(x, g, pixel):
    """The forward shift out of slices, zero pads and one concatenation (no
    in-place writes): what torch.onnx.export and torch.jit.trace can record."""
    H, W = x.shape[1], x.shape[2]
    pw, ph = min(pixel, W), min(pixel, H)

    def moved(grp, dim, p, at_end):
        n = grp.shape[dim]
        if p >= n:
            return torch.zeros_like(grp)
        kept = grp.narrow(dim, p, n - p) if at_end else grp.narrow(dim, 0, n - p)
        pad = [0, 0] * (3 - dim) + ([0, p] if at_end else [p, 0])  # F.pad: last dim first
        return F.pad(kept, pad)

    parts = [moved(x[..., 0:g], 2, pw, True), moved(x[..., g:2 * g], 2, pw, False),
             moved(x[..., 2 * g:3 * g], 1, ph, True), moved(x[..., 3 * g:4 * g], 1, ph, False),
             x[..., 4 * g:]]
    return torch.cat(parts, dim=3)


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


def module_shift(x, num_div, pixel):
    g = x.shape[-1] // num_div
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return _shift_cat(x, g, pixel)
    return Shift.apply(x, g, pixel)


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
        x = module_shift(x, self.num_div, self.pixel)
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

    def __init__(self, cin, cout, k, bias, mode="linear"):
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

    def keras_kernel(self):
        w = self.proj.weight.detach()
        if self.mode == "linear":
            cin = w.shape[1] // (self.k * self.k)
            return w.t().reshape(self.k, self.k, cin, w.shape[0])
        return w.permute(2, 3, 1, 0)


class ShiftViT(nn.Module):
    """The model as an nn.Module: input [N, S, S, 3] NHWC float in [0, 1],
    output logits [N, num_classes]. `cfg` is a dict as config_from_text
    returns. model.eval() for inference (dropout and drop path off)."""

    def __init__(self, cfg, patch_mode="linear", merge_mode="linear"):
        super().__init__()
        self.cfg = dict(cfg)
        C = channels(cfg)
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

    def _pairs(self):
        """(Keras name, module, attribute) for every tensor but the patch kernels."""
        out = [("patch_projection/bias", self.patch.proj, "bias")]
        for s in range(4):
            for b, blk in enumerate(self.stages[s]):
                pre = "stage%d/block%d/" % (s + 1, b)
                out += [(pre + "layer_norm/gamma", blk.norm, "weight"),
                        (pre + "layer_norm/beta", blk.norm, "bias"),
                        (pre + "mlp/fc1/kernel", blk.fc1, "weight"),
                        (pre + "mlp/fc1/bias", blk.fc1, "bias"),
                        (pre + "mlp/fc2/kernel", blk.fc2, "weight"),
                        (pre + "mlp/fc2/bias", blk.fc2, "bias")]
            if s < 3:
                pre = "stage%d/patch_merge/" % (s + 1)
                out += [(pre + "layer_norm/gamma", self.merges[s][0], "weight"),
                        (pre + "layer_norm/beta", self.merges[s][0], "bias")]
        out += [("classifier/kernel", self.head, "weight"), ("classifier/bias", self.head, "bias")]
        return out

    def load_keras_params(self, params):
        """Copies the Keras-named tensors (name -> tensor or array, the shapes
        of param_shapes) into the module; Dense kernels are transposed."""
        params = {k: torch.as_tensor(v) for k, v in params.items()}
        self.patch.load_keras(params["patch_projection/kernel"])
        for s in range(3):
            self.merges[s][1].load_keras(params["stage%d/patch_merge/reduction/kernel" % (s + 1)])
        with torch.no_grad():
            for name, mod, attr in self._pairs():
                t = params[name]
                getattr(mod, attr).copy_(t.t() if name.endswith("/kernel") else t)
        return self

    def keras_params(self):
        """The inverse of load_keras_params: OrderedDict name -> tensor."""
        got = {name: (getattr(mod, attr).detach().t() if name.endswith("/kernel")
                      else getattr(mod, attr).detach()) for name, mod, attr in self._pairs()}
        got["patch_projection/kernel"] = self.patch.keras_kernel()
        for s in range(3):
            got["stage%d/patch_merge/reduction/kernel" % (s + 1)] = self.merges[s][1].keras_kernel()
        return OrderedDict((name, got[name].contiguous()) for name in param_shapes(self.cfg))


def load_exported(path, map_location="cpu"):
    """(model, info) from a file of scripts/export_torch.py: the ShiftViT
    module with the exported weights, in eval mode, and the saved dict (config,
    class_names, input description) without the state dict."""
    blob = torch.load(path, map_location=map_location)
    if not isinstance(blob, dict) or blob.get("format") != "shiftvit-torch":
        raise ValueError("%s: not a file of scripts/export_torch.py" % path)
    model = ShiftViT(blob["config"])
    model.load_state_dict(blob["state_dict"])
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return model.eval(), info


def keras_init(model, seed=42):
    """Keras defaults: Glorot-uniform kernels (conv fan = k*k*c), zero biases,
    LayerNorm gamma 1 / beta 0 (nn.LayerNorm's own init)."""
    gen = torch.Generator().manual_seed(seed)
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


def check_module(cfg=None, verbose=True):
    """The nn.Module (both patch/merge modes, also its traceable shift) against
    the functional reference, float64, random weights."""
    cfg = dict(cfg or RECIPE)
    say = print if verbose else (lambda *a: None)
    n = sum(p.numel() for p in ShiftViT(cfg).parameters())
    assert n == count_params(cfg), (n, count_params(cfg))
    for (N, H, W, C, nd, px) in [(2, 5, 4, 26, 12, 1), (1, 3, 6, 24, 6, 2), (1, 2, 2, 13, 4, 3),
                                 (3, 2, 2, 768, 12, 1), (2, 12, 12, 96, 12, 1), (1, 1, 1, 24, 12, 1)]:
        x = torch.randn(N, H, W, C, dtype=torch.float64, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        d = torch.randn(N, H, W, C, dtype=torch.float64)
        y = module_shift(x, nd, px)
        assert torch.equal(y, shift(x2, nd, px)), "shift forward"
        assert torch.equal(_shift_cat(x.detach(), C // nd, px), y.detach()), "traceable shift"
        (y * d).sum().backward()
        (shift(x2, nd, px) * d).sum().backward()
        assert torch.equal(x.grad, x2.grad), "shift backward"
    say("module shift (forward, traceable forward, backward) == reference shift and its autograd: ok")
    for pm in ("linear", "conv"):
        for mm in ("linear", "conv"):
            gen = torch.Generator().manual_seed(3)
            params = random_params(cfg, gen, torch.float64)
            m = ShiftViT(cfg, pm, mm).double().eval().load_keras_params(params)
            back = m.keras_params()
            assert all(torch.equal(back[k], params[k]) for k in params), "keras_params round trip"
            x = torch.rand(4, cfg["image_size"], cfg["image_size"], 3, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                want = forward(params, x, cfg)
                got = m(x)
            err = (got - want).abs().max().item()
            assert err < 1e-9 * (1 + want.abs().max().item()), err
            say("module forward == reference (patch %s, merge %s): max |diff| %.2e: ok" % (pm, mm, err))


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

    # 7. the nn.Module against the reference (recipe, and a small model with 1x1 stages).
    check_module(RECIPE)
    check_module(dict(RECIPE, embed_dim=24, depths=(1, 1, 2, 1), image_size=16, resize_size=20))

    # 8. lenient config text: unknown keys of other sections ignored, unknown [model] keys refused.
    text = ("[data]\nimage_size = 32 ; side\nresize_size=36\ntranslate = 4\ncutout = 8\n"
            "[train]\ntta_flip = true\n[model]\ndepths = 1, 1,2,1\npatch_size = \"4\"\n")
    cfg = config_from_text(text)
    assert (cfg["image_size"], cfg["resize_size"], cfg["depths"], cfg["patch_size"]) == (32, 36, (1, 1, 2, 1), 4)
    for bad, why in [("[model]\nstem = conv3\n", "unknown model variant"), ("[model]\ndepths = 1,2\n", "depths"),
                     ("[data]\nimage_size = 30\n", "divisible"), ("[model]\nembed_dim = x\n", "valid int")]:
        try:
            config_from_text(bad, "f.h5")
            raise AssertionError("accepted: " + bad)
        except ConfigError as e:
            assert why in str(e) and str(e).startswith("f.h5: "), e
    print("config text: unknown [data]/[train] keys ignored, unknown [model] keys and bad values refused: ok")
    print("self-check passed")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        cfg = load_config(sys.argv[1])
        print(cfg, "params", count_params(cfg), "sides", sides(cfg))
    else:
        _self_check()
