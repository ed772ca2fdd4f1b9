"""The 3D piece of ``mambaseg predict`` (:mod:`.pipeline` picks it for a model with ``spatial_dims`` 3): NIfTI files,
``_0000``-style channel files or BraTS case folders in, ``<case>.nii.gz`` label maps out, in each input's original
geometry (orientation, crop and resampling undone by the checkpoint's plan).

Optional outputs, next to the label maps as nnU-Net's ``--save_probabilities`` puts them:

- ``probs=True``: ``<case>.npz`` with ``probabilities``, float32 ``(K, X, Y, Z)``: one map per class (background
  first; a 1-output sigmoid model gives ``[1 - p, p]``), resampled back to the input's voxel grid - the same
  ``(X, Y, Z)`` voxel array as ``<case>.nii.gz`` (nibabel order, i.e. the NIfTI's i, j, k axes; nnU-Net's
  SimpleITK-read files are ``(K, z, y, x)`` instead) - plus ``<case>.json`` (instead of nnU-Net's pickle): axis
  order, shape, affine, spacing, class labels, activation, source files and model. Outside the cropped
  (non-zero) region the background probability is 1. The label map is computed on the preprocessed grid and
  resampled separately, so at boundaries it can differ from the argmax of the resampled probabilities.
- ``overlay=True``: ``overlays/<case>.png``, see :func:`.overlay.orthogonal_overlay`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ...data.errors import DataError
from ...data.io.headers import check_resample_size, volume_header
from ...data.io.suffixes import VOLUME_SUFFIXES as SUPPORTED_SUFFIXES
from ...data.io.suffixes import volume_suffix
from ...data.io.volume import read_volume, write_nifti
from ...data.records import strip_suffix
from ...utils.atomic import atomic_path, atomic_write_text
from ..inference import logits_to_probs, probs_to_labels
from .job import Job
from .overlay import orthogonal_overlay

__all__ = ["Volumes", "gather_volume_cases"]


def gather_volume_cases(inp: Path, spec=None) -> list[tuple[str, list[Path]]]:
    """(case id, channel files) for a file, a folder of volumes (``CASE_0000`` channel suffixes grouped) or a folder
    of BraTS case folders (or one BraTS case folder).

    ``spec``: the :class:`~mambaseg.data.layouts.case_folders.CaseFolderSpec` a ``layout: case_folders`` model was
    trained with: case folders (a folder of them, or one) are then read by its channel names and patterns, each
    channel also by the other BraTS releases' patterns for that name
    (:func:`~mambaseg.data.layouts.case_folders.predict_spec`); plain files stay single-channel cases."""
    from ...data.layouts.brats import brats_cases
    from ...data.layouts.case_folders import case_folder_cases, is_case_folder, predict_spec
    from ...data.layouts.msd import group_channels

    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    if inp.is_file():
        if not volume_suffix(inp):
            raise DataError(f"{inp}: unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}.")
        return [(strip_suffix(inp), [inp])]
    subdirs = [d for d in sorted(inp.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    files = [f for f in sorted(inp.iterdir()) if f.is_file() and not f.name.startswith(".")
             and volume_suffix(f)]
    if spec is not None:
        from ...data.layouts.case_folders import CaseFolderSpec

        probe = CaseFolderSpec(tuple((n, p) for n, ps in predict_spec(spec) for p in ps))
        if (not files and subdirs) or is_case_folder(inp, probe, single=True):
            return [(c.case_id, list(c.images)) for c in case_folder_cases(inp, spec, alternatives=True)]
        if files:  # plain files (e.g. several cases' FLAIR files), never BraTS-named files of one case here
            return sorted(group_channels(files).items())
    if not files and subdirs:  # BraTS: folder of case folders
        cases = brats_cases(inp)
        return [(c.case_id, list(c.images)) for c in cases]
    if files and all(re.search(r"-(t1n|t1c|t2w|t2f)\.nii", f.name) or re.search(r"_(t1|t1ce|t2|flair)\.nii", f.name)
                     or re.search(r"[-_]seg\.nii", f.name) for f in files):
        cases = brats_cases(inp.parent)
        cases = [c for c in cases if c.case_id == inp.name]
        return [(c.case_id, list(c.images)) for c in cases]
    if not files:
        raise DataError(f"{inp}: folder has no volumes ({', '.join(SUPPORTED_SUFFIXES)}) or BraTS case folders.")
    return sorted(group_channels(files).items())  # the grouping training uses (contiguous channel indices)


def _read_channels(case_id: str, files: list[Path]) -> dict:
    arrays, meta0 = [], None
    for f in files:
        arr, meta = read_volume(f)
        if meta0 is None:
            meta0 = meta
        elif tuple(meta["shape"])[-3:] != tuple(meta0["shape"])[-3:]:
            raise DataError(f"{f}: shape {tuple(meta['shape'])} differs from {files[0]} shape {tuple(meta0['shape'])}.")
        arrays.append(arr)
    image = np.concatenate(arrays, axis=0)
    meta0 = dict(meta0, files=[str(f) for f in files])
    return {"case_id": case_id, "image": image, "label": None, "meta": meta0}


def _check_grids(cid: str, files: list[Path], heads: list[dict]) -> None:
    """Every channel file of a case on the first one's grid (shape and affine, from the headers): one line naming
    the case and the file otherwise."""
    ref = heads[0]
    for f, h in zip(files[1:], heads[1:]):
        if tuple(h["shape"])[:3] != tuple(ref["shape"])[:3]:
            raise DataError(f"case {cid}: {f} has shape {tuple(h['shape'])[:3]}, {files[0]} has "
                            f"{tuple(ref['shape'])[:3]}; expected every channel on one grid.")
        if h["affine"] is None or not np.allclose(h["affine"], ref["affine"], rtol=0, atol=1e-3):
            raise DataError(f"case {cid}: {f} has another affine (voxel-to-world) than {files[0]}; expected every "
                            f"channel on one grid (resample it onto the first channel's).")


def _check_channels(n: int, pred, cid: str, files: list[Path]) -> None:
    if n != pred.in_channels:
        names = pred.data.get("channel_names") or []
        shown = f" ({', '.join(str(c) for c in names)})" if len(names) == pred.in_channels else ""
        raise DataError(f"{files[0]}: case {cid} has {n} channel(s)/modalities, the model expects "
                        f"{pred.in_channels}{shown}.")


def _write_probabilities(target: Path, probs: np.ndarray, case: dict, pred, sigmoid: bool) -> tuple[Path, Path]:
    """``<case>.npz`` (``probabilities`` float32 (K, X, Y, Z)) and ``<case>.json`` next to the label map."""
    stem = target.name[: -len(".nii.gz")]
    npz, meta_file = target.with_name(f"{stem}.npz"), target.with_name(f"{stem}.json")
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, probabilities=probs.astype(np.float32, copy=False))
    meta = case["meta"]
    labels = pred.data.get("labels") or {}
    info = {
        "case_id": case["case_id"], "array": "probabilities", "dtype": "float32",
        "shape": list(probs.shape),
        "axes": ["class", "i", "j", "k"],
        "axes_note": "class first (background = 0), then the voxel axes of the input NIfTI as nibabel reads them "
                     f"- the grid of {target.name}; nnU-Net's SimpleITK files are (class, z, y, x)",
        "activation": "sigmoid (stored as [1 - p, p])" if sigmoid else "softmax",
        "classes": {str(v): k for k, v in labels.items()} if labels else {str(i): str(i) for i in range(len(probs))},
        "affine": np.asarray(meta["affine"], dtype=np.float64).tolist(),
        "spacing": [float(v) for v in np.ravel(meta.get("spacing", []))][:3],
        "source_files": [str(Path(f).absolute()) for f in meta.get("files", [])],
        "label_file": str(target.absolute()), "model": str(pred.source),
    }
    atomic_write_text(meta_file, json.dumps(info, indent=1))
    return npz, meta_file


class Volumes:
    """What 3D prediction does its own way; the methods are those :func:`.pipeline.predict_with` calls.

    Raises:
        DataError: ``mask`` given (field-of-view masks are for 2D fundus models), or a checkpoint without a 3D plan.
    """

    unit = "case"  # the progress line's item
    folders = ("", "overlays")  # output sub-folders (cleaned of a killed run's temporary files)

    def __init__(self, pred, probs: bool = False, overlay: bool = False, mask: str | Path | None = None):
        if mask:
            raise DataError(f"--mask {mask}: --mask applies to 2D fundus models; {pred.source} is a 3D model (leave "
                            f"--mask out).")
        self.pred, self.probs, self.overlay = pred, probs, overlay
        self.plan = pred.plan  # DataError naming the checkpoint when it has no 3D plan
        self.tile = pred.cfg.infer.patch_size or self.plan.plan["patch_size"]
        stored = pred.data.get("case_folders")
        if stored:
            from ...data.layouts.case_folders import CaseFolderSpec

            self.spec = CaseFolderSpec.from_dict(stored, f"{pred.source}: checkpoint key 'data.case_folders'")
        else:
            self.spec = None

    def gather(self, inp: Path) -> list[tuple[str, str, list[Path]]]:
        """(case id, case id, channel files) of every input case (case folders by the model's channel names and
        patterns when it was trained on ``layout: case_folders``)."""
        return [(cid, cid, files) for cid, files in gather_volume_cases(inp, self.spec)]

    def used_folders(self) -> list[str]:
        """The output folders this run writes into ("" = the output folder itself)."""
        return ["", *(["overlays"] if self.overlay else [])]

    def outputs(self, out: Path, name: str) -> tuple[Path, list[Path]]:
        return out / f"{name}.nii.gz", ([out / f"{name}.npz", out / f"{name}.json"] if self.probs else []) + \
            ([out / "overlays" / f"{name}.png"] if self.overlay else [])

    def check(self, job: Job) -> None:
        """Before anything is written, from the headers only (nothing is allocated for a volume whose header or
        resampling is refused): the modality count and the resampled size."""
        heads = [volume_header(f) for f in job.files]
        if heads[0]["affine"] is not None and len(heads[0]["shape"]) == 3:  # 2D files are refused when read
            n_ch = sum(int(h["n_channels"]) for h in heads)
            _check_channels(n_ch, self.pred, job.name, job.files)
            _check_grids(job.name, job.files, heads)
            check_resample_size(job.files[0], heads[0]["shape"], heads[0]["affine"], self.plan.plan["target_spacing"],
                                n_ch)

    def settings(self) -> dict:
        """The inference settings of 3D only (none)."""
        return {}

    def preprocessing(self) -> dict:
        """The 3D plan predict applies (the checkpoint's ``data.plan``) and the dataset description it came from
        (recorded in the provenance)."""
        data = self.pred.data
        return {"spatial_dims": 3, "plan": self.plan.plan, "channel_names": data.get("channel_names"),
                "layout": data.get("layout")}

    def read(self, job: Job) -> dict:
        """The plan's input: ``case_id``, ``image`` (C, X, Y, Z), ``meta`` (the first channel file's geometry)."""
        case = _read_channels(job.name, job.files)
        _check_channels(case["image"].shape[0], self.pred, job.name, job.files)
        return case

    def inverse(self, logits: torch.Tensor, props: dict, threshold: float) -> tuple[np.ndarray, tuple | None]:
        """The label map on the case's voxel grid (computed on the preprocessed grid, then the plan's inverse) and,
        when asked for, ``(probabilities (K, X, Y, Z) on that grid, sigmoid model)``."""
        p = logits_to_probs(logits)
        labels = self.plan.inverse(probs_to_labels(p, threshold).numpy(), props)
        if not self.probs:
            return labels, None
        p = p.numpy()
        sigmoid = p.shape[0] == 1
        if sigmoid:
            p = np.concatenate([1.0 - p, p], 0)
        return labels, (self.plan.inverse(p, props), sigmoid)

    def write(self, job: Job, case: dict, labels: np.ndarray, probs: tuple | None) -> Path:
        """``<case>.nii.gz`` (and its probabilities / overlay), each complete or absent; the label map last, so it
        marks a finished case."""
        if probs is not None:
            _write_probabilities(job.target, probs[0], case, self.pred, probs[1])
        if self.overlay:
            from PIL import Image

            fig = orthogonal_overlay(case["image"][0], labels, case["meta"]["affine"], f"{case['case_id']}: "
                                     f"prediction ({int((labels > 0).sum())} foreground voxels)")
            with atomic_path(job.target.parent / "overlays" / f"{job.name}.png") as tmp:
                Image.fromarray(fig).save(tmp, format="PNG")
        return write_nifti(job.target, labels.astype(np.uint8), case["meta"], dtype=np.uint8)
