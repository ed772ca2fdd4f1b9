"""ONNX export of trained models (the onnxruntime predictor that plugs into ``mambaseg predict`` is
:mod:`mambaseg.engine.onnx_runner`, re-exported here).

:func:`export_onnx` rebuilds the model from a checkpoint (through the registry) and exports it with the TorchScript
exporter (``torch.onnx.export(..., dynamo=False, opset_version=17)``). Input ``image`` (B, C_in, *S), output
``logits`` (B, K, *S).

* Mamba models (any :class:`~mambaseg.nn.ss2d.SS2D` or :class:`~mambaseg.nn.mamba.MultiDirMamba` inside) are traced
  with the chunked scan's Python loops unrolled for one sequence length, so they are exported at a FIXED spatial
  size: ``--size`` or, by default, the checkpoint's inference tile (``config.infer.patch_size``, else
  ``config.data.patch_size``, else the 3D plan's patch size) — the tile ``mambaseg predict`` uses.
* Other models first try dynamic spatial axes; the export is checked with onnxruntime against PyTorch at a second,
  differently padded size, and falls back to a fixed size when that fails (e.g. the pad-to-multiple logic of the
  any-size wrapper is traced as constants).
* The batch axis is dynamic when an onnxruntime check at batch 2 agrees with PyTorch, else fixed to 1 (the predictor
  then runs tiles one by one).

The ONNX file carries the metadata property ``mambaseg``: a JSON object with ``model_name``, ``model_kwargs``,
``config``, ``data`` (the checkpoint's data dict: 3D preprocessing plan, ``spatial_dims``, ``fov_diameter``),
``fixed_size`` (list or null), ``in_channels``, ``out_channels``, ``spatial_dims``, ``dynamic_batch``, ``opset`` and
``check_max_abs_diff`` (onnxruntime vs PyTorch on random input during export).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..engine.checkpoint import (
    META_KEY,
    check_onnx_metadata,
    load_checkpoint,
    model_from_checkpoint,
    read_onnx_metadata,
    resolve_checkpoint_path,
    stored_config,
)
from ..engine.onnx_runner import INPUT_NAME, OUTPUT_NAME, onnx_predictor, onnx_session
from ..engine.outputs import check_apart
from ..nn.backend import scan_backend
from ..utils.atomic import atomic_path
from ..utils.jsonable import to_jsonable
from ..utils.optional import require

__all__ = ["META_KEY", "OPSET", "check_onnx_metadata", "default_export_size", "export_onnx", "is_mamba_model",
           "onnx_predictor", "read_onnx_metadata"]

logger = logging.getLogger(__name__)
OPSET = 17


def is_mamba_model(net: torch.nn.Module) -> bool:
    """True when ``net`` contains an SS2D or MultiDirMamba module (its scan is traced for one sequence length)."""
    from ..nn.mamba import MultiDirMamba
    from ..nn.ss2d import SS2D

    return any(isinstance(m, (SS2D, MultiDirMamba)) for m in net.modules())


def _spatial_dims(ckpt: dict) -> int:
    sd = (ckpt.get("data") or {}).get("spatial_dims")
    if sd is None:
        from ..models.registry import model_entry

        sd = model_entry(ckpt["model_name"])[1]
    return int(sd)


def default_export_size(ckpt: dict, path: str | Path = "checkpoint") -> list[int] | None:
    """The tile ``mambaseg predict`` uses for this checkpoint: ``config.infer.patch_size``, else the 3D plan's
    ``patch_size`` (3D) or ``config.data.patch_size`` (2D; the config's default when the stored config has none)."""
    cfg = stored_config(ckpt, path)
    plan = (ckpt.get("data") or {}).get("plan") or {}
    order = [cfg.infer.patch_size] + ([plan.get("patch_size")] if plan else []) + [cfg.data.patch_size]
    for size in order:
        if size:
            return [int(s) for s in to_jsonable(size)]
    return None


def _resolve_checkpoint(model: str | Path) -> Path:
    return resolve_checkpoint_path(model, allow_onnx=False)


def _export_once(net: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool,
                 dynamic_spatial: bool) -> None:
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_spatial:
        axes.update({2 + i: f"s{i}" for i in range(example.dim() - 2)})
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: dict(axes)} if axes else None
    with scan_backend(net, "chunked"):  # the traceable pure-PyTorch scan (not a compiled kernel)
        _trace(net, example, path, dynamic_axes)


def _trace(net: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_axes: dict | None) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings ("might cause the trace to be incorrect") are expected: the export is checked numerically
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True)


def _check(net: torch.nn.Module, path: Path, inputs: Sequence[torch.Tensor]) -> float | None:
    """Max |onnxruntime − PyTorch| over ``inputs``; None when onnxruntime fails or the outputs disagree."""
    try:
        import onnxruntime as ort

        sess = onnx_session(path)
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # failures are expected here (fixed shapes); they are logged below
        worst = 0.0
        for x in inputs:
            with torch.no_grad():
                ref = net(x).float().numpy()
            got = sess.run(None, {INPUT_NAME: x.numpy()}, quiet)[0]
            if got.shape != ref.shape:
                return None
            diff = float(np.abs(got - ref).max())
            if not np.isfinite(diff) or diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
                logger.info("export check: max abs difference %.3g for input %s", diff, tuple(x.shape))
                return None
            worst = max(worst, diff)
        return worst
    except Exception as e:  # noqa: BLE001 - any onnxruntime failure means "this export variant does not work"
        logger.info("export check failed for inputs %s: %s", [tuple(x.shape) for x in inputs],
                    " ".join(str(e).split())[:200])
        return None


