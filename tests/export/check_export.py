#!/usr/bin/python3
"""Checks of the exporters (scripts/export_onnx.py, scripts/export_torch.py)
against `shiftvit predict`, run by tests/test_export.c (README "Testing").

    check_export.py compare CKPT WORKDIR [--count 256] [--bin build/shiftvit] [--perturb]
    check_export.py bad-input CKPT WORKDIR

compare: the first COUNT images of CIFAR-10's test_batch.bin, written as
lossless 32x32 PNG files, are classified by `shiftvit predict --json` (its
float32 "logits"; predict's nearest 32x32 resize is the identity on 32x32
images, then the evaluation transform and the C forward pass). The same
images go through
  1. the ONNX export (opset 17, --tta-flip off, input at the model's size: the
     evaluation transform done here in float64 with torch interpolate) in ONNX
     Runtime for Node.js (tests/export/run_onnx.js), against predict
     --tta-flip off,
  2. the ONNX export at opset 13 with --include-resize (input: pixel / 255 at
     32x32; the graph resizes) and --tta-flip on (the graph averages the
     logits of each image and its mirror) in ONNX Runtime, against predict
     --tta-flip on,
  3. the PyTorch export, loaded with shiftvit.model.load_exported, float32,
     against predict --tta-flip off,
  4. that PyTorch module exported again by PyTorch's own torch.onnx.export
     (opset 13, dynamic batch; the shift traced as slices, pads and a
     concatenation), checked by onnx.checker and run in ONNX Runtime, against
     predict --tta-flip off: what a user who fine-tunes the module in
     PyTorch and ships it as ONNX does.
Each must give logits within 1e-4 of predict's, relative to the logit scale
(the largest |logit| of predict over all images), and the same argmax for
every image (an image whose top two logits are closer than twice the
tolerance may differ, and is counted; none is expected). The ONNX files pass
onnx.checker's full check, and their metadata name the classes and the input
size. --perturb shifts one runtime logit by 10x the tolerance: every
comparison must then fail (a check that the check can fail).

bad-input: both exporters on a file that is not HDF5, an HDF5 file that is not
a checkpoint, a truncated checkpoint, an unknown model variant (an unknown
[model] key; a tensor the model lacks), --weights ema without /ema, an
unwritable output (missing folder, a file as folder, a folder as output):
exit status 1, one line on stderr naming the file, no output file and no
temporary file left, an existing output untouched. Also: unknown keys of
other sections are ignored, --weights ema exports /ema's weights, --weights
raw /model's, and no --weights /ema's when the checkpoint has it.

Exit status 0 when every check passed, 1 otherwise; one line per check.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))

import torch  # noqa: E402

from shiftvit import checkpoint as ck  # noqa: E402
from shiftvit import model as svm  # noqa: E402
from shiftvit import transform as tr  # noqa: E402

PY = "/usr/bin/python3"
EXPORT_ONNX = os.path.join(ROOT, "scripts", "export_onnx.py")
EXPORT_TORCH = os.path.join(ROOT, "scripts", "export_torch.py")
RUN_ONNX = os.path.join(HERE, "run_onnx.js")
RTOL = 1e-4
FAILED = []


def report(ok, line):
    print(("ok    " if ok else "FAIL  ") + line)
    sys.stdout.flush()
    if not ok:
        FAILED.append(line)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def must(cmd):
    r = run(cmd)
    if r.returncode != 0:
        raise SystemExit("check_export.py: %s exited %d:\n%s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r.stdout


def find_test_batch():
    for d in (os.environ.get("CIFAR10_DIR"), os.path.join(ROOT, "data", "cifar-10-batches-bin"),
              os.path.join(ROOT, "..", "shared", "data", "cifar-10-batches-bin"),
              "/work/shared/data/cifar-10-batches-bin"):
        if d and os.path.isfile(os.path.join(d, "test_batch.bin")):
            return os.path.join(d, "test_batch.bin")
    raise SystemExit("check_export.py: no CIFAR-10 test_batch.bin found (set CIFAR10_DIR)")


def predict_logits(binary, ckpt, images, work, tta_flip):
    from PIL import Image

    folder = os.path.join(work, "png")
    shutil.rmtree(folder, ignore_errors=True)  # predict reads the whole folder
    os.makedirs(folder)
    for i, im in enumerate(images):
        Image.fromarray(im).save(os.path.join(folder, "%04d.png" % i))
    # the exports have no moved views (train.tta_translate): predict without them
    out = must([binary, "predict", "--json", "--precision", "fp32", "--tta-flip", "on" if tta_flip else "off",
                "--tta-translate", "0", "--checkpoint", ckpt, folder])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if len(rows) != len(images):
        raise SystemExit("check_export.py: predict classified %d of %d images" % (len(rows), len(images)))
    for i, r in enumerate(rows):
        assert r["file"].endswith("%04d.png" % i), r["file"]
    return np.array([r["logits"] for r in rows], dtype=np.float64)


def run_onnx(model_path, x, work):
    inp, out = os.path.join(work, "input.f32"), os.path.join(work, "logits.f32")
    np.ascontiguousarray(x, dtype=np.float32).tofile(inp)
    info = json.loads(must(["node", RUN_ONNX, model_path, inp, str(x.shape[0]), out]).splitlines()[-1])
    return np.fromfile(out, dtype=np.float32).reshape(x.shape[0], -1).astype(np.float64), info


def compare(name, ref, got, perturb):
    if perturb:
        got = got.copy()
        got[0, 0] += 10 * RTOL * np.abs(ref).max()
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(got - ref).max() / scale
    a, b = ref.argmax(1), got.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) < 2 * RTOL * scale
    bad = int(((a != b) & ~near_tie).sum())
    excused = int(((a != b) & near_tie).sum())
    ok = err <= RTOL and bad == 0
    report(ok, "%s: %d images, max |diff| / logit scale = %.2e (scale %.4g, limit %.0e), argmax equal on %d, "
               "differs on %d (%d of them near ties)" % (name, len(ref), err, scale, RTOL,
                                                         int((a == b).sum()), bad + excused, excused))


def check_onnx_file(path, cfg, include_resize, opset, tta_flip):
    import onnx

    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    props = {p.key: p.value for p in m.metadata_props}
    side = 32 if include_resize else cfg["image_size"]
    dims = [d.dim_value or d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    ops = sorted({n.op_type for n in m.graph.node})
    ok = (json.loads(props.get("class_names", "[]")) == svm.class_names(cfg)
          and props.get("input_size") == str(side) and props.get("input_layout") == "NHWC"
          and dims == ["batch", side, side, 3] and m.opset_import[0].version == opset
          and props.get("tta_flip") == ("true" if tta_flip else "false")
          and ("LayerNormalization" in ops) == (opset >= 17) and "Erf" in ops)
    report(ok, "%s: onnx.checker full check passed; opset %d, input %s NHWC, metadata class_names, "
               "input_size %s and tta_flip %s; operators: %s" % (os.path.basename(path), opset, dims,
                                                                 props.get("input_size"), props.get("tta_flip"),
                                                                 " ".join(ops)))


def cmd_compare(a):
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    cfg, params, _ = ck.read_checkpoint(a.ckpt)
    images, _ = tr.read_cifar(find_test_batch(), a.count)
    # predict without and with flip test-time augmentation (train.tta_flip):
    # the opset-17 export without it, the opset-13 one with it in the graph
    refs = {tta: predict_logits(a.bin, a.ckpt, images, work, tta) for tta in (False, True)}
    ref = refs[False]
    x = tr.eval_transform(images, cfg["resize_size"], cfg["image_size"], torch.float32)
    for opset, resize, tta in ((17, False, False), (13, True, True)):
        path = os.path.join(work, "model_opset%d%s.onnx" % (opset, "_resize" if resize else ""))
        must([PY, EXPORT_ONNX, "--opset", str(opset), "--tta-flip", "on" if tta else "off"]
             + (["--include-resize"] if resize else []) + [a.ckpt, path])
        check_onnx_file(path, cfg, resize, opset, tta)
        inp = images.astype(np.float32) / np.float32(255) if resize else x.numpy()
        got, info = run_onnx(path, inp, work)
        compare("ONNX Runtime (%s), opset %d, %s%s" % (info["runtime"], opset,
                "input 32x32 / 255, resize in the graph" if resize else
                "input %dx%d (transform outside)" % (cfg["image_size"], cfg["image_size"]),
                ", flip TTA in the graph against predict --tta-flip on" if tta else ""),
                refs[tta], got, a.perturb)
    pt = os.path.join(work, "model.pt")
    must([PY, EXPORT_TORCH, a.ckpt, pt])
    model, info = svm.load_exported(pt)
    with torch.no_grad():
        got = model(x).double().numpy()
    compare("PyTorch export (torch %s, float32)" % torch.__version__, ref, got, a.perturb)
    compare_torch_onnx_export(model, x, ref, work, a.perturb)
    return 1 if FAILED else 0


def compare_torch_onnx_export(model, x, ref, work, perturb):
    import warnings

    import onnx

    path = os.path.join(work, "model_torch_onnx_export.onnx")
    with warnings.catch_warnings():  # the tracer's notes on constant folding of slices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x[:2], path, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    got, info = run_onnx(path, x.numpy(), work)
    compare("torch.onnx.export of the PyTorch export (opset 13, onnx.checker passed) in ONNX Runtime (%s)"
            % info["runtime"], ref, got, perturb)


# ------------------------------------------------------------ bad input

def edit_copy(src, dst, fn):
    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def set_config(f, text):
    import h5py

    del f["config"]
    f.create_dataset("config", data=text, dtype=h5py.string_dtype("utf-8"))


def config_text(f):
    v = f["config"][()]
    return v.decode() if isinstance(v, bytes) else str(v)


def expect_failure(case, exporter, args, out, named, reason):
    before = open(out, "rb").read() if os.path.isfile(out) else None
    folder = os.path.dirname(out) if os.path.isdir(os.path.dirname(out) or ".") else None
    temps_before = set(glob.glob(os.path.join(folder, ".*.tmp"))) if folder else set()
    r = run([PY, exporter] + args)
    lines = r.stderr.strip().splitlines()
    after = open(out, "rb").read() if os.path.isfile(out) else None
    temps = set(glob.glob(os.path.join(folder, ".*.tmp"))) - temps_before if folder else set()
    ok = (r.returncode == 1 and len(lines) == 1 and named in lines[0] and reason in lines[0]
          and after == before and not temps and r.stdout == "")
    report(ok, "%s, %s: exit %d, stderr %r%s%s" % (
        case, os.path.basename(exporter), r.returncode, r.stderr.strip(),
        "" if after == before else ", OUTPUT CHANGED", ", temporary files left: %s" % sorted(temps) if temps else ""))


def cmd_bad_input(a):
    import h5py

    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    text_file = os.path.join(work, "notes.txt")
    with open(text_file, "w") as f:
        f.write("not a checkpoint\n" * 10)
    foreign = os.path.join(work, "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f.create_dataset("weights", data=np.zeros(4, np.float32))
    truncated = os.path.join(work, "truncated.h5")
    with open(a.ckpt, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    stem = edit_copy(a.ckpt, os.path.join(work, "stem.h5"),
                     lambda f: set_config(f, config_text(f) + "\n[model]\nstem = conv3x3\n"))
    extra = edit_copy(a.ckpt, os.path.join(work, "extra_tensor.h5"),
                      lambda f: f.create_dataset("model/stem/kernel", data=np.zeros((3, 3), np.float32)))
    cases = [("not HDF5", text_file, "not an HDF5 file"),
             ("HDF5 but not a checkpoint", foreign, "no format_version"),
             ("truncated checkpoint", truncated, ""),
             ("unknown model variant (model.stem)", stem, "unknown model variant"),
             ("unknown model variant (extra tensor)", extra, "unknown model variant"),
             ("missing file", os.path.join(work, "missing.h5"), "cannot read")]
    existing = os.path.join(work, "existing.out")
    for exporter, ext in ((EXPORT_ONNX, ".onnx"), (EXPORT_TORCH, ".pt")):
        for case, path, reason in cases:
            out = os.path.join(work, "out" + ext)
            expect_failure(case, exporter, [path, out], out, path, reason)
        with open(existing, "wb") as f:
            f.write(b"an older export")
        expect_failure("truncated checkpoint onto an existing output", exporter, [truncated, existing], existing,
                       truncated, "")
        expect_failure("--weights ema without /ema", exporter, ["--weights", "ema", a.ckpt, os.path.join(work, "e" + ext)],
                       os.path.join(work, "e" + ext), a.ckpt, "/ema")
        for case, out in (("output folder missing", os.path.join(work, "no", "such", "dir", "m" + ext)),
                          ("output folder is a file", os.path.join(text_file, "m" + ext)),
                          ("output is a folder", work)):
            expect_failure(case, exporter, [a.ckpt, out], out, out, "")
    # unknown keys outside [model] are ignored; --weights ema reads /ema, raw /model
    lenient = edit_copy(a.ckpt, os.path.join(work, "lenient.h5"), lambda f: set_config(
        f, config_text(f) + "\n[data]\ntranslate = 4\ncutout = 8\n[train]\ntta_flip = true\n[future]\nx = 1\n"))

    def add_ema(f):
        for name in svm.param_shapes(svm.config_from_text(config_text(f))):
            f.create_dataset("ema/" + name, data=np.asarray(f["model/" + name][()]) * np.float32(0.5))
    ema = edit_copy(lenient, os.path.join(work, "ema.h5"), add_ema)
    cfg, params, _ = ck.read_checkpoint(a.ckpt)
    S = cfg["image_size"]
    x = np.random.default_rng(0).random((4, S, S, 3), dtype=np.float32)
    # no --weights: /ema when the checkpoint has it (as shiftvit eval)
    for weights, scale in (("raw", 1.0), ("ema", 0.5), (None, 0.5)):
        wargs = ["--weights", weights] if weights else []
        out = os.path.join(work, "lenient_%s.onnx" % (weights or "default"))
        # the config says tta_flip = true: one forward pass here, as svm.forward
        r = run([PY, EXPORT_ONNX] + wargs + ["--tta-flip", "off", ema, out])
        got = run_onnx(out, x, work)[0] if r.returncode == 0 else None
        p = {k: torch.from_numpy(v.astype(np.float64) * scale) for k, v in params.items()}
        want = svm.forward(p, torch.from_numpy(x.astype(np.float64)), cfg).numpy()
        other = svm.forward({k: v * (0.5 if weights == "raw" else 2.0) for k, v in p.items()},
                            torch.from_numpy(x.astype(np.float64)), cfg).numpy()
        ok = (got is not None and np.abs(got - want).max() <= RTOL * np.abs(want).max()
              and np.abs(got - other).max() > 100 * RTOL * np.abs(want).max())
        report(ok, "checkpoint with unknown [data]/[train]/[future] keys and /ema: --weights %s exports "
                   "/%s's weights (exit %d%s)" % (weights or "(default)", "model" if weights == "raw" else "ema", r.returncode, r.stderr.strip() and ": " + r.stderr.strip()))
        ptout = os.path.join(work, "lenient_%s.pt" % (weights or "default"))
        r = run([PY, EXPORT_TORCH] + wargs + [ema, ptout])
        ok = r.returncode == 0
        if ok:
            m, _ = svm.load_exported(ptout)
            with torch.no_grad():
                got = m(torch.from_numpy(x)).double().numpy()
            ok = np.abs(got - want).max() <= RTOL * np.abs(want).max()
        report(ok, "the same with export_torch.py --weights %s (exit %d%s)"
               % (weights or "(default)", r.returncode, r.stderr.strip() and ": " + r.stderr.strip()))
    return 1 if FAILED else 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("compare", "bad-input"))
    ap.add_argument("ckpt")
    ap.add_argument("work")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "shiftvit"))
    ap.add_argument("--perturb", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rc = cmd_compare(a) if a.what == "compare" else cmd_bad_input(a)
    print("%d check(s) failed" % len(FAILED) if FAILED else "all checks passed")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
