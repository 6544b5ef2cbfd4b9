#!/usr/bin/python3
"""Exports a shiftvit checkpoint as an ONNX model (README "Using a trained
model elsewhere").

    /usr/bin/python3 scripts/export_onnx.py [--weights ema|raw] [--opset N]
        [--include-resize] CHECKPOINT OUT.onnx

The graph (python/shiftvit/onnx_graph.py) uses standard operators only, opset
13..17 (default 17): input "image" float32 [batch, S, S, 3], NHWC, RGB in
[0, 1] at the model's input size S (data.image_size: the evaluation
transform's output); --include-resize makes the input the 32x32 image / 255
and puts the transform's bilinear resizes (32 -> data.resize_size -> S) into
the graph. Outputs "logits" and "probabilities" [batch, K]. The metadata
(metadata_props) hold the class names, the input size and layout, the
preprocessing and the checkpoint's config. onnx.checker (full check, with
shape inference) runs on the result before it is written; the file is
written to a temporary file in OUT's folder and renamed, so a failed export
leaves no file behind.

--weights ema exports the moving average of the weights (/ema), for runs that
kept one (train.ema_decay > 0), --weights raw the trained weights (/model); the
default, as `shiftvit eval`, is ema when the checkpoint has it. Exit status 0, or 1 with one line on stderr naming the file and the
reason (not a checkpoint, truncated, unknown model variant, no /ema, output
not writable), 2 for bad usage. Needs Debian's python3-onnx, python3-h5py,
python3-numpy (scripts/install-deps.sh installs them).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from shiftvit import checkpoint as ck  # noqa: E402
from shiftvit import model as svm  # noqa: E402

PROG = "export_onnx.py"


def parse_args(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="HDF5 checkpoint written by shiftvit train")
    ap.add_argument("out", help="the ONNX file to write")
    ap.add_argument("--weights", choices=ck.WEIGHTS + ("model",), default=None,
                    help="ema: the moving average of the weights (/ema, runs with train.ema_decay > 0); "
                         "raw: the trained weights (/model); default, as shiftvit eval: ema when the "
                         "checkpoint has it ('model' is raw's older name)")
    ap.add_argument("--opset", type=int, default=17,
                    help="ONNX opset 13..17 (default 17: LayerNormalization; below: decomposed)")
    ap.add_argument("--tta-flip", choices=("checkpoint", "on", "off"), default="checkpoint",
                    help="average the logits of each image and its mirror inside the graph, as "
                         "shiftvit eval/predict do with train.tta_flip (default: the checkpoint's "
                         "train.tta_flip)")
    ap.add_argument("--include-resize", action="store_true",
                    help="input the 32x32 image / 255; the graph does the bilinear resizes")
    return ap.parse_args(argv)


def export(a):
    import onnx

    from shiftvit import onnx_graph

    if not onnx_graph.OPSET_MIN <= a.opset <= onnx_graph.OPSET_MAX:
        raise ck.OutputError("%s: --opset %d: this exporter writes opsets %d..%d"
                             % (a.out, a.opset, onnx_graph.OPSET_MIN, onnx_graph.OPSET_MAX))
    cfg, params, meta = ck.read_checkpoint(a.checkpoint, a.weights)
    a.weights = meta["weights"]
    if meta["nonfinite"]:
        sys.stderr.write("%s: warning: %s: /%s/%s holds NaN or infinity\n"
                         % (PROG, a.checkpoint, ck.GROUP_OF[a.weights], meta["nonfinite"][0]))
    tta = svm.tta_flip_from_text(meta["config_text"]) if a.tta_flip == "checkpoint" else a.tta_flip == "on"
    moved = svm.tta_translate_from_text(meta["config_text"])
    if moved:
        sys.stderr.write("%s: note: %s has train.tta_translate = %d; the graph has no moved views, so its logits "
                         "are those of `shiftvit predict --tta-translate 0`\n" % (PROG, a.checkpoint, moved))
    model = onnx_graph.build_model(
        cfg, params, opset=a.opset, include_resize=a.include_resize, tta_flip=tta,
        meta={"source_checkpoint": os.path.basename(a.checkpoint), "weights": a.weights,
              "shiftvit_config": meta["config_text"], "num_params": str(svm.count_params(cfg))})
    onnx.checker.check_model(model, full_check=True)
    ck.write_atomic(a.out, lambda tmp: onnx.save(model, tmp))
    side = 32 if a.include_resize else cfg["image_size"]
    print("%s: %s (/%s, %d weights) -> %s: opset %d, input 'image' float32 [batch, %d, %d, 3] NHWC "
          "RGB in [0, 1]%s, outputs 'logits', 'probabilities' [batch, %d]%s"
          % (PROG, a.checkpoint, ck.GROUP_OF[a.weights], svm.count_params(cfg), a.out, a.opset, side, side,
             " (resize inside)" if a.include_resize else "", cfg["num_classes"],
             ", flip test-time augmentation inside" if tta else ""))
    print("class_names: %s" % json.dumps(meta["class_names"]))


def main(argv):
    a = parse_args(argv)
    try:
        export(a)
    except (ck.CheckpointError, ck.OutputError) as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return 1
    except ImportError as e:
        sys.stderr.write("%s: %s (install the dependencies: scripts/install-deps.sh)\n" % (PROG, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
