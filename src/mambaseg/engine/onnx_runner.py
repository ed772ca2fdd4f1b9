"""Running an exported ONNX model: an onnxruntime predictor that plugs into ``mambaseg predict`` like a checkpoint.
Its ``mambaseg`` metadata is read and checked as untrusted input with the checkpoints' field schema
(:func:`mambaseg.engine.checkpoint.read_onnx_metadata`); writing exports is :mod:`mambaseg.apps.export`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..utils.optional import require
from .checkpoint import onnx_checkpoint, read_onnx_metadata

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "onnx_predictor", "onnx_run", "onnx_session"]

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def onnx_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (default: torch's)."""
    ort = require("onnxruntime", purpose=f"{path}: running an ONNX model")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_run(path: str | Path, meta: dict, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The onnxruntime (CPU) forward of an export whose metadata ``meta`` was read and checked
    (:func:`~mambaseg.engine.checkpoint.read_onnx_metadata`): ``run(x)`` maps ``x: (n, C_in, *S)`` to float logits
    ``(n, K, *S)`` (a CPU tensor).

    Raises:
        ValueError: onnxruntime cannot load the file; ``run`` raises when ``x`` has the wrong number of channels or
            axes, or differs from the fixed export size (the message names the expected size).
    """
    path = Path(path)
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

    return run


def onnx_predictor(path: str | Path, threads: int | None = None
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """An onnxruntime (CPU) predictor for an exported file.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx`.
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        ``(run, ckpt)``: ``run`` as in :func:`onnx_run`; ``ckpt`` holds ``config``, ``data``, ``model_kwargs``,
        ``model_name`` like a checkpoint (plus ``fixed_size``).

    Raises:
        ValueError: the file is missing / not a mambaseg export, or see :func:`onnx_run`.
    """
    path = Path(path)
    require("onnx", purpose=f"{path}: reading an ONNX model")  # the missing extra first, then the file's content
    require("onnxruntime", purpose=f"{path}: running an ONNX model")
    meta = read_onnx_metadata(path)
    return onnx_run(path, meta, threads), onnx_checkpoint(meta)
