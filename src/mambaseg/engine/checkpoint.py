"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with ``weights_only=True``.

A checkpoint holds ``model_name`` + ``model_kwargs`` (the model is rebuilt through the registry, never unpickled),
``state_dict``, optimiser/scheduler/RNG state for resuming, the resolved config, metrics, preprocessing plan and
provenance. A file carrying a pickled object is refused before anything in it runs.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from ..models import build_model

__all__ = [
    "stored_config",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_fields",
    "check_finite_weights",
    "load_checkpoint",
    "model_from_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "slim_checkpoint",
    "to_plain",
]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used (one-line message naming the file)."""


def to_plain(obj):
    """Tensors and plain python types only (str subclasses, numpy scalars and tuples converted), so the file loads
    with ``weights_only=True``."""
    import numpy as np

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    raise TypeError(f"checkpoint value of type {type(obj).__name__} is not a tensor or plain python value.")


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically: temporary file in the same folder, flush + fsync, rename.

    Everything is converted to tensors and plain python values first (see :func:`to_plain`)."""
    path = Path(path)
    obj = {k: (v if k in ("state_dict", "optimizer") else to_plain(v)) for k, v in obj.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(obj, checkpoint_version=CHECKPOINT_VERSION), f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``); clear errors for missing, truncated or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (0 bytes).")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a mambaseg checkpoint (not a torch zip archive; truncated or corrupt?).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused, the checkpoint carries a pickled object that could run code "
                              f"({first[:160]}).") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({str(e).splitlines()[0][:160]}).") from None
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a mambaseg checkpoint (expected keys model_name, state_dict).")
    check_fields(ckpt, path)
    return ckpt


# ------------------------------------------------------------------------------ fields read by predict / export
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(lengths: tuple[int, ...]):
    return lambda v: isinstance(v, (list, tuple)) and len(v) in lengths and all(_is_int(x) and x > 0 for x in v)


def _mapping_or_none(v) -> bool:
    return v is None or isinstance(v, dict)


_NORM_SCHEMES = ("zscore_nonzero", "zscore_brain", "zscore", "ct", "ct_window", "none", "rescale_to_0_1",
                 "rgb_to_0_1")  # = preprocess.NORM_SCHEMES


def _norm_entries(v) -> bool:
    if not isinstance(v, (list, tuple)) or not v:
        return False
    for e in v:
        if not isinstance(e, dict) or e.get("scheme") not in _NORM_SCHEMES:
            return False
        if e["scheme"] in ("ct", "ct_window") and not all(_is_num(e.get(k)) for k in ("lower", "upper")):
            return False
        if e["scheme"] == "ct" and not (_is_num(e.get("mean")) and _is_num(e.get("std")) and e["std"] > 0):
            return False
    return True


# dotted key -> (check, what is expected); a key that is absent is not checked (defaults apply), None counts as absent
# for the optional values. These are the values predict (2D and 3D) and export read from a checkpoint or ONNX file.
_FIELDS: dict[str, tuple] = {
    "model_name": (lambda v: isinstance(v, str) and bool(v.strip()), "a model name (string)"),
    "model_kwargs": (_mapping_or_none, "a mapping"),
    "model_kwargs.in_channels": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "model_kwargs.out_channels": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "config": (_mapping_or_none, "a mapping (the resolved training config)"),
    "config.data": (lambda v: isinstance(v, dict), "a mapping"),
    "config.infer": (lambda v: isinstance(v, dict), "a mapping"),
    "config.data.patch_size": (lambda v: v is None or _ints((0, 2, 3))(v), "2 or 3 positive integers"),
    "config.data.fov": (lambda v: isinstance(v, bool), "true or false"),
    "config.data.fundus_norm": (lambda v: isinstance(v, str), "a string (none, fov_zscore or green_clahe)"),
    "config.data.num_classes": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "config.infer.patch_size": (lambda v: v is None or _ints((0, 2, 3))(v), "[] or 2 or 3 positive integers"),
    "config.infer.overlap": (lambda v: _is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "config.infer.mode": (lambda v: v in ("gaussian", "constant"), "gaussian or constant"),
    "config.infer.batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "config.infer.threshold": (lambda v: (isinstance(v, str) and v.strip().lower() == "auto")
                               or (_is_num(v) and 0 <= v <= 1), "a number in [0, 1] or auto"),
    "config.infer.tta": (lambda v: isinstance(v, bool), "true or false"),
    "data": (_mapping_or_none, "a mapping"),
    "data.spatial_dims": (lambda v: v in (2, 3) and _is_int(v), "2 or 3"),
    "data.fov_diameter": (lambda v: v is None or (_is_num(v) and v > 0), "a positive number"),
    "data.threshold": (lambda v: v is None or (_is_num(v) and 0 <= v <= 1), "a number in [0, 1]"),
    "data.labels": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) and _is_int(x)
                                                                         for k, x in v.items())),
                    "a mapping of class names to integer label values"),
    "data.plan": (_mapping_or_none, "a mapping (the 3D preprocessing plan)"),
    "data.case_folders": (_mapping_or_none, "a mapping (channel and label file patterns of case folders)"),
    "data.plan.patch_size": (_ints((3,)), "3 positive integers"),
    "data.plan.target_spacing": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3
                                 and all(_is_num(x) and x > 0 for x in v), "3 positive numbers (mm)"),
    "data.plan.normalization": (_norm_entries, "a list of {scheme: " + " | ".join(_NORM_SCHEMES) + ", ...} entries"),
    "data.plan.crop_nonzero": (lambda v: isinstance(v, bool), "true or false"),
    "data.plan.image_order": (lambda v: _is_int(v) and 0 <= v <= 5, "an integer in [0, 5]"),
}
_REQUIRED_IN_PLAN = ("patch_size", "target_spacing", "normalization")


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def stored_config(ckpt: dict, path):
    """The training config stored in a checkpoint (or ONNX metadata) as a :class:`~mambaseg.config.Config`, checked
    key by key like a config file; missing keys take the dataclasses' defaults (the only place they are stated).

    Raises:
        CheckpointError: one line naming ``path`` and the key.
    """
    from ..config import ConfigError, config_from_dict

    try:
        return config_from_dict(ckpt.get("config") or {})
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored config: {e}") from None


