#!/usr/bin/python3
"""Independent inference check of a shiftvit checkpoint (issue 4, "Verification").

    /usr/bin/python3 tests/reference/compare_checkpoint.py CKPT IMAGE_OR_DIR...
    /usr/bin/python3 tests/reference/compare_checkpoint.py --self-check [CKPT IMAGE...]

Loads the checkpoint's /model tensors and its stored /config into the PyTorch
reference model of tests/reference/shiftvit_torch.py (written from SPEC.md, not
from the C code), applies the SPEC inference chain to each image itself and
prints one JSON object per image and line, in the order given (a directory
means its files in name order, hidden and .txt files skipped, as `shiftvit
predict` does):

    {"file": PATH, "probabilities": [p0, ...], "logits": [z0, ...],
     "top": [{"class": NAME, "confidence": p}, ...]}

The chain (SPEC section 1 "Inference" and "Evaluation / inference transform"),
computed in float64:
  1. decode with PIL to RGB uint8 (grayscale and palette expanded, alpha
     dropped, 16-bit grayscale scaled down by >> 8, as `predict` does);
  2. resize to 32x32 with nearest neighbour, TensorFlow 2 / PIL semantics
     (half-pixel centres): src = floor((dst + 0.5) * in / out), clamped to
     in - 1; this is `shiftvit predict`'s default (`--resize nearest`);
  3. bilinear 32 -> data.resize_size, then resize_size -> data.image_size, with
     torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
     antialias=False) (TF2 semantics, SPEC section 1);
  4. divide by 255; forward in inference mode (dropout, drop path identity);
     softmax.

--self-check first checks the nearest-neighbour convention against PIL's
NEAREST and TF2's float32 (x + 0.5) * scale and prints one line ending in "ok"
(then classifies the images, if any are given).

Note: JPEG decoders are not bit-exact (the JPEG standard allows IDCT
differences). `predict` decodes with libjpeg-turbo, as Debian's PIL does, and
gets the same pixels (results/image_decoding/README.md); under a PIL built on
another JPEG library, compare on lossless PNG files.

Run with Debian's /usr/bin/python3 (torch 1.13, numpy, h5py, PIL).
"""

import configparser
import json
import math
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shiftvit_torch as ref  # noqa: E402

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
RECIPE_RESIZE_SIZE = 52  # SPEC section 1: bilinear 32 -> 52 -> 48
SMALL = 32  # predict brings every photo to 32x32 first (SPEC section 1)


# ---------------------------------------------------------------- checkpoint

def load_checkpoint(path):
    """Returns (cfg, params): the reference config dict built from the stored
    /config INI text, and name -> float64 tensor for every /model dataset, with
    the shapes checked against the reference model's."""
    with h5py.File(path, "r") as f:
        if "config" not in f:
            raise ValueError("%s: no /config dataset" % path)
        text = f["config"][()]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        elif isinstance(text, np.ndarray):
            text = b"".join(bytes(t) for t in text.ravel()).decode("utf-8")
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as t:
            t.write(str(text))
            ini = t.name
        try:
            cfg = ref.load_config(ini)  # model keys and data.image_size
        finally:
            os.unlink(ini)
        # The reference model does not need data.resize_size; the transform does.
        cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
        cp.read_string(str(text))
        cfg["resize_size"] = (cp.getint("data", "resize_size")
                              if cp.has_option("data", "resize_size") else RECIPE_RESIZE_SIZE)
        shapes = ref.param_shapes(cfg)
        params = {}
        for name, shape in shapes.items():
            key = "model/" + name
            if key not in f:
                raise ValueError("%s: missing dataset /%s" % (path, key))
            a = f[key][()]
            if tuple(a.shape) != tuple(shape):
                raise ValueError("%s: /%s has shape %r, the reference model expects %r"
                                 % (path, key, tuple(a.shape), tuple(shape)))
            params[name] = torch.from_numpy(np.asarray(a, dtype=np.float64))
        extra = []
        f["model"].visit(lambda n: extra.append(n)
                         if isinstance(f["model"][n], h5py.Dataset) and n not in shapes else None)
        if extra:
            raise ValueError("%s: /model holds tensors the reference model lacks: %s"
                             % (path, ", ".join(sorted(extra))))
    return cfg, params


# ---------------------------------------------------------------- images

