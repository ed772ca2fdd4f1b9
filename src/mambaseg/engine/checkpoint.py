"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with ``weights_only=True``.

A checkpoint holds ``model_name`` + ``model_kwargs`` (the model is rebuilt through the registry, never unpickled),
``state_dict``, optimiser/scheduler/RNG state for resuming, the resolved config, metrics, preprocessing plan and
provenance. A file carrying a pickled object is refused before anything in it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from ..models import build_model

__all__ = ["CheckpointError", "resolve_checkpoint_path", "to_plain", "save_checkpoint", "slim_checkpoint", "load_checkpoint", "model_from_checkpoint", "CHECKPOINT_VERSION"]

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
    return ckpt


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


def state_dict_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


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
