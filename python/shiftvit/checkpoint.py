"""Reading a `shiftvit train` checkpoint (include/shiftvit/checkpoint.h) for
the exporters and the reference checks, and writing their outputs atomically.

    cfg, params, meta = read_checkpoint(path, weights=None)

cfg: the model dict of shiftvit.model.config_from_text, built from the stored
/config INI text (unknown keys outside [model] are ignored, an unknown [model]
key is an "unknown model variant" error). params: Keras name -> float32 numpy
array for every tensor of /model (weights="raw") or of /ema (weights="ema": the
exponential moving average of the weights that runs with train.ema_decay > 0
keep, same names and shapes); weights=None, as `shiftvit eval` and `predict`
default: /ema when the checkpoint has it, else /model. Each tensor is checked
for presence and shape; a tensor the model does not have is an error too.
meta: the config text, the format version, the weights read ("ema" or "raw"),
the class names.

Every failure is a CheckpointError whose message is one line naming the file
and the reason."""

import os
import tempfile
from collections import OrderedDict

import numpy as np

from shiftvit import model as svm

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUPPORTED_VERSION = 1  # SV_CHECKPOINT_VERSION
WEIGHTS = ("ema", "raw")  # --weights of eval, predict and the exporters
GROUP_OF = {"ema": "ema", "raw": "model", "model": "model"}  # "model": raw's older name


class CheckpointError(Exception):
    """One-line message naming the file and the reason."""


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return b"".join(bytes(t) if not isinstance(t, str) else t.encode() for t in value.ravel()).decode("utf-8")
    return str(value)


def _check_file(path):
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    if os.path.isdir(path):
        raise CheckpointError("%s: is a directory, not a checkpoint" % path)
    if size == 0:
        raise CheckpointError("%s: empty file (0 bytes), not a shiftvit checkpoint" % path)
    if head != HDF5_SIGNATURE:
        raise CheckpointError("%s: not an HDF5 file (%d bytes, no HDF5 signature), not a shiftvit checkpoint"
                              % (path, size))


def _read_tensors(f, path, cfg, weights):
    if weights not in GROUP_OF:
        raise CheckpointError("%s: unknown weights %r (choose ema or raw)" % (path, weights))
    weights = GROUP_OF[weights]  # the group's name below
    if weights not in f or not hasattr(f[weights], "keys"):
        if weights == "ema":
            raise CheckpointError("%s: no /ema group: this run kept no moving average of the weights "
                                  "(train.ema_decay = 0; use --weights raw)" % path)
        raise CheckpointError("%s: no /model group, not a shiftvit checkpoint" % path)
    group = f[weights]
    shapes = svm.param_shapes(cfg)
    names = []
    group.visit(lambda n: names.append(n) if hasattr(group[n], "shape") else None)
    extra = sorted(set(names) - set(shapes))
    if extra:
        raise CheckpointError("%s: unknown model variant: /%s holds tensors this model does not have: %s"
                              % (path, weights, ", ".join(extra[:4]) + (", ..." if len(extra) > 4 else "")))
    params = OrderedDict()
    for name, shape in shapes.items():
        if name not in group:
            raise CheckpointError("%s: missing tensor /%s/%s (config and weights disagree)" % (path, weights, name))
        ds = group[name]
        if tuple(ds.shape) != tuple(shape):
            raise CheckpointError("%s: /%s/%s has shape %r, the config's model expects %r"
                                  % (path, weights, name, tuple(ds.shape), tuple(shape)))
        try:
            params[name] = np.asarray(ds[()], dtype=np.float32)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError("%s: tensor /%s/%s cannot be read (truncated or damaged file?): %s"
                                  % (path, weights, name, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
    return params


def read_checkpoint(path, weights=None):
    """(cfg, params, meta) of a checkpoint; CheckpointError on any problem.
    weights: "ema", "raw" ("model" is accepted for raw) or None (ema when the
    checkpoint has /ema, else raw)."""
    import h5py  # here: the INI parsing and the model need no h5py

    _check_file(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError("%s: cannot be opened as HDF5 (truncated or damaged file?): %s"
                              % (path, reason)) from None
    try:
        with f:
            if "format_version" not in f.attrs:
                raise CheckpointError("%s: no format_version attribute on / (not a shiftvit checkpoint)" % path)
            version = int(np.asarray(f.attrs["format_version"]).ravel()[0])
            if not 1 <= version <= SUPPORTED_VERSION:
                raise CheckpointError("%s: checkpoint format_version %d, this exporter reads 1..%d"
                                      % (path, version, SUPPORTED_VERSION))
            if "config" not in f:
                raise CheckpointError("%s: no /config dataset (not a shiftvit checkpoint)" % path)
            text = _text(f["config"][()])
            try:
                cfg = svm.config_from_text(text, path)
            except svm.ConfigError as e:
                raise CheckpointError(str(e)) from None
            if weights is None:
                weights = "ema" if "ema" in f else "raw"
            params = _read_tensors(f, path, cfg, weights)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError("%s: cannot be read (truncated or damaged file?): %s" % (path, reason)) from None
    bad = [n for n, a in params.items() if not np.isfinite(a).all()]
    meta = {"config_text": text, "format_version": version, "weights": "raw" if weights == "model" else weights,
            "class_names": svm.class_names(cfg), "nonfinite": bad}
    return cfg, params, meta


def write_atomic(out_path, write_fn):
    """Calls write_fn(tmp_path) for a temporary file in out_path's folder, then
    renames it onto out_path: on any error the temporary file is removed and no
    file appears at out_path (an older one stays untouched). Errors of the
    folder (missing, not writable) become CheckpointError-like OSError lines."""
    folder = os.path.dirname(os.path.abspath(out_path))
    if os.path.isdir(out_path):
        raise OutputError("%s: is a directory; give the output file's name" % out_path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out_path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError("%s: cannot write in %s: %s" % (out_path, folder, e.strerror or e)) from None
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError("%s: cannot write: %s" % (out_path, e.strerror or e)) from None
        raise


class OutputError(Exception):
    """The output file cannot be written (one line naming it and the reason)."""