def decode_rgb(path):
    """uint8 array [H, W, 3]. Conversions as predict's (src/image.c):
    gray -> (g, g, g), alpha dropped (no compositing), 16-bit -> high byte."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            a = np.asarray(im).astype(np.int64)  # Pillow opens 16-bit grey PNG as I or I;16
            g = (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
            return np.repeat(g[:, :, None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def nearest_index(n_out, n_in):
    """Source index of each destination index, half-pixel centres:
    floor((dst + 0.5) * in / out) = floor((2 dst + 1) * in / (2 out)) in exact
    integer arithmetic, clamped to in - 1."""
    d = np.arange(n_out, dtype=np.int64)
    return np.minimum(((2 * d + 1) * n_in) // (2 * n_out), n_in - 1)


def resize_nearest(img, oh, ow):
    ih, iw = img.shape[:2]
    return img[nearest_index(oh, ih)][:, nearest_index(ow, iw)]


def eval_transform(small, resize_size, image_size):
    """32x32x3 uint8 -> [1, S, S, 3] float64: bilinear 32 -> R, R -> S
    (align_corners=False, no antialiasing), then / 255."""
    x = torch.from_numpy(small.astype(np.float64)).permute(2, 0, 1)[None]  # NCHW
    x = F.interpolate(x, size=(resize_size, resize_size), mode="bilinear",
                      align_corners=False, antialias=False)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                      align_corners=False, antialias=False)
    return (x / 255.0).permute(0, 2, 3, 1).contiguous()


# ---------------------------------------------------------------- main

def list_inputs(args):
    files = []
    for a in args:
        if os.path.isdir(a):
            names = sorted(n for n in os.listdir(a)
                           if not n.startswith(".") and not n.lower().endswith(".txt"))
            for n in names:
                p = a + ("" if a.endswith("/") else "/") + n
                if os.path.isfile(p):
                    files.append(p)
        else:
            files.append(a)
    return files


def classify(cfg, params, path):
    img = decode_rgb(path)
    small = resize_nearest(img, SMALL, SMALL)
    x = eval_transform(small, cfg["resize_size"], cfg["image_size"])
    with torch.no_grad():
        logits = ref.forward(params, x, cfg)[0]
        prob = torch.softmax(logits, dim=0)
    return logits.tolist(), prob.tolist()


def self_check():
    """The nearest convention against PIL's NEAREST and TF2's
    (x + 0.5) * scale in float32, on the sizes that matter and odd ones."""
    rng = np.random.default_rng(0)
    for (ih, iw) in [(128, 128), (75, 100), (33, 31), (32, 32), (7, 500), (500, 7), (1, 1), (640, 480)]:
        img = rng.integers(0, 256, size=(ih, iw, 3), dtype=np.uint8)
        ours = resize_nearest(img, SMALL, SMALL)
        pil = np.asarray(Image.fromarray(img).resize((SMALL, SMALL), Image.NEAREST))
        assert np.array_equal(ours, pil), "nearest differs from PIL for %dx%d" % (ih, iw)
        for n_in in (ih, iw):
            scale = np.float32(n_in) / np.float32(SMALL)
            tf = np.minimum(np.floor((np.arange(SMALL, dtype=np.float32) + np.float32(0.5)) * scale)
                            .astype(np.int64), n_in - 1)
            assert np.array_equal(tf, nearest_index(SMALL, n_in)), "nearest differs from TF2 for %d" % n_in
    assert nearest_index(SMALL, 128).tolist() == [4 * i + 2 for i in range(SMALL)]
    # bilinear: interpolate(align_corners=False) == the SPEC's src = (dst + 0.5) * in / out - 0.5
    x = rng.random((32, 32, 3))
    y = eval_transform((x * 255).astype(np.uint8), 20, 16)
    assert y.shape == (1, 16, 16, 3) and float(y.min()) >= 0 and float(y.max()) <= 1
    print("nearest 32x32 == PIL NEAREST == TF2 half-pixel nearest (128 -> 32 picks 4i + 2): ok")


def main(argv):
    if len(argv) >= 2 and argv[1] == "--self-check":
        self_check()
        argv = argv[:1] + argv[2:]
        if len(argv) == 1:
            return 0
    if len(argv) < 3 or argv[1].startswith("-"):
        sys.stderr.write("usage: %s [--self-check] CKPT IMAGE_OR_DIR...  |  %s --self-check\n"
                         % (argv[0], argv[0]))
        return 2
    torch.set_num_threads(1)
    try:
        cfg, params = load_checkpoint(argv[1])
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write("compare_checkpoint: %s: %s\n" % (argv[1], e))
        return 1
    K = cfg["num_classes"]
    names = CIFAR_CLASSES if K == 10 else ["class%d" % k for k in range(K)]
    failed = 0
    for path in list_inputs(argv[2:]):
        try:
            logits, prob = classify(cfg, params, path)
        except Exception as e:  # noqa: BLE001 - report per file and go on, like predict
            sys.stderr.write("compare_checkpoint: %s: %s\n" % (path, e))
            failed += 1
            continue
        order = sorted(range(K), key=lambda k: -prob[k])  # stable: ties keep class order
        top = [{"class": names[k], "confidence": prob[k]} for k in order[:3]]
        print(json.dumps({"file": path, "probabilities": prob, "logits": logits, "top": top}))
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
