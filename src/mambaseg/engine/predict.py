"""``mambaseg predict``: segment 2D images (PNG/TIF/GIF/JPG/BMP/NIfTI) or 3D volumes with a trained model.

2D: full-image inference by overlapping tiles; ``<stem>.png`` masks (0/255 for binary models, label values
otherwise), optional ``probs/<stem>.png`` (16-bit probability of foreground) and ``overlays/<stem>.png``. For
models trained with a field of view (fundus), the FOV is read from ``--mask`` or estimated from the image, and
photos from other cameras are rescaled so their FOV diameter matches the training data before inference.
3D: see :mod:`mambaseg.engine.predict3d`. Both write ``predict_provenance.json`` next to the predictions (model,
checkpoint SHA-256, training config, preprocessing, inference settings, versions, command line): see
:mod:`mambaseg.engine.predict_provenance`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.fundus import fundus_channels
from ..data.io import SUPPORTED_2D, DataError, read_image, read_mask, suffix_of, write_overlay, write_png
from ..data.plans import Plan2D, Plan3D, plan_from_checkpoint
from ..utils.atomic import atomic_path, clean_stale_temp
from ..utils.progress import ItemProgress, StatusLine
from .checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path, stored_config
from .inference import logits_to_probs, probs_to_labels, sliding_window
from .outputs import check_existing, check_output_dir
from .threshold import resolve_threshold

__all__ = ["Predictor", "collect_inputs", "load_predictor", "predict"]

logger = logging.getLogger(__name__)


class Predictor:
    """A model (PyTorch or ONNX) plus the configuration it was trained with."""

    def __init__(self, run, ckpt: dict, source: Path, device: torch.device):
        self.run = run  # callable (n, C, *S) tensor -> (n, K, *S) logits
        # fields checked by checkpoint.check_fields (types) when the file was read; absent/None sections are {}
        ckpt = dict(ckpt, config=ckpt.get("config") or {}, data=ckpt.get("data") or {},
                    model_kwargs=ckpt.get("model_kwargs") or {})
        self.ckpt = ckpt
        self.source = source
        self.device = device
        self.config = ckpt["config"]  # the stored dict, as recorded (provenance)
        self.cfg = stored_config(ckpt, source)  # the same through the dataclasses: every default stated once there
        self.in_channels = int(ckpt["model_kwargs"].get("in_channels", 1))
        self.spatial_dims = int(ckpt["data"].get("spatial_dims", 2))
        self._plan = None

    @property
    def plan(self) -> Plan2D | Plan3D:
        """The preprocessing plan the model was trained with (:func:`mambaseg.data.plans.plan_from_checkpoint`)."""
        if self._plan is None:
            self._plan = plan_from_checkpoint(self.cfg, self.ckpt["data"], str(self.source))
        return self._plan


def load_predictor(model: str | Path, device: str = "auto") -> Predictor:
    """Load a run folder / checkpoint (PyTorch) or an exported ``.onnx`` file (onnxruntime)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    path = resolve_checkpoint_path(model)
    if path.suffix == ".onnx":
        from .onnx_runner import onnx_predictor

        run, ckpt = onnx_predictor(path)
        return Predictor(run, ckpt, path, torch.device("cpu"))
    ckpt = load_checkpoint(path)  # field types checked (one line naming the file and key)
    net = model_from_checkpoint(ckpt, path).to(dev)  # weights with NaN/Inf refused

    def run(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(dev)).float()

    return Predictor(run, ckpt, path, dev)


def collect_inputs(inp: str | Path, suffixes) -> list[Path]:
    """The input file, or the supported files of the input folder (sorted); clear errors otherwise."""
    p = Path(inp)
    if not p.exists():
        raise DataError(f"{p}: input not found.")
    if p.is_file():
        if suffix_of(p) not in suffixes:
            raise DataError(f"{p}: unsupported file type; expected one of {', '.join(suffixes)}.")
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and suffix_of(f) in suffixes)
    if not files:
        raise DataError(f"{p}: folder has no input files ({', '.join(suffixes)}).")
    return files


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(suffix_of(path))] if suffix_of(path) else path.stem


