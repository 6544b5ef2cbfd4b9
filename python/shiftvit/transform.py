"""The input side of the model (SPEC section 1): what `shiftvit predict` and
`shiftvit eval` do to an image before the forward pass, written from the SPEC.

- predict: decode to RGB uint8, resize to 32x32 with nearest neighbour
  (half-pixel centres, TF2 / PIL semantics) -- `decode_rgb`, `resize_nearest`;
- the evaluation transform, for predict and eval alike: bilinear 32 ->
  data.resize_size, then data.resize_size -> data.image_size
  (align_corners=False, no antialiasing, TF2 semantics), then / 255 --
  `eval_transform`. Its output, [N, S, S, 3] NHWC float in [0, 1], is the
  model's input (and the exported ONNX graph's, unless exported with
  --include-resize, whose input is the 32x32 image / 255).
"""

import numpy as np
import torch
import torch.nn.functional as F

SMALL = 32  # predict brings every photo to 32x32 first; CIFAR-10 images are 32x32
CIFAR_RECORD = 1 + 3 * 32 * 32


def decode_rgb(path):
    """uint8 array [H, W, 3]. Conversions as predict's (src/io/image.c):
    gray -> (g, g, g), alpha dropped (no compositing), 16-bit -> high byte."""
    from PIL import Image

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


def eval_transform(small, resize_size, image_size, dtype=torch.float64):
    """[32, 32, 3] or [N, 32, 32, 3] uint8 -> [N, S, S, 3]: bilinear 32 -> R,
    R -> S (align_corners=False, no antialiasing), then / 255; computed in
    float64, returned as `dtype`."""
    a = np.asarray(small)
    if a.ndim == 3:
        a = a[None]
    x = torch.from_numpy(a.astype(np.float64)).permute(0, 3, 1, 2)  # NCHW
    for side in (resize_size, image_size):
        if side != x.shape[2]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                              antialias=False)
    return (x / 255.0).permute(0, 2, 3, 1).contiguous().to(dtype)


def read_cifar(path, count, start=0):
    """(images [count, 32, 32, 3] uint8 HWC, labels [count]) from a CIFAR-10
    binary file (label byte, then 1024 R, 1024 G, 1024 B bytes per record)."""
    with open(path, "rb") as f:
        f.seek(start * CIFAR_RECORD)
        raw = f.read(count * CIFAR_RECORD)
    if len(raw) != count * CIFAR_RECORD:
        raise ValueError("%s: fewer than %d records after record %d" % (path, count, start))
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(count, CIFAR_RECORD)
    images = rec[:, 1:].reshape(count, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, rec[:, 0].astype(np.int64)
