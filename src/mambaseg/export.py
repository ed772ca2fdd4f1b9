"""ONNX export of trained models and an onnxruntime predictor that plugs into ``mambaseg predict``.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .engine.checkpoint import (
    CheckpointError,
    check_fields,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint_path,
)
from .utils.atomic import atomic_path
from .utils.jsonable import to_jsonable
from .utils.optional import require

__all__ = ["META_KEY", "OPSET", "check_onnx_metadata", "default_export_size", "export_onnx", "is_mamba_model",
           "onnx_predictor", "read_onnx_metadata"]

logger = logging.getLogger(__name__)
META_KEY = "mambaseg"
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def is_mamba_model(net: torch.nn.Module) -> bool:
    """True when ``net`` contains an SS2D or MultiDirMamba module (its scan is traced for one sequence length)."""
    from .nn.mamba import MultiDirMamba
    from .nn.ss2d import SS2D

    return any(isinstance(m, (SS2D, MultiDirMamba)) for m in net.modules())


def _spatial_dims(ckpt: dict) -> int:
    sd = (ckpt.get("data") or {}).get("spatial_dims")
    if sd is None:
        from .models.registry import model_entry

        sd = model_entry(ckpt["model_name"])[1]
    return int(sd)


def default_export_size(ckpt: dict) -> list[int] | None:
    """The tile ``mambaseg predict`` uses for this checkpoint: ``config.infer.patch_size``, else the 3D plan's
    ``patch_size`` (3D) or ``config.data.patch_size`` (2D); None when none is set."""
    cfg = ckpt.get("config") or {}
    plan = (ckpt.get("data") or {}).get("plan") or {}
    order = [(cfg.get("infer") or {}).get("patch_size")]
    order += [plan.get("patch_size"), (cfg.get("data") or {}).get("patch_size")] if plan else \
        [(cfg.get("data") or {}).get("patch_size")]
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
    old_backend = os.environ.get("MAMBASEG_SCAN_BACKEND")
    os.environ["MAMBASEG_SCAN_BACKEND"] = "chunked"  # the traceable pure-PyTorch scan (not a compiled kernel)
    try:
        _trace(net, example, path, dynamic_axes)
    finally:
        if old_backend is None:
            os.environ.pop("MAMBASEG_SCAN_BACKEND", None)
        else:
            os.environ["MAMBASEG_SCAN_BACKEND"] = old_backend


def _trace(net: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_axes: dict | None) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings ("might cause the trace to be incorrect") are expected: the export is checked numerically
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True)


def _session(path: Path, threads: int | None = None):
    ort = require("onnxruntime", purpose=f"{path}: running an ONNX model")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check(net: torch.nn.Module, path: Path, inputs: Sequence[torch.Tensor]) -> float | None:
    """Max |onnxruntime − PyTorch| over ``inputs``; None when onnxruntime fails or the outputs disagree."""
    try:
        import onnxruntime as ort

        sess = _session(path)
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
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: output already exists (use --overwrite to replace it).")
    if out.exists() and out.is_dir():
        raise ValueError(f"{out}: output is a folder, expected an .onnx file path.")
    ckpt_path = _resolve_checkpoint(model)
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt, ckpt_path).float().eval()
    sdims = _spatial_dims(ckpt)
    if size is None:
        size = default_export_size(ckpt)
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
        sess = _session(path, threads)
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
