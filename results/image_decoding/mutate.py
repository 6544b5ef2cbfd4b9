"""Writes damaged copies of one photo into DIR for measure.sh (b2): the JPEG
and a PNG of it (PIL), each cut at 40 evenly spaced lengths and with 100
single random bytes replaced (seeded, so the same files every time).
usage: mutate.py PHOTO.jpg DIR"""
import io
import os
import random
import sys

from PIL import Image

photo, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
jpg = open(photo, "rb").read()
buf = io.BytesIO()
Image.open(photo).convert("RGB").save(buf, "PNG")
rng = random.Random(1)
for ext, data in (("jpg", jpg), ("png", buf.getvalue())):
    for i in range(40):
        n = len(data) * i // 40
        open(os.path.join(out, "cut%02d_%d.%s" % (i, n, ext)), "wb").write(data[:n])
    for i in range(100):
        b = bytearray(data)
        at = rng.randrange(len(b))
        b[at] = rng.randrange(256)
        open(os.path.join(out, "byte%02d_at%d.%s" % (i, at, ext)), "wb").write(bytes(b))
