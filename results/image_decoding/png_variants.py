"""Writes PNG variants of one photo into DIR for measure.sh (a2): every colour
type and bit depth predict promises (grey 1/2/4/8/16 bits, grey + alpha, RGB
8/16, RGBA 8/16, palette 2/4/8 bits, palette and grey and RGB with tRNS,
interlaced).  usage: png_variants.py PHOTO DIR"""
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

photo, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
src = Image.open(photo).convert("RGB").resize((61, 47))
a = np.asarray(src).astype(np.uint16)


def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)


def raw_png(name, w, h, depth, ctype, rows, extra=b""):
    """rows: bytes of each scanline (no filter byte)"""
    data = b"".join(b"\x00" + r for r in rows)
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
                + extra + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


def pack_bits(v, depth):
    """v: 1-D array of values < 2**depth -> bytes, MSB first"""
    per = 8 // depth
    v = np.concatenate([v, np.zeros((-len(v)) % per, dtype=v.dtype)]).reshape(-1, per)
    return bytes(sum(int(c) << (8 - depth * (i + 1)) for i, c in enumerate(row)) for row in v)


h, w = a.shape[:2]
gray = (a[:, :, 0] * 77 + a[:, :, 1] * 150 + a[:, :, 2] * 29) >> 8
for d in (1, 2, 4):
    raw_png("gray%d.png" % d, w, h, d, 0, [pack_bits(r >> (8 - d), d) for r in gray])
raw_png("gray8_trns.png", w, h, 8, 0, [bytes(r.astype(np.uint8)) for r in gray], chunk(b"tRNS", struct.pack(">H", 128)))
g16 = gray * 257 + 3
raw_png("gray16.png", w, h, 16, 0, [r.astype(">u2").tobytes() for r in g16])
rgb16 = a * 257 + 5
raw_png("rgb16.png", w, h, 16, 2, [r.astype(">u2").tobytes() for r in rgb16])
raw_png("rgb8_trns.png", w, h, 8, 2, [r.astype(np.uint8).tobytes() for r in a], chunk(b"tRNS", struct.pack(">HHH", 10, 20, 30)))
alpha = (np.arange(w * h).reshape(h, w) * 7 % 256).astype(np.uint16)
rgba16 = np.dstack([rgb16, alpha * 257])
raw_png("rgba16.png", w, h, 16, 6, [r.astype(">u2").tobytes() for r in rgba16])
ga16 = np.dstack([g16, alpha * 257])
raw_png("gray_alpha16.png", w, h, 16, 4, [r.astype(">u2").tobytes() for r in ga16])
Image.fromarray(np.dstack([a, alpha]).astype(np.uint8), "RGBA").save(os.path.join(out, "rgba8.png"))
for d in (2, 4, 8):
    p = src.quantize(colors=2 ** d)
    idx = np.asarray(p)
    pal = bytes(p.getpalette()[:3 * 2 ** d])
    trns = chunk(b"tRNS", bytes(range(0, 256, 256 // 2 ** d))) if d == 4 else b""
    raw_png("palette%d%s.png" % (d, "_trns" if trns else ""), w, h, d, 3,
            [pack_bits(r, d) for r in idx], chunk(b"PLTE", pal) + trns)


def adam7(img):
    """Adam7 passes of an RGB8 image, as raw scanlines"""
    rows = []
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            rows += [r.astype(np.uint8).tobytes() for r in sub]
    return rows


data = b"".join(b"\x00" + r for r in adam7(a))
with open(os.path.join(out, "rgb8_interlaced.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
            + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))
