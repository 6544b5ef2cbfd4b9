#!/usr/bin/python3
"""Reference outputs for the bilinear resize and the evaluation transform.

Computes, with PyTorch's torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False) -- the semantics SPEC section 1 prescribes
(same as TensorFlow 2 tf.image.resize bilinear without antialiasing):

  images_u8   (3, 32, 32, 3) uint8    records 0..2 of test_batch.bin, NHWC
  labels      (3,)           uint8    their labels
  resize52    (3, 52, 52, 3) float32  images resized 32 -> 52 (0..255 units)
  eval48      (3, 48, 48, 3) float32  eval transform: 32 -> 52 -> 48, then / 255
  map_a_in    (7, 5, 2)      float32  random map (HWC), upscaled to odd sizes:
  map_a_out   (11, 13, 2)    float32    7x5 -> 11x13
  map_b_in    (13, 11, 2)    float32  random map (HWC), downscaled:
  map_b_out   (5, 4, 2)      float32    13x11 -> 5x4

The interpolation is done in float64 (no rounding between the two resizes of
the eval transform) and stored as float32, so the values are the exact
results to float32 precision. Written to tests/reference/resize_reference.h5
(gzip + shuffle, read by tests/test_data.c through the HDF5 C API).

Run from the repository root with Debian's Python (which has torch):
    /usr/bin/python3 tests/reference/make_resize_reference.py
Options: --data DIR (default ../shared/data/cifar-10-batches-bin), --out FILE.
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

RECORD = 3073
NIMG = 3


def resize_hwc(a, oh, ow):
    """Bilinear, half-pixel centres, no antialiasing; a: H x W x C float64."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    t = t.permute(2, 0, 1).unsqueeze(0)  # 1 x C x H x W
    r = F.interpolate(t, size=(oh, ow), mode="bilinear", align_corners=False,
                      antialias=False)
    return r.squeeze(0).permute(1, 2, 0).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar-10-batches-bin")
    ap.add_argument("--out", default="tests/reference/resize_reference.h5")
    args = ap.parse_args()

    path = os.path.join(args.data, "test_batch.bin")
    try:
        with open(path, "rb") as f:
            raw = f.read(NIMG * RECORD)
    except OSError as e:
        sys.exit(f"make_resize_reference: cannot read {path}: {e}")
    if len(raw) != NIMG * RECORD:
        sys.exit(f"make_resize_reference: {path} holds fewer than {NIMG} records")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(NIMG, RECORD)
    labels = rec[:, 0].copy()
    # planar R, G, B planes (each 32x32 row-major) -> NHWC
    images = rec[:, 1:].reshape(NIMG, 3, 32, 32).transpose(0, 2, 3, 1).copy()

    resize52 = np.stack([resize_hwc(im.astype(np.float64), 52, 52) for im in images])
    eval48 = np.stack([resize_hwc(r, 48, 48) for r in resize52]) / 255.0

    rng = np.random.default_rng(20240229)
    map_a = rng.uniform(-2.0, 3.0, size=(7, 5, 2)).astype(np.float32)
    map_b = rng.uniform(-2.0, 3.0, size=(13, 11, 2)).astype(np.float32)
    map_a_out = resize_hwc(map_a.astype(np.float64), 11, 13)
    map_b_out = resize_hwc(map_b.astype(np.float64), 5, 4)

    kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with h5py.File(args.out, "w") as h:
        h.attrs["generator"] = "tests/reference/make_resize_reference.py"
        h.attrs["torch_version"] = str(torch.__version__)
        h.attrs["method"] = ("torch.nn.functional.interpolate(mode='bilinear', "
                             "align_corners=False, antialias=False), float64")
        h.attrs["source"] = f"records 0..{NIMG - 1} of test_batch.bin"
        h.create_dataset("images_u8", data=images, **kw)
        h.create_dataset("labels", data=labels)
        h.create_dataset("resize52", data=resize52.astype(np.float32), **kw)
        h.create_dataset("eval48", data=eval48.astype(np.float32), **kw)
        h.create_dataset("map_a_in", data=map_a)
        h.create_dataset("map_a_out", data=map_a_out.astype(np.float32))
        h.create_dataset("map_b_in", data=map_b)
        h.create_dataset("map_b_out", data=map_b_out.astype(np.float32))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes); labels {labels.tolist()}")


if __name__ == "__main__":
    main()
