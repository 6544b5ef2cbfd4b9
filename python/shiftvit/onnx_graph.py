"""The ShiftViT inference graph in ONNX, built with the onnx package's helper
(Debian python3-onnx) from a checkpoint's config and weights.

Standard operators only, opset 13 to 17 (default 17):
- input "image": [batch, S, S, 3] float32, NHWC, RGB in [0, 1] (pixel / 255)
  at the model's input size S = data.image_size -- the output of the
  evaluation transform (shiftvit.transform.eval_transform). With
  include_resize the input is the 32x32 image / 255 ([batch, 32, 32, 3]) and
  the graph starts with the transform's two bilinear resizes (32 -> R -> S,
  Resize linear, half_pixel: TF2 / PyTorch align_corners=False semantics);
- patch projection and patch merging: space-to-depth (Reshape, Transpose,
  Reshape) and MatMul with the Keras kernel reshaped to [k*k*cin, cout]
  (the same products as Conv2D kernel = stride = k); the merge's TF "same"
  padding (odd sides: one zero row/column at the bottom/right) is a Pad;
- the shift: Slice, Pad (zeros) and one Concat over the channel axis (a group
  shifted by at least the side is zeros: ConstantOfShape);
- LayerNorm: LayerNormalization at opset 17, else decomposed (ReduceMean, Sub,
  Mul, ReduceMean, Add, Sqrt, Div, Mul, Add);
- GELU exact: 0.5 x (1 + Erf(x / sqrt 2));
- head: ReduceMean over H, W, MatMul, Add -> output "logits" [batch, K]; a
  second output "probabilities" is Softmax(logits).
Dropout and drop path are identity (inference). Weights are initializers
named as the checkpoint's tensors (e.g. stage1/block0/mlp/fc1/kernel).
"""

import json
import math

import numpy as np

from shiftvit import model as svm

OPSET_MIN, OPSET_MAX, OPSET_DEFAULT = 13, 17, 17


