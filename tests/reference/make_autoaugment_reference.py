#!/usr/bin/python3
"""Reference outputs for the TrivialAugment / RandAugment operations
(src/io/autoaugment.c), computed with PIL and torchvision 0.14 (Debian's
python3-pil and python3-torchvision):

  images      (7, 32, 32, 3) uint8   records 0..3 of test_batch.bin and three
                                     made-up images (edge cases): one grey level
                                     (77), a 10/200 checkerboard, a horizontal
                                     ramp in red with constant green and blue
  ops         (K,)          int32    operation index (torchvision's order, the
                                     sv_aa_op enum)
  magnitudes  (K,)          float32  signed strength passed to the operation
  outputs     (K, 7, 32, 32, 3) uint8  op applied to each image
  ta_table    (14, 31)      float32  TrivialAugmentWide._augmentation_space(31)
  ra_table    (14, 31)      float32  RandAugment._augmentation_space(31, (32, 32))
  signed      (14,)         int32    whether the op's sign is drawn

The operations are torchvision's _apply_op on PIL images (nearest
interpolation, black fill), except shear and translation, which are the
original AutoAugment's PIL form Image.transform(AFFINE, (1, v, 0, 0, 1, 0)),
(1, 0, 0, v, 1, 0), (1, 0, t, 0, 1, 0), (1, 0, 0, 0, 1, t) with NEAREST and
black fill (torchvision builds a slightly different matrix through F.affine;
autoaugment.h documents the form used). Written to
tests/reference/autoaugment_reference.h5 (gzip), read by tests/test_autoaugment.c.

Run from the repository root:
    /usr/bin/python3 tests/reference/make_autoaugment_reference.py
Options: --data DIR (default ../shared/data/cifar-10-batches-bin), --out FILE.
"""
import argparse
import os

import h5py
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as A

RECORD = 3073
OPS = ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
       "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
       "AutoContrast", "Equalize"]

# (op, signed strengths): both blend branches (factor in [0, 1] and above 1),
# shears whose half-pixel sums land on ties (0.5), the largest table values,
# quarter turns (PIL's transpose fast path) and translations off the image.
CASES = {
    "Identity": [0.0],
    "ShearX": [0.033, -0.3, 0.5, 0.99, -0.99],
    "ShearY": [0.033, 0.3, -0.5, 0.99, -0.99],
    "TranslateX": [1.0667, -5.0, 14.5, -31.0, 32.0],
    "TranslateY": [1.0667, 5.0, -14.5, 31.0, -32.0],
    "Rotate": [4.5, -13.5, 30.0, -45.0, 90.0, -90.0, 135.0, -130.5, 0.0],
    "Brightness": [0.0, 0.33, -0.5, 0.9, -0.99, 0.99],
    "Color": [0.0, 0.33, -0.5, 0.9, -0.99, 0.99],
    "Contrast": [0.0, 0.33, -0.5, 0.9, -0.99, 0.99],
    "Sharpness": [0.0, 0.33, -0.5, 0.9, -0.99, 0.99],
    "Posterize": [8.0, 7.0, 6.0, 4.0, 2.0],
    "Solarize": [255.0, 246.5, 128.0, 8.5, 0.0],
    "AutoContrast": [0.0],
    "Equalize": [0.0],
}


def made_up_images():
    flat = np.full((32, 32, 3), 77, np.uint8)
    yy, xx = np.mgrid[0:32, 0:32]
    checker = np.where((yy + xx) % 2 == 0, 10, 200).astype(np.uint8)
    checker = np.repeat(checker[:, :, None], 3, axis=2)
    ramp = np.zeros((32, 32, 3), np.uint8)
    ramp[:, :, 0] = (xx * 8).astype(np.uint8)
    ramp[:, :, 1] = 128
    ramp[:, :, 2] = 3
    return [flat, checker, ramp]


def cifar_images(path, n):
    raw = np.fromfile(path, np.uint8, count=n * RECORD).reshape(n, RECORD)
    return [r[1:].reshape(3, 32, 32).transpose(1, 2, 0).copy() for r in raw]


def apply(img, op, v):
    im = Image.fromarray(img)
    if op in ("ShearX", "ShearY", "TranslateX", "TranslateY"):
        t = float(int(v))
        data = {"ShearX": (1, v, 0, 0, 1, 0), "ShearY": (1, 0, 0, v, 1, 0),
                "TranslateX": (1, 0, t, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, t)}[op]
        out = im.transform(im.size, Image.Transform.AFFINE, data,
                           resample=Image.Resampling.NEAREST, fillcolor=(0, 0, 0))
    else:
        out = A._apply_op(im, op, v, interpolation=InterpolationMode.NEAREST, fill=None)
    return np.asarray(out, np.uint8)


def table(space):
    t = np.zeros((len(OPS), 31), np.float32)
    signed = np.zeros(len(OPS), np.int32)
    for i, name in enumerate(OPS):
        mags, s = space[name]
        signed[i] = int(s)
        if mags.ndim > 0:
            t[i] = mags.to(torch.float32).numpy()
    return t, signed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar-10-batches-bin")
    ap.add_argument("--out", default="tests/reference/autoaugment_reference.h5")
    a = ap.parse_args()
    images = cifar_images(os.path.join(a.data, "test_batch.bin"), 4) + made_up_images()
    ops, mags, outs = [], [], []
    for name, values in CASES.items():
        for v in values:
            v32 = float(np.float32(v))  # the C side gets a float
            ops.append(OPS.index(name))
            mags.append(v32)
            outs.append(np.stack([apply(img, name, v32) for img in images]))
    ta, signed = table(A.TrivialAugmentWide()._augmentation_space(31))
    ra, signed_ra = table(A.RandAugment()._augmentation_space(31, (32, 32)))
    assert (signed == signed_ra).all()
    with h5py.File(a.out, "w") as f:
        kw = dict(compression="gzip", shuffle=True)
        f.create_dataset("images", data=np.stack(images), **kw)
        f.create_dataset("ops", data=np.array(ops, np.int32))
        f.create_dataset("magnitudes", data=np.array(mags, np.float32))
        f.create_dataset("outputs", data=np.stack(outs), **kw)
        f.create_dataset("ta_table", data=ta)
        f.create_dataset("ra_table", data=ra)
        f.create_dataset("signed", data=signed)
    print(f"{a.out}: {len(ops)} cases x {len(images)} images")


if __name__ == "__main__":
    main()
