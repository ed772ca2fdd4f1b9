"""The 2D piece of ``mambaseg predict`` (:mod:`.pipeline` picks it for a model with ``spatial_dims`` 2): image files
in (PNG/TIF/GIF/JPG/BMP/NIfTI), ``<stem>.png`` masks out (0/255 for binary models, label values otherwise), with
``probs/<stem>.png`` (16-bit probability of foreground) and ``overlays/<stem>.png`` when asked for.

For models trained with a field of view (fundus), the FOV is read from ``--mask`` or estimated from the image by the
plan (:class:`mambaseg.data.plans.Plan2D`), and predictions are zero outside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.errors import DataError
from ...data.io.png import write_overlay, write_png
from ...data.io.raster import read_image, read_mask
from ...data.io.suffixes import SUPPORTED_2D, stem_of, suffix_of
from ...data.plans.fundus import fundus_channels
from ...utils.atomic import atomic_path
from ..inference import logits_to_probs, probs_to_labels
from .job import Job

__all__ = ["Images", "collect_inputs", "find_mask"]


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


def find_mask(mask_dir: Path | None, stem: str) -> Path | None:
    """The field-of-view mask of the image named ``stem`` in ``mask_dir`` (None without a mask folder)."""
    if mask_dir is None:
        return None
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: --mask must be a folder of masks.")
    key = stem.split("_")[0]
    cands = [f for f in sorted(mask_dir.iterdir()) if suffix_of(f) in SUPPORTED_2D]
    for f in cands:
        if stem_of(f) in (stem, stem + "_mask"):
            return f
    for f in cands:
        if stem_of(f).split("_")[0] == key:
            return f
    raise DataError(f"{mask_dir}: no mask for input {stem!r} (expected {stem}.png, {stem}_mask.gif or a file "
                    f"starting with {key}_).")


class Images:
    """What 2D prediction does its own way; the methods are those :func:`.pipeline.predict_with` calls."""

    unit = "image"  # the progress line's item
    folders = ("", "probs", "overlays")  # output sub-folders (cleaned of a killed run's temporary files)

    def __init__(self, pred, probs: bool = False, overlay: bool = False, mask: str | Path | None = None):
        self.pred, self.probs, self.overlay = pred, probs, overlay
        self.mask_dir = Path(mask) if mask else None
        self.tile = pred.cfg.infer.patch_size or pred.cfg.data.patch_size

    def gather(self, inp: Path) -> list[tuple[str, str, list[Path]]]:
        """(output name, name shown, files) of every input image."""
        return [(stem_of(f), f.name, [f]) for f in collect_inputs(inp, SUPPORTED_2D)]

    def used_folders(self) -> list[str]:
        """The output folders this run writes into ("" = the output folder itself)."""
        return ["", *(["probs"] if self.probs else []), *(["overlays"] if self.overlay else [])]

    def outputs(self, out: Path, name: str) -> tuple[Path, list[Path]]:
        target = out / f"{name}.png"
        return target, ([out / "probs" / target.name] if self.probs else []) + \
            ([out / "overlays" / target.name] if self.overlay else [])

    def check(self, job: Job) -> None:
        """Before anything is written: the image is readable with the channels the model expects, and its
        field-of-view mask (``--mask``) is found."""
        raw, _ = read_image(job.files[0])
        norm = self.pred.cfg.data.fundus_norm
        if fundus_channels(raw.shape[0], norm) != self.pred.in_channels:
            raise DataError(f"{job.files[0]}: image has {raw.shape[0]} channel(s), the model expects "
                            f"{self.pred.in_channels}{' after data.fundus_norm ' + norm if norm != 'none' else ''}.")
        job.mask = find_mask(self.mask_dir, job.name)

    def settings(self) -> dict:
        """The inference settings of 2D only (recorded in the provenance)."""
        return {"mask": str(self.mask_dir.resolve()) if self.mask_dir else None}

    def preprocessing(self) -> dict:
        """How an image is prepared for the model (recorded in the provenance; mirrors
        :func:`~mambaseg.engine.predict.predict_image_2d`)."""
        plan = self.pred.plan
        norm = plan.fundus_norm
        entries = [dict(e) for e in plan.normalization] if plan.normalization else None
        if norm != "none":
            what = f"data.fundus_norm {norm} (mambaseg.data.plans.fundus)"
        elif entries:
            what = "per-channel entries from the nnU-Net dataset.json channel_names (mambaseg.data.plans.normalize)"
        else:
            what = "per-image, per-channel z-score" + (" inside the field of view" if plan.fov else "")
        return {"spatial_dims": 2, "normalization": what, "normalization_entries": entries, "fundus_norm": norm,
                "fov": plan.fov, "fov_diameter": plan.fov_diameter,
                "channel_names": self.pred.data.get("channel_names")}

    def read(self, job: Job) -> dict:
        """The plan's input: ``image`` (C, H, W) raw and ``mask`` (H, W) or None."""
        f = job.files[0]
        raw, _ = read_image(f)
        m = None
        if job.mask is not None:
            m, _ = read_mask(job.mask)
            if m.shape != raw.shape[1:]:
                raise DataError(f"{job.mask}: mask shape {m.shape} differs from image {f} shape {raw.shape[1:]}.")
        return {"image": raw, "mask": m}

    def inverse(self, logits: torch.Tensor, props: dict, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Labels (H, W) and probabilities (K, H, W) on the image's grid: the plan's inverse of the logits, then
        zero outside the field of view (fundus models)."""
        logits = self.pred.plan.inverse(logits, props)
        probs = logits_to_probs(logits)
        labels = probs_to_labels(probs, threshold).numpy()
        probs = probs.numpy()
        mask = props["mask"]  # the field of view (given or estimated) of a fundus model; None otherwise
        if mask is not None:
            labels = labels * mask
            probs = probs * mask
        return labels, probs

    def write(self, job: Job, case: dict, labels: np.ndarray, probs: np.ndarray) -> Path:
        """``<name>.png`` (and its probabilities / overlay), each complete or absent; the label map last, so it
        marks a finished image."""
        binary = probs.shape[0] == 1
        out = job.target.parent
        if self.probs:
            fg = probs[0] if binary else 1.0 - probs[0]
            from PIL import Image

            with atomic_path(out / "probs" / job.target.name) as tmp:
                Image.fromarray(np.round(fg * 65535).astype(np.uint16)).save(tmp)
        if self.overlay:
            with atomic_path(out / "overlays" / job.target.name) as tmp:
                write_overlay(tmp, case["image"], labels)
        with atomic_path(job.target) as tmp:
            write_png(tmp, (labels * 255 if binary else labels).astype(np.uint8))
        return job.target
