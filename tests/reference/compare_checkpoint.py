#!/usr/bin/python3
"""Independent inference check of a shiftvit checkpoint (issue 4, "Verification").

    /usr/bin/python3 tests/reference/compare_checkpoint.py CKPT IMAGE_OR_DIR...
    /usr/bin/python3 tests/reference/compare_checkpoint.py --self-check [CKPT IMAGE...]

Loads the checkpoint's /model tensors and its stored /config into the PyTorch
reference model of python/shiftvit/model.py (`forward`, written from SPEC.md,
not from the C code), applies the SPEC inference chain to each image itself and
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

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from shiftvit import checkpoint as ck  # noqa: E402
from shiftvit import model as ref  # noqa: E402
from shiftvit.transform import SMALL, decode_rgb, eval_transform, nearest_index, resize_nearest  # noqa: E402,F401


def load_checkpoint(path):
    """(cfg, params): the model config from the stored /config INI text and
    name -> float64 tensor for every /model dataset, shapes checked against
    the reference model's (shiftvit.checkpoint.read_checkpoint)."""
    cfg, params, _ = ck.read_checkpoint(path)
    return cfg, {k: torch.from_numpy(v.astype(np.float64)) for k, v in params.items()}


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
    except ck.CheckpointError as e:
        sys.stderr.write("compare_checkpoint: %s\n" % e)
        return 1
    K = cfg["num_classes"]
    names = ref.class_names(cfg)
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