def check_fields(meta: dict, path, what: str = "checkpoint key") -> None:
    """Check the types and ranges of the values predict/export read from a checkpoint (or an ONNX file's metadata:
    ``what='ONNX metadata key'``), so an untrusted file gives one line naming it and the key instead of an
    ``AttributeError``/``KeyError`` deep inside inference.

    Raises:
        CheckpointError: ``"<path>: <what> 'config.infer' must be a mapping, got 'abc'."``
    """
    for key, (ok, expected) in _FIELDS.items():
        parent, _, leaf = key.rpartition(".")
        node = meta
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        if not ok(node[leaf]):
            raise CheckpointError(f"{path}: {what} '{key}' must be {expected}, got {_shown(node[leaf])}.")
    plan = (meta.get("data") or {}).get("plan")
    if isinstance(plan, dict):
        for k in _REQUIRED_IN_PLAN:
            if k not in plan:
                raise CheckpointError(f"{path}: {what} 'data.plan.{k}' is missing (the 3D preprocessing plan needs "
                                      f"{', '.join(_REQUIRED_IN_PLAN)}).")


def check_finite_weights(state: dict, path) -> None:
    """Refuse weights holding NaN/Inf (a diverged training): they would predict garbage without any error."""
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: the weights contain non-finite values (NaN/Inf: {n} in {key!r}); the "
                                  f"training diverged - use an earlier checkpoint.")


def resolve_checkpoint_path(model: str | Path, allow_onnx: bool = True) -> Path:
    """A run folder (-> its ``checkpoint_best.pt``, else ``checkpoint_last.pt``), a ``.pt`` file or (when allowed) an
    ``.onnx`` file; clear errors otherwise."""
    p = Path(model)
    if p.is_dir():
        for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run folder has no checkpoint_best.pt or checkpoint_last.pt.")
    if not p.exists():
        what = "a run folder, a .pt checkpoint or an .onnx file" if allow_onnx else "a run folder or a .pt checkpoint"
        raise CheckpointError(f"{p}: model not found (expected {what}).")
    if p.suffix == ".onnx" and not allow_onnx:
        raise CheckpointError(f"{p}: is already an ONNX file; export needs a run folder or a .pt checkpoint.")
    from ..resources import check_shipped

    check_shipped(p)  # a shipped model's weight file, however named: its SHA-256 checked before it is loaded
    return p


def _check_shapes_before_building(name: str, kwargs: dict, state: dict, path) -> None:
    """Build the model on the ``meta`` device (no memory) and compare its tensors' shapes with the checkpoint's, so
    that an untrusted checkpoint's ``model_kwargs`` (e.g. widths of 10^6) cannot make us allocate more than the
    weights it actually carries."""
    try:
        with torch.device("meta"):
            probe = build_model(name, **dict(kwargs))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model {name!r}: {e}") from None
    except Exception:  # noqa: BLE001 - a model whose constructor cannot run on meta: the strict load still checks
        return
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    for key, shape in expected.items():
        got = state.get(key)
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{path}: weights do not match model {name!r} with its model_kwargs (tensor "
                                  f"{key!r} missing).")
        if tuple(got.shape) != shape:
            raise CheckpointError(f"{path}: weights do not match model {name!r} with its model_kwargs ({key!r} is "
                                  f"{tuple(got.shape)} in the file, the model needs {shape}).")


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the model through the registry and load its weights (strict; mismatches give a clear error)."""
    kwargs = ckpt.get("model_kwargs") or {}
    state = ckpt.get("state_dict")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: 'model_kwargs' must be a mapping, got {type(kwargs).__name__}.")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' must be a mapping of tensors, got {type(state).__name__}.")
    _check_shapes_before_building(ckpt["model_name"], kwargs, state, path)
    check_finite_weights(state, path)
    try:
        model = build_model(ckpt["model_name"], **dict(kwargs))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild model {ckpt['model_name']!r}: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{path}: weights do not match model {ckpt['model_name']!r} ({msg}).") from None
    model.eval()
    return model


SHIP_KEYS = ("model_name", "model_kwargs", "state_dict", "config", "data", "metrics", "best_val_dice", "history",
             "provenance", "train_seconds", "epoch")


def slim_checkpoint(src: str | Path, dst: str | Path, extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write a shippable copy of a checkpoint: model, config, data/plan, metrics and provenance, without optimiser,
    scheduler or RNG state (so it is about the size of the weights). ``extra`` (e.g. test metrics) is added."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst}: already exists (pass overwrite=True to replace it).")
    ck = load_checkpoint(src)
    slim = {k: ck[k] for k in SHIP_KEYS if k in ck}
    slim["source_checkpoint"] = str(src)
    if extra:
        slim.update(extra)
    save_checkpoint(slim, dst)
    return dst