def _second_size(size: Sequence[int]) -> list[int]:
    """A different spatial size with a different remainder modulo 16 (exercises padding paths)."""
    return [int(s) + 5 if int(s) > 8 else int(s) + 3 for s in size]


def export_onnx(model: str | Path, out: str | Path, size: Sequence[int] | None = None, overwrite: bool = False,
                seed: int = 0) -> dict:
    """Export a trained model (run folder or ``.pt`` checkpoint) to ONNX and check it with onnxruntime.

    Args:
        model: run folder (``checkpoint_best.pt`` / ``checkpoint_last.pt``) or checkpoint file.
        out: destination ``.onnx`` file; never overwritten unless ``overwrite``.
        size: spatial export size (H, W) or (D, H, W); default: the checkpoint's inference tile.
        overwrite: replace an existing ``out``.
        seed: seed of the random check inputs.

    Returns:
        The metadata dict stored in the file (see the module docstring) plus ``path``.

    Raises:
        ValueError: ``out`` exists (without ``overwrite``), does not end in ``.onnx``, ``size`` has the wrong
            number of axes or non-positive entries, or no size can be determined; CheckpointError (a ValueError)
            for unusable checkpoints. RuntimeError when no export variant reproduces the PyTorch outputs.
    """
    onnx = require("onnx", purpose="mambaseg export")
    require("onnxruntime", purpose="mambaseg export (it checks the exported model)")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"out must end in '.onnx', got {str(out)!r}.")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"{out}: output already exists (use --overwrite to replace it).")
    if out.exists() and out.is_dir():
        raise ValueError(f"{out}: output is a folder, expected an .onnx file path.")
    ckpt_path = _resolve_checkpoint(model)
    check_apart(out_files=[out], in_files=[ckpt_path], option="--onnx")  # links resolved
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt, ckpt_path).float().eval()
    sdims = _spatial_dims(ckpt)
    if size is None:
        size = default_export_size(ckpt, ckpt_path)
        if size is None:
            raise ValueError(f"{ckpt_path}: checkpoint config has no infer.patch_size or data.patch_size; pass the "
                             f"export size with --size ({'H W' if sdims == 2 else 'D H W'}).")
    size = [int(s) for s in size]
    if len(size) != sdims or any(s < 1 for s in size):
        raise ValueError(f"size must be {sdims} positive ints ({'H W' if sdims == 2 else 'D H W'}) for the "
                         f"{sdims}D model {ckpt['model_name']!r}, got {size}.")
    kwargs = dict(ckpt.get("model_kwargs") or {})
    in_ch = int(kwargs.get("in_channels", getattr(net, "in_channels", 1)))
    mamba = is_mamba_model(net)
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(1, in_ch, *size, generator=gen)
    x2 = torch.randn(2, in_ch, *size, generator=gen)
    x3 = torch.randn(1, in_ch, *_second_size(size), generator=gen)
    # (dynamic batch, dynamic spatial, check inputs), most general first
    variants = [(True, False, [x2]), (False, False, [x1])]
    if not mamba:
        variants.insert(0, (True, True, [x2, x3]))
    # written to a hidden temporary name next to ``out`` and renamed once complete (mambaseg.utils.atomic): a kill
    # or a full disk never leaves a partial .onnx under the final name
    with atomic_path(out) as tmp:
        chosen = None
        for dyn_batch, dyn_spatial, inputs in variants:
            _export_once(net, x1, tmp, dyn_batch, dyn_spatial)
            diff = _check(net, tmp, inputs)
            if diff is not None:
                chosen = (dyn_batch, dyn_spatial, diff)
                break
            logger.info("export variant dynamic_batch=%s dynamic_spatial=%s rejected", dyn_batch, dyn_spatial)
        if chosen is None:
            raise RuntimeError(f"{ckpt_path}: the ONNX export of {ckpt['model_name']!r} does not reproduce the "
                               f"PyTorch outputs at size {size} (checked with onnxruntime).")
        dyn_batch, dyn_spatial, diff = chosen
        out_channels = int(kwargs.get("out_channels", 0)) or None
        meta = {
            "model_name": ckpt["model_name"], "model_kwargs": to_jsonable(kwargs),
            "config": to_jsonable(ckpt.get("config") or {}), "data": to_jsonable(ckpt.get("data") or {}),
            "fixed_size": None if dyn_spatial else size, "in_channels": in_ch, "out_channels": out_channels,
            "spatial_dims": sdims, "dynamic_batch": dyn_batch, "export_size": size, "opset": OPSET,
            "mamba": mamba, "check_max_abs_diff": diff, "source": str(ckpt_path),
        }
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
        onnx.save(proto, str(tmp))
    logger.info("exported %s to %s (fixed size %s, dynamic batch %s, max abs diff %.2g)", ckpt["model_name"], out,
                meta["fixed_size"], dyn_batch, diff)
    return dict(meta, path=str(out))