class _Graph:
    def __init__(self, opset):
        from onnx import helper  # noqa: F401  (checked here: a clear ImportError early)

        self.opset = opset
        self.nodes, self.inits, self.count = [], [], 0
        self.consts = {}
        self.init_names = set()

    def init(self, name, array):
        """The initializer `name`; added once (a second forward branch, flip
        test-time augmentation, shares the weights)."""
        from onnx import numpy_helper

        if name not in self.init_names:
            self.init_names.add(name)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values, dtype=np.int64):
        a = np.asarray(values, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key not in self.consts:
            self.consts[key] = self.init("const_%d" % len(self.consts), a)
        return self.consts[key]

    def op(self, op_type, inputs, name_hint=None, **attrs):
        from onnx import helper

        self.count += 1
        out = "%s_%d" % (name_hint or op_type.lower(), self.count)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    # -------------------------------------------------- building blocks

    def slice(self, x, starts, ends, axes):
        return self.op("Slice", [x, self.const(starts), self.const(ends), self.const(axes)])

    def pad(self, x, begin, end):
        return self.op("Pad", [x, self.const(list(begin) + list(end))], mode="constant")

    def shifted(self, x, c0, c1, axis, side, p, at_end):
        """Channels [c0, c1) of x moved by p along axis (1 = H, 2 = W):
        at_end: out[i] = in[i + p], zeros at the end; else out[i] = in[i - p]."""
        grp = self.slice(x, [c0], [c1], [3])
        if p >= side:
            return self.op("ConstantOfShape", [self.op("Shape", [grp])],
                           value=_float_tensor(0.0))
        kept = self.slice(grp, [p] if at_end else [0], [side] if at_end else [side - p], [axis])
        begin, end = [0, 0, 0, 0], [0, 0, 0, 0]
        (end if at_end else begin)[axis] = p
        return self.pad(kept, begin, end)

    def shift(self, x, H, W, C, num_div, pixel):
        g = C // num_div
        if g == 0 or pixel == 0:
            return x
        pw, ph = min(pixel, W), min(pixel, H)
        parts = [self.shifted(x, 0, g, 2, W, pw, True),        # left: out[w] = x[w + p]
                 self.shifted(x, g, 2 * g, 2, W, pw, False),   # right: out[w] = x[w - p]
                 self.shifted(x, 2 * g, 3 * g, 1, H, ph, True),  # up: out[h] = x[h + p]
                 self.shifted(x, 3 * g, 4 * g, 1, H, ph, False)]  # down: out[h] = x[h - p]
        if 4 * g < C:
            parts.append(self.slice(x, [4 * g], [C], [3]))
        return self.op("Concat", parts, "shift", axis=3)

    def layer_norm(self, x, gamma, beta, eps):
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, gamma, beta], "layer_norm", axis=-1, epsilon=float(eps))
        mean = self.op("ReduceMean", [x], axes=[-1], keepdims=1)
        d = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Mul", [d, d])], axes=[-1], keepdims=1)
        den = self.op("Sqrt", [self.op("Add", [var, self.const(eps, np.float32)])])
        y = self.op("Mul", [self.op("Div", [d, den]), gamma])
        return self.op("Add", [y, beta], "layer_norm")

    def dense(self, x, kernel, bias=None):
        y = self.op("MatMul", [x, kernel])
        return self.op("Add", [y, bias]) if bias else y

    def gelu(self, x):
        e = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0), np.float32)])])
        y = self.op("Mul", [x, self.op("Add", [e, self.const(1.0, np.float32)])])
        return self.op("Mul", [y, self.const(0.5, np.float32)], "gelu")

    def patch_conv(self, x, H, W, C, k, kernel_name, kernel, bias=None):
        """Conv2D kernel = stride = k, TF "same" padding: pad, space-to-depth, MatMul."""
        ph, pw = -H % k, -W % k
        if ph or pw:
            x = self.pad(x, [0, ph // 2, pw // 2, 0], [0, ph - ph // 2, pw - pw // 2, 0])
            H, W = H + ph, W + pw
        Ho, Wo = H // k, W // k
        x = self.op("Reshape", [x, self.const([-1, Ho, k, Wo, k, C])])
        x = self.op("Transpose", [x], perm=[0, 1, 3, 2, 4, 5])
        x = self.op("Reshape", [x, self.const([-1, Ho, Wo, k * k * C])])
        w = self.init(kernel_name, kernel.reshape(k * k * C, kernel.shape[-1]))
        return self.dense(x, w, bias), Ho, Wo


def _float_tensor(v):
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [v])


def _resize_nhwc(g, x, side):
    """Bilinear resize of NHWC x to side x side (half-pixel centres, no antialiasing)."""
    nchw = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    nc = g.slice(g.op("Shape", [nchw]), [0], [2], [0])
    sizes = g.op("Concat", [nc, g.const([side, side])], axis=0)
    y = g.op("Resize", [nchw, "", "", sizes], "resize", mode="linear",
             coordinate_transformation_mode="half_pixel")
    return g.op("Transpose", [y], perm=[0, 2, 3, 1])


def _forward(g, cfg, p32, x):
    """Logits [batch, K] of input x [batch, S, S, 3] (one forward pass)."""
    S, p, eps = cfg["image_size"], cfg["patch_size"], cfg["layer_norm_eps"]
    C = svm.channels(cfg)
    h, H, W = g.patch_conv(x, S, S, 3, p, "patch_projection/kernel", p32["patch_projection/kernel"],
                           g.init("patch_projection/bias", p32["patch_projection/bias"]))
    for s in range(4):
        for b in range(cfg["depths"][s]):
            pre = "stage%d/block%d/" % (s + 1, b)
            w = {n: g.init(pre + n, p32[pre + n]) for n in
                 ("layer_norm/gamma", "layer_norm/beta", "mlp/fc1/kernel", "mlp/fc1/bias",
                  "mlp/fc2/kernel", "mlp/fc2/bias")}
            h = g.shift(h, H, W, C[s], cfg["num_div"], cfg["shift_pixel"])
            y = g.layer_norm(h, w["layer_norm/gamma"], w["layer_norm/beta"], eps)
            y = g.gelu(g.dense(y, w["mlp/fc1/kernel"], w["mlp/fc1/bias"]))
            y = g.dense(y, w["mlp/fc2/kernel"], w["mlp/fc2/bias"])
            h = g.op("Add", [h, y], "residual")
        if s < 3:
            pre = "stage%d/patch_merge/" % (s + 1)
            h = g.layer_norm(h, g.init(pre + "layer_norm/gamma", p32[pre + "layer_norm/gamma"]),
                             g.init(pre + "layer_norm/beta", p32[pre + "layer_norm/beta"]), eps)
            h, H, W = g.patch_conv(h, H, W, C[s], 2, pre + "reduction/kernel", p32[pre + "reduction/kernel"])
    pooled = g.op("ReduceMean", [h], "pool", axes=[1, 2], keepdims=0)
    logits = g.dense(pooled, g.init("classifier/kernel", p32["classifier/kernel"]),
                     g.init("classifier/bias", p32["classifier/bias"]))
    return logits


def build_model(cfg, params, meta=None, opset=OPSET_DEFAULT, include_resize=False, tta_flip=False):
    """onnx.ModelProto of the inference graph. cfg: shiftvit.model config dict;
    params: Keras name -> float32 array (shiftvit.checkpoint.read_checkpoint);
    meta: extra metadata_props (str -> str); tta_flip: the graph averages
    the logits of each image and of its mirror (train.tta_flip)."""
    from onnx import TensorProto, helper

    if not OPSET_MIN <= opset <= OPSET_MAX:
        raise ValueError("opset %d: this exporter writes opsets %d..%d" % (opset, OPSET_MIN, OPSET_MAX))
    g = _Graph(opset)
    S, K = cfg["image_size"], cfg["num_classes"]
    p32 = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    in_side = 32 if include_resize else S
    x = "image"
    if include_resize:
        for side in (cfg["resize_size"], S):
            if side != in_side:
                x = _resize_nhwc(g, x, side)
                in_side = side
    logits = _forward(g, cfg, p32, x)
    if tta_flip:
        # the mirror of every image (W is axis 2 of NHWC), through the same
        # weights; then 0.5 * (a + b), as shiftvit's evaluation computes it
        mirrored = g.op("Slice", [x, g.const([-1]), g.const([-(2 ** 63)]), g.const([2]), g.const([-1])],
                        "mirror")
        both = g.op("Add", [logits, _forward(g, cfg, p32, mirrored)], "tta_sum")
        logits = g.op("Mul", [both, g.const([0.5], np.float32)], "tta_mean")
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    g.nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="probabilities", axis=1))
    side = 32 if include_resize else S
    graph = helper.make_graph(
        g.nodes, "shiftvit",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", K]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", K])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="shiftvit scripts/export_onnx.py", producer_version="1")
    model.ir_version = 8  # the newest that ONNX 1.12 (Debian 12) and ONNX Runtime both read
    model.doc_string = ("ShiftViT image classifier. Input 'image': float32 [batch, %d, %d, 3], NHWC, RGB "
                        "in [0, 1] (pixel / 255)%s. Outputs: 'logits' and 'probabilities' [batch, %d]%s."
                        % (side, side, input_note(cfg, include_resize), K,
                           ", the mean of the logits of each image and its mirror (flip test-time "
                           "augmentation)" if tta_flip else ""))
    props = {"class_names": json.dumps(svm.class_names(cfg)),
             "input_name": "image", "input_layout": "NHWC", "input_size": str(side),
             "input_range": "float32 RGB in [0, 1] (pixel / 255)",
             "model_input_size": str(S), "resize_size": str(cfg["resize_size"]),
             "includes_resize": "true" if include_resize else "false",
             "tta_flip": "true" if tta_flip else "false",
             "preprocessing": input_note(cfg, include_resize).lstrip(", ")}
    props.update(meta or {})
    helper.set_model_props(model, props)
    return model


def input_note(cfg, include_resize):
    S, R = cfg["image_size"], cfg["resize_size"]
    if include_resize:
        return (", a 32x32 image (the graph resizes it bilinearly 32 -> %d -> %d, half-pixel centres, "
                "no antialiasing, as shiftvit's evaluation transform)" % (R, S))
    return (", at the model's input size: a 32x32 image resized bilinearly 32 -> %d -> %d (half-pixel "
            "centres, no antialiasing, as shiftvit's evaluation transform) before it enters" % (R, S))
