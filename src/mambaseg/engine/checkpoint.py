"""Model files: checkpoints (plain dicts of tensors and primitives, written atomically, read with
``weights_only=True``) and the ``mambaseg`` metadata of ONNX exports, both checked as untrusted input by one field
schema, and :func:`open_model_file`, the one place a model file named on the command line is opened.

A checkpoint holds ``model_name`` + ``model_kwargs`` (the model is rebuilt through the registry, never unpickled),
``state_dict``, optimiser/scheduler/RNG state for resuming, the resolved config, metrics, preprocessing plan and
provenance. A file carrying a pickled object is refused before anything in it runs. An ONNX export carries the same
``config``/``data``/``model_kwargs``/``model_name`` in its ``mambaseg`` metadata property (running it is
:mod:`mambaseg.engine.onnx_runner`'s job).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import build_model
from ..utils.optional import require

__all__ = [
    "stored_config",
    "CHECKPOINT_VERSION",
    "META_KEY",
    "CheckpointError",
    "ModelFile",
    "check_fields",
    "check_finite_weights",
    "check_onnx_metadata",
    "load_checkpoint",
    "model_from_checkpoint",
    "onnx_checkpoint",
    "open_model_file",
    "read_onnx_metadata",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "slim_checkpoint",
    "to_plain",
]

CHECKPOINT_VERSION = 1
META_KEY = "mambaseg"  # the ONNX metadata property holding an export's JSON


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


# ------------------------------------------------------------------------------------- ONNX exports' metadata
def read_onnx_metadata(path: str | Path) -> dict:
    """The ``mambaseg`` metadata JSON of an exported file, checked (:func:`check_onnx_metadata`); ValueError naming
    the file when absent or unreadable."""
    path = Path(path)
    onnx = require("onnx", purpose=f"{path}: reading an ONNX model")
    if not path.is_file():
        raise ValueError(f"{path}: ONNX file not found.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf decode errors have many types
        raise ValueError(f"{path}: cannot read ONNX file ({' '.join(str(e).split())[:160]}).") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise ValueError(f"{path}: not a mambaseg export (no '{META_KEY}' metadata property); export models with "
                         f"`mambaseg export`.")
    try:
        meta = json.loads(props[META_KEY])
    except ValueError as e:
        raise ValueError(f"{path}: the '{META_KEY}' metadata property is not valid JSON ({e}).") from None
    check_onnx_metadata(meta, path)
    return meta


def _bad(path, key: str, expected: str, value) -> CheckpointError:
    text = repr(value)
    return CheckpointError(f"{path}: ONNX metadata key '{key}' must be {expected}, got "
                           f"{text if len(text) <= 60 else text[:57] + '...'}.")


def check_onnx_metadata(meta, path) -> None:
    """Check an export's ``mambaseg`` metadata before it is used: a JSON object with ``model_name``, ``in_channels``
    (positive int), ``spatial_dims`` (2 or 3), ``fixed_size`` (null or ``spatial_dims`` positive ints),
    ``dynamic_batch`` (bool, optional), and ``config``/``data``/``model_kwargs`` of the types a checkpoint holds.

    Raises:
        CheckpointError (a ValueError): one line naming the file and the key.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the '{META_KEY}' ONNX metadata must be a JSON object, got "
                              f"{type(meta).__name__}.")
    for key in ("model_name", "in_channels", "spatial_dims"):
        if key not in meta:
            raise CheckpointError(f"{path}: ONNX metadata key '{key}' is missing (re-export the model with "
                                  f"`mambaseg export`).")
    if not (_is_int(meta["in_channels"]) and meta["in_channels"] >= 1):
        raise _bad(path, "in_channels", "a positive integer", meta["in_channels"])
    if not (_is_int(meta["spatial_dims"]) and meta["spatial_dims"] in (2, 3)):
        raise _bad(path, "spatial_dims", "2 or 3", meta["spatial_dims"])
    fixed = meta.get("fixed_size")
    if fixed is not None and not (isinstance(fixed, list) and len(fixed) == meta["spatial_dims"]
                                  and all(_is_int(s) and s > 0 for s in fixed)):
        raise _bad(path, "fixed_size", f"null or {meta['spatial_dims']} positive integers", fixed)
    if "dynamic_batch" in meta and not isinstance(meta["dynamic_batch"], bool):
        raise _bad(path, "dynamic_batch", "true or false", meta["dynamic_batch"])
    out_ch = meta.get("out_channels")
    if out_ch is not None and not (_is_int(out_ch) and out_ch >= 1):
        raise _bad(path, "out_channels", "null or a positive integer", out_ch)
    check_fields(meta, path, what="ONNX metadata key")  # model_name, config, data, model_kwargs as in checkpoints


def onnx_checkpoint(meta: dict) -> dict:
    """An export's checked metadata in the shape of a checkpoint: ``config``, ``data``, ``model_kwargs``,
    ``model_name`` (plus ``fixed_size``)."""
    fixed = meta.get("fixed_size")
    return {"config": meta.get("config") or {}, "data": meta.get("data") or {},
            "model_kwargs": meta.get("model_kwargs") or {}, "model_name": meta["model_name"],
            "fixed_size": list(fixed) if fixed else None}


# ------------------------------------------------------------------------------------------ opening a model file
@dataclass
class ModelFile:
    """A model file opened and checked once (:func:`open_model_file`).

    Attributes:
        path: the file (a run folder resolved to its checkpoint).
        ckpt: the checkpoint dict, or an ONNX export's metadata in that shape (:func:`onnx_checkpoint`).
        cfg: the stored training config (:func:`stored_config`).
        net: the rebuilt PyTorch model with its weights (eval mode, CPU), None for an ONNX file.
        meta: an ONNX export's checked metadata, None for a checkpoint.
    """

    path: Path
    ckpt: dict
    cfg: object
    net: torch.nn.Module | None = None
    meta: dict | None = None


def open_model_file(model: str | Path, allow_onnx: bool = True) -> ModelFile:
    """Open the model named on the command line once: resolve it (:func:`resolve_checkpoint_path`), read and check
    the checkpoint and rebuild the model, or read and check an ONNX export's metadata (the ``onnx`` and
    ``onnxruntime`` extras asked for first), then the stored config.

    Raises:
        CheckpointError / ValueError: one line naming the file (and the key).
    """
    path = resolve_checkpoint_path(model, allow_onnx)
    if path.suffix == ".onnx":
        require("onnx", purpose=f"{path}: reading an ONNX model")  # the missing extra first, then the file's content
        require("onnxruntime", purpose=f"{path}: running an ONNX model")
        meta = read_onnx_metadata(path)
        ckpt = onnx_checkpoint(meta)
        return ModelFile(path, ckpt, stored_config(ckpt, path), None, meta)
    ckpt = load_checkpoint(path)  # field types checked (one line naming the file and key)
    net = model_from_checkpoint(ckpt, path)  # weights with NaN/Inf refused
    return ModelFile(path, ckpt, stored_config(ckpt, path), net)


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
