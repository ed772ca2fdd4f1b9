"""Running an exported ONNX model: its ``mambaseg`` metadata (read and checked as untrusted input) and an
onnxruntime predictor that plugs into ``mambaseg predict`` like a checkpoint. Writing exports is
:mod:`mambaseg.apps.export`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..utils.optional import require
from .checkpoint import CheckpointError, check_fields

__all__ = ["INPUT_NAME", "META_KEY", "OUTPUT_NAME", "check_onnx_metadata", "onnx_predictor", "onnx_session",
           "read_onnx_metadata"]

META_KEY = "mambaseg"  # the ONNX metadata property holding the export's JSON
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def onnx_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (default: torch's)."""
    ort = require("onnxruntime", purpose=f"{path}: running an ONNX model")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def read_onnx_metadata(path: str | Path) -> dict:
    """The ``mambaseg`` metadata JSON of an exported file (ValueError naming the file when absent or unreadable)."""
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
    def ok_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not (ok_int(meta["in_channels"]) and meta["in_channels"] >= 1):
        raise _bad(path, "in_channels", "a positive integer", meta["in_channels"])
    if not (ok_int(meta["spatial_dims"]) and meta["spatial_dims"] in (2, 3)):
        raise _bad(path, "spatial_dims", "2 or 3", meta["spatial_dims"])
    fixed = meta.get("fixed_size")
    if fixed is not None and not (isinstance(fixed, list) and len(fixed) == meta["spatial_dims"]
                                  and all(ok_int(s) and s > 0 for s in fixed)):
        raise _bad(path, "fixed_size", f"null or {meta['spatial_dims']} positive integers", fixed)
    if "dynamic_batch" in meta and not isinstance(meta["dynamic_batch"], bool):
        raise _bad(path, "dynamic_batch", "true or false", meta["dynamic_batch"])
    out_ch = meta.get("out_channels")
    if out_ch is not None and not (ok_int(out_ch) and out_ch >= 1):
        raise _bad(path, "out_channels", "null or a positive integer", out_ch)
    check_fields(meta, path, what="ONNX metadata key")  # model_name, config, data, model_kwargs as in checkpoints


def onnx_predictor(path: str | Path, threads: int | None = None
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """An onnxruntime (CPU) predictor for an exported file.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx`.
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        ``(run, ckpt)``: ``run(x)`` maps ``x: (n, C_in, *S)`` to float logits ``(n, K, *S)`` (a CPU tensor);
        ``ckpt`` holds ``config``, ``data``, ``model_kwargs``, ``model_name`` like a checkpoint (plus
        ``fixed_size``).

    Raises:
        ValueError: the file is missing / not a mambaseg export; ``run`` raises when ``x`` has the wrong number of
            channels or axes, or differs from the fixed export size (the message names the expected size).
    """
    path = Path(path)
    require("onnx", purpose=f"{path}: reading an ONNX model")  # the missing extra first, then the file's content
    require("onnxruntime", purpose=f"{path}: running an ONNX model")
    meta = read_onnx_metadata(path)
    try:
        sess = onnx_session(path, threads)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: onnxruntime cannot load the model ({' '.join(str(e).split())[:160]}).") from None
    fixed = tuple(meta["fixed_size"]) if meta.get("fixed_size") else None
    in_ch, sdims, dyn_batch = int(meta["in_channels"]), int(meta["spatial_dims"]), bool(meta.get("dynamic_batch"))

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != sdims + 2 or x.shape[1] != in_ch:
            raise ValueError(f"{path}: input must be (n, {in_ch}, {'H, W' if sdims == 2 else 'D, H, W'}), got shape "
                             f"{tuple(x.shape)}.")
        if fixed is not None and tuple(x.shape[2:]) != fixed:
            raise ValueError(f"{path}: this ONNX model was exported at the fixed size {list(fixed)}, got a tile of "
                             f"{list(x.shape[2:])}; predict with tiles of {list(fixed)} (infer.patch_size) or "
                             f"re-export with --size {' '.join(str(s) for s in x.shape[2:])}.")
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        if dyn_batch:
            y = sess.run(None, {INPUT_NAME: arr})[0]
        else:
            y = np.concatenate([sess.run(None, {INPUT_NAME: arr[i:i + 1]})[0] for i in range(arr.shape[0])])
        return torch.from_numpy(y).float()

    ckpt = {"config": meta.get("config") or {}, "data": meta.get("data") or {},
            "model_kwargs": meta.get("model_kwargs") or {}, "model_name": meta["model_name"],
            "fixed_size": list(fixed) if fixed else None}
    return run, ckpt
