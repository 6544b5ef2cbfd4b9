"""Compares decode_dump's .rgb files with PIL's decode of the same files
(compare_checkpoint.py's decode_rgb: convert("RGB"), 16-bit grey to its high
byte). Prints per file the max and mean absolute difference and the share of
differing values, then the totals.  usage: compare_pil.py DUMPDIR FILE..."""
import os
import sys

import numpy as np
from PIL import Image


def pil_rgb(path):
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            g = (np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
            return np.repeat(g[:, :, None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


dump, files = sys.argv[1], sys.argv[2:]
if dump == "--outcome":
    for f in files:
        try:
            pil_rgb(f)
            print("%s\taccepted" % os.path.basename(f))
        except Exception:
            print("%s\trefused" % os.path.basename(f))
    sys.exit(0)
tot_max, tot_sum, tot_n, tot_diff = 0, 0, 0, 0
for f in files:
    name = os.path.basename(f)
    try:
        ref = pil_rgb(f).astype(np.int16)
    except Exception as e:  # PIL refuses it
        print("%-34s PIL refuses: %s" % (name, str(e).splitlines()[0][:60]))
        continue
    raw = os.path.join(dump, name + ".rgb")
    if not os.path.exists(raw):
        print("%-34s PIL decodes %dx%d; not decoded here" % (name, ref.shape[1], ref.shape[0]))
        continue
    got = np.fromfile(raw, dtype=np.uint8)
    if got.size != ref.size:
        print("%-34s size differs: %d values here, PIL %s" % (name, got.size, ref.shape))
        continue
    d = np.abs(got.reshape(ref.shape).astype(np.int16) - ref)
    print("%-34s max %3d  mean %.4f  differing %.2f%%" % (name, d.max(), d.mean(), 100.0 * (d > 0).mean()))
    tot_max, tot_sum, tot_n, tot_diff = max(tot_max, d.max()), tot_sum + d.sum(), tot_n + d.size, tot_diff + (d > 0).sum()
if tot_n:
    print("ALL max %d  mean %.4f  differing %.2f%% of %d values" % (tot_max, tot_sum / tot_n, 100.0 * tot_diff / tot_n, tot_n))
