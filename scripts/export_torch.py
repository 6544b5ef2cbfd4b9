#!/usr/bin/python3
"""Exports a shiftvit checkpoint as a PyTorch file: the state dict of the
nn.Module shiftvit.model.ShiftViT (python/shiftvit/model.py) with the config
it is built from (README "Using a trained model elsewhere").

    /usr/bin/python3 scripts/export_torch.py [--weights ema|raw] CHECKPOINT OUT.pt

OUT.pt is a dict saved with torch.save: "state_dict" (ShiftViT's, PyTorch
layouts: nn.Linear weights [out, in]), "config" (the model dict of
shiftvit.model.config_from_text), "config_text" (the checkpoint's INI),
"class_names", "input" (layout NHWC, size, range, preprocessing), "weights"
(ema or raw: --weights, default ema when the checkpoint has it, as `shiftvit
eval`). Load it with

    import sys; sys.path.insert(0, "python")
    from shiftvit.model import load_exported
    model, info = load_exported("OUT.pt")      # eval mode; model.train() to fine-tune
    logits = model(images)                      # images [N, S, S, 3] float in [0, 1]

Before writing, the module's logits on 4 random inputs are checked against the
functional reference with the same weights. The file is written to a
temporary file and renamed. Exit status 0, or 1 with one line on stderr
naming the file and the reason, 2 for bad usage.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from shiftvit import checkpoint as ck  # noqa: E402
from shiftvit import model as svm  # noqa: E402

PROG = "export_torch.py"


def export(a):
    import torch

    cfg, params, meta = ck.read_checkpoint(a.checkpoint, a.weights)
    a.weights = meta["weights"]
    if meta["nonfinite"]:
        sys.stderr.write("%s: warning: %s: /%s/%s holds NaN or infinity\n"
                         % (PROG, a.checkpoint, ck.GROUP_OF[a.weights], meta["nonfinite"][0]))
    model = svm.ShiftViT(cfg).load_keras_params({k: torch.from_numpy(v) for k, v in params.items()}).eval()
    S = cfg["image_size"]
    x = torch.rand(4, S, S, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(x)
        want = svm.forward({k: torch.from_numpy(v) for k, v in params.items()}, x, cfg)
    scale = max(want.abs().max().item(), 1e-30)
    if not (got - want).abs().max().item() <= 1e-4 * scale:
        raise ck.OutputError("%s: the module's logits differ from the reference's (internal error)" % a.out)
    blob = {"format": "shiftvit-torch", "version": 1, "state_dict": model.state_dict(), "config": cfg,
            "config_text": meta["config_text"], "class_names": meta["class_names"], "weights": a.weights,
            "input": {"layout": "NHWC", "size": S, "range": "float32 RGB in [0, 1] (pixel / 255)",
                      "resize_size": cfg["resize_size"],
                      "preprocessing": "32x32 image, bilinear 32 -> %d -> %d (align_corners=False, no "
                                       "antialiasing), / 255: shiftvit.transform.eval_transform"
                                       % (cfg["resize_size"], S)}}
    ck.write_atomic(a.out, lambda tmp: torch.save(blob, tmp))
    print("%s: %s (/%s, %d weights) -> %s: ShiftViT state dict, input [N, %d, %d, 3] NHWC RGB in [0, 1]"
          % (PROG, a.checkpoint, ck.GROUP_OF[a.weights], svm.count_params(cfg), a.out, S, S))


def main(argv):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="HDF5 checkpoint written by shiftvit train")
    ap.add_argument("out", help="the .pt file to write")
    ap.add_argument("--weights", choices=ck.WEIGHTS + ("model",), default=None,
                    help="ema: the moving average of the weights (/ema, runs with train.ema_decay > 0); "
                         "raw: the trained weights (/model); default, as shiftvit eval: ema when the "
                         "checkpoint has it ('model' is raw's older name)")
    a = ap.parse_args(argv)
    try:
        export(a)
    except (ck.CheckpointError, ck.OutputError) as e:
        sys.stderr.write("%s: %s\n" % (PROG, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