def _find_mask(mask_dir: Path | None, stem: str) -> Path | None:
    if mask_dir is None:
        return None
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: --mask must be a folder of masks.")
    key = stem.split("_")[0]
    cands = [f for f in sorted(mask_dir.iterdir()) if suffix_of(f) in SUPPORTED_2D]
    for f in cands:
        if _stem(f) in (stem, stem + "_mask"):
            return f
    for f in cands:
        if _stem(f).split("_")[0] == key:
            return f
    raise DataError(f"{mask_dir}: no mask for input {stem!r} (expected {stem}.png, {stem}_mask.gif or a file "
                    f"starting with {key}_).")


def predict_image_2d(pred: Predictor, raw: np.ndarray, mask: np.ndarray | None, overlap: float, tta: bool,
                     progress: bool = False, callback=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (K, H, W) and labels (H, W) of one raw image (C, H, W) (un-normalised): the plan's forward,
    the sliding window, the plan's inverse; ``callback(tiles_done, tiles)`` as in
    :func:`~mambaseg.engine.inference.sliding_window`."""
    infer_cfg = pred.cfg.infer
    image, props = pred.plan.forward({"image": raw, "mask": mask})
    tile = infer_cfg.patch_size or pred.cfg.data.patch_size
    axes = (0, 1) if tta else ()
    logits = sliding_window(pred.run, torch.from_numpy(image), tile, overlap, infer_cfg.mode, infer_cfg.batch_size,
                            axes, progress, callback, getattr(pred, "device", None), infer_cfg.stitch_device).cpu()
    logits = pred.plan.inverse(logits, props)
    probs = logits_to_probs(logits)
    labels = probs_to_labels(probs, resolve_threshold(pred.config, pred.ckpt.get("data"))).numpy()
    probs = probs.numpy()
    mask = props["mask"]  # the field of view (given or estimated) of a fundus model; None otherwise
    if mask is not None:
        labels = labels * mask
        probs = probs * mask
    return probs, labels


def predict(model: str | Path, inp: str | Path, out: str | Path, overlay: bool = False, probs: bool = False,
            mask: str | Path | None = None, tta: bool = False, overlap: float | None = None,
            overwrite: bool = False, progress: bool = True, device: str = "auto",
            skip_existing: bool = False, command: list[str] | None = None) -> list[Path]:
    """Segment every supported file in ``inp`` and write the results to ``out`` (never into the input folder).

    Every output is written to a temporary name in its folder and renamed, so a killed run leaves no partial file
    under a final name; ``skip_existing`` (``--continue``) skips the inputs whose outputs already exist.
    ``out/predict_provenance.json`` records what made the predictions (``command``: the command line to record,
    default ``sys.argv``); see :mod:`mambaseg.engine.predict_provenance`.

    Returns:
        The written label files (skipped ones are not listed).
    """
    check_existing([], overwrite, skip_existing)  # conflicting options: before the model is loaded
    if mask and not Path(mask).exists():
        raise DataError(f"{mask}: --mask folder not found.")
    pred = load_predictor(model, device)
    tta = tta or pred.cfg.infer.tta  # mirroring TTA: asked for here, or set by the model's config (infer.tta)
    if pred.spatial_dims == 3:
        from .predict3d import predict_volumes

        return predict_volumes(pred, inp, out, tta=tta, overlap=overlap, overwrite=overwrite, progress=progress,
                               skip_existing=skip_existing, probs=probs, overlay=overlay, mask=mask, command=command)
    out, inp = Path(out), Path(inp)
    files = collect_inputs(inp, SUPPORTED_2D)
    check_output_dir(out, inp)
    stems = [_stem(f) for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise DataError(f"{inp}: several inputs share the name {min(dup)!r}; outputs would overwrite each other.")
    targets = [out / f"{s}.png" for s in stems]
    extra = {t: ([out / "probs" / t.name] if probs else []) + ([out / "overlays" / t.name] if overlay else [])
             for t in targets}
    done = check_existing(targets, overwrite, skip_existing, extra)
    if done:
        logger.warning("--continue: %d of %d input(s) already have their outputs in %s; skipped", len(done),
                       len(targets), out)
    ov = pred.cfg.infer.overlap if overlap is None else overlap
    mask_dir = Path(mask) if mask else None
    # read and check everything before writing anything
    jobs = []
    for f, s, t in zip(files, stems, targets):
        if t in done:
            continue
        raw, _ = read_image(f)
        norm = pred.cfg.data.fundus_norm
        if fundus_channels(raw.shape[0], norm) != pred.in_channels:
            raise DataError(f"{f}: image has {raw.shape[0]} channel(s), the model expects {pred.in_channels}"
                            f"{' after data.fundus_norm ' + norm if norm != 'none' else ''}.")
        mpath = _find_mask(mask_dir, s)
        jobs.append((f, s, mpath))
    from .predict_provenance import PROVENANCE_NAME, ProvenanceWriter, preprocessing_2d

    infer_cfg = pred.cfg.infer
    settings = {"tile": list(infer_cfg.patch_size or pred.cfg.data.patch_size), "overlap": float(ov),
                "mode": infer_cfg.mode, "batch_size": infer_cfg.batch_size, "tta": bool(tta),
                "mask": str(mask_dir.resolve()) if mask_dir else None, "probs": bool(probs), "overlay": bool(overlay),
                "device": str(getattr(pred, "device", "unknown")), "input": str(inp.resolve())}
    provenance = ProvenanceWriter(out, pred, preprocessing_2d(pred), settings, overwrite, skip_existing, command)
    provenance.check()  # a foreign file of that name, or other predictions' description: refused before writing
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "probs", out / "overlays"):  # leftovers of a killed run
        clean_stale_temp(folder, {t.name for t in targets} | {PROVENANCE_NAME})
    provenance.start([t.name for t in targets], [t.name for t in done])
    written = []
    # one status line on stderr: images and tiles done; redrawn on a terminal, a line per 30 s in a log
    status = ItemProgress(StatusLine(enabled=progress), len(jobs), "image")
    try:
        for i, (f, s, mpath) in enumerate(jobs):
            status.item(i, f.name)
            written.append(_predict_one(pred, f, s, mpath, out, ov, tta, probs, overlay, status.tiles,
                                        provenance.before_write))
    finally:
        status.close()
    provenance.finish(written)
    return written


def _predict_one(pred: Predictor, f: Path, s: str, mpath: Path | None, out: Path, ov: float, tta: bool, probs: bool,
                 overlay: bool, callback, before_write=None) -> Path:
    """Predict one 2D image ``f`` and write ``out/<s>.png`` (and its probabilities / overlay); returns that path.
    ``before_write()``: called once the prediction is computed, before its files are written."""
    raw, _ = read_image(f)
    m = None
    if mpath is not None:
        m, _ = read_mask(mpath)
        if m.shape != raw.shape[1:]:
            raise DataError(f"{mpath}: mask shape {m.shape} differs from image {f} shape {raw.shape[1:]}.")
    p, labels = predict_image_2d(pred, raw, m, ov, tta, callback=callback)
    if before_write is not None:
        before_write()
    binary = p.shape[0] == 1
    # each file appears complete or not at all; the label map last, so it marks a finished case
    if probs:
        fg = p[0] if binary else 1.0 - p[0]
        from PIL import Image

        with atomic_path(out / "probs" / f"{s}.png") as tmp:
            Image.fromarray(np.round(fg * 65535).astype(np.uint16)).save(tmp)
    if overlay:
        with atomic_path(out / "overlays" / f"{s}.png") as tmp:
            write_overlay(tmp, raw, labels)
    with atomic_path(out / f"{s}.png") as tmp:
        write_png(tmp, (labels * 255 if binary else labels).astype(np.uint8))
    return out / f"{s}.png"
