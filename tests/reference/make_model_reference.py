#!/usr/bin/python3
"""Writes a forward/backward reference of the ShiftViT model for tests/test_reference.c.

usage: /usr/bin/python3 tests/reference/make_model_reference.py CONFIG OUT.h5 [--batch N] [--seed S]

The model is the independent PyTorch implementation in python/shiftvit/model.py. The
parameters (random, not Keras init, so that every parameter matters) and the
input are drawn in float64 and rounded to float32; forward and backward then run
in float64 on exactly those float32 values, and the results are stored as
float32 (the loss as float64). Dropout and drop path are off.

HDF5 layout:
  /input          [N, H, W, 3] float32, NHWC, values in [0, 1]
  /labels         [N] int32
  /logits         [N, K] float32
  /loss           scalar float64, mean softmax cross-entropy over N
  /params/<name>  Keras shape, float32 (name has slashes -> nested groups)
  /grads/<name>   d loss / d param, same shape, float32
  attributes on /: config (the CONFIG path), batch, seed, num_params,
  f32_* (how far the same computation in float32 lands from the float64
  reference, in the metrics test_reference.c uses: a guide for its tolerances).
"""

import argparse
import os
import sys
import time

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from shiftvit import model as sv  # noqa: E402


def run(params, x, labels, cfg):
    """(logits, loss, grads) with autograd; params are leaf tensors."""
    ps = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    logits = sv.forward(ps, x, cfg)
    loss = sv.loss_fn(logits, labels)
    grads = torch.autograd.grad(loss, list(ps.values()))
    return logits.detach(), loss.detach(), dict(zip(ps.keys(), grads))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-f32-check", action="store_true",
                    help="skip the float32 rerun that estimates rounding error")
    a = ap.parse_args()

    t0 = time.time()
    cfg = sv.load_config(a.config)
    gen = torch.Generator().manual_seed(a.seed)
    params64 = sv.random_params(cfg, gen, torch.float64)
    # Round everything to float32 first: the reference is exact for what is stored.
    params64 = {k: v.float().double() for k, v in params64.items()}
    S, N, K = cfg["image_size"], a.batch, cfg["num_classes"]
    x64 = torch.rand(N, S, S, 3, generator=gen, dtype=torch.float64).float().double()
    labels = torch.randint(0, K, (N,), generator=gen, dtype=torch.int64)

    logits, loss, grads = run(params64, x64, labels, cfg)

    attrs = {}
    if not a.no_f32_check:
        p32 = {k: v.float() for k, v in params64.items()}
        l32, loss32, g32 = run(p32, x64.float(), labels, cfg)
        # test_reference.c: |c - ref| <= 1e-4 |ref| + 1e-5 max|ref|; this is the
        # largest ratio of the error to that bound (must stay well below 1).
        bound = 1e-4 * logits.abs() + 1e-5 * logits.abs().max()
        attrs["f32_logits_tol_used"] = ((l32.double() - logits).abs() / bound).max().item()
        attrs["f32_loss_rel"] = abs(loss32.item() - loss.item()) / abs(loss.item())
        worst, wname = 0.0, ""
        for k in grads:
            e = ((g32[k].double() - grads[k]).abs().max() / grads[k].abs().max()).item()
            if e > worst:
                worst, wname = e, k
        attrs["f32_grad_rel"] = worst
        attrs["f32_grad_worst"] = wname

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp%d" % os.getpid()
    with h5py.File(tmp, "w") as f:
        f.attrs["config"] = a.config
        f.attrs["batch"] = N
        f.attrs["seed"] = a.seed
        f.attrs["num_params"] = sv.count_params(cfg)
        for k, v in attrs.items():
            f.attrs[k] = v
        f["input"] = x64.numpy().astype(np.float32)
        f["labels"] = labels.numpy().astype(np.int32)
        f["logits"] = logits.numpy().astype(np.float32)
        f["loss"] = np.float64(loss.item())
        for k, v in params64.items():
            f["params/" + k] = v.numpy().astype(np.float32)
            f["grads/" + k] = grads[k].numpy().astype(np.float32)
    os.replace(tmp, a.out)  # atomic: a concurrent reader never sees half a file

    gmax = min(g.abs().max().item() for g in grads.values())
    print("%s: config %s, batch %d, %d parameters in %d tensors, loss %.6f, "
          "logits std %.3f max %.3f, smallest per-tensor max|grad| %.3g, %.1f s"
          % (a.out, a.config, N, sv.count_params(cfg), len(params64), loss.item(),
             logits.std().item(), logits.abs().max().item(), gmax, time.time() - t0))
    if attrs:
        print("float32 rerun vs float64 reference: logits error %.3f of the test's bound, "
              "loss rel %.2e, grads %.2e of max (worst %s)" % (attrs["f32_logits_tol_used"], attrs["f32_loss_rel"],
                                                attrs["f32_grad_rel"], attrs["f32_grad_worst"]))


if __name__ == "__main__":
    main()
