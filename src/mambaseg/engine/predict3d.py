"""3D prediction: NIfTI files, ``_0000``-style channel files or BraTS case folders -> ``<case>.nii.gz`` label maps
in each input's original geometry (orientation, crop and resampling undone), with the checkpoint's plan."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.io import DataError
from ..data.nifti import check_resample_size, read_volume, volume_header, write_nifti
from ..data.preprocess import invert_prediction, preprocess_case
from ..utils.atomic import clean_stale_temp
from .inference import logits_to_probs, probs_to_labels, sliding_window

__all__ = ["gather_volume_cases", "predict_volumes"]

logger = logging.getLogger(__name__)
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _stem(p: Path) -> str:
    for s in SUFFIXES:
        if p.name.lower().endswith(s):
            return p.name[: -len(s)]
    return p.stem


def gather_volume_cases(inp: Path) -> list[tuple[str, list[Path]]]:
    """(case id, channel files) for a file, a folder of volumes (``CASE_0000`` channel suffixes grouped) or a folder
    of BraTS case folders (or one BraTS case folder)."""
    from ..data.layouts3d import brats_cases

    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    if inp.is_file():
        if not any(inp.name.lower().endswith(s) for s in SUFFIXES):
            raise DataError(f"{inp}: unsupported file type; expected one of {', '.join(SUFFIXES)}.")
        return [(_stem(inp), [inp])]
    subdirs = [d for d in sorted(inp.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    files = [f for f in sorted(inp.iterdir()) if f.is_file() and not f.name.startswith(".")
             and any(f.name.lower().endswith(s) for s in SUFFIXES)]
    if not files and subdirs:  # BraTS: folder of case folders
        cases = brats_cases(inp)
        return [(c.case_id, list(c.images)) for c in cases]
    if files and all(re.search(r"-(t1n|t1c|t2w|t2f)\.nii", f.name) or re.search(r"_(t1|t1ce|t2|flair)\.nii", f.name)
                     or re.search(r"[-_]seg\.nii", f.name) for f in files):
        cases = brats_cases(inp.parent)
        cases = [c for c in cases if c.case_id == inp.name]
        return [(c.case_id, list(c.images)) for c in cases]
    if not files:
        raise DataError(f"{inp}: folder has no volumes ({', '.join(SUFFIXES)}) or BraTS case folders.")
    groups: dict[str, list[Path]] = {}
    for f in files:
        m = _CHANNEL.match(_stem(f))
        groups.setdefault(m.group("case") if m else _stem(f), []).append(f)
    return sorted(groups.items())


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


def predict_volumes(pred, inp, out, tta: bool = False, overlap: float | None = None, overwrite: bool = False,
                    progress: bool = True, skip_existing: bool = False) -> list[Path]:
    """Segment every case in ``inp`` with the 3D predictor ``pred`` and write ``out/<case>.nii.gz`` (atomically);
    ``skip_existing`` (``--continue``) skips the cases whose output exists."""
    from .predict import _check_output_dir, check_existing

    inp, out = Path(inp), Path(out)
    plan = pred.ckpt.get("data", {}).get("plan")
    if plan is None:
        raise DataError(f"{pred.source}: checkpoint has no 3D preprocessing plan (not a 3D model?).")
    cases = gather_volume_cases(inp)
    _check_output_dir(out, [], inp)
    targets = [out / f"{cid}.nii.gz" for cid, _ in cases]
    all_names = {t.name for t in targets}
    done = check_existing(targets, overwrite, skip_existing)
    if done:
        logger.warning("--continue: %d of %d case(s) already have their output in %s; skipped", len(done),
                       len(targets), out)
        keep = [i for i, t in enumerate(targets) if t not in done]
        cases, targets = [cases[i] for i in keep], [targets[i] for i in keep]
    infer = pred.config.get("infer", {})
    tile = infer.get("patch_size") or plan["patch_size"]
    ov = infer.get("overlap", 0.5) if overlap is None else overlap
    for cid, files in cases:  # headers first: nothing is allocated for a volume whose header or resampling is refused
        heads = [volume_header(f) for f in files]
        if heads[0]["affine"] is not None and len(heads[0]["shape"]) == 3:  # 2D files are refused when read
            check_resample_size(files[0], heads[0]["shape"], heads[0]["affine"], plan["target_spacing"],
                                sum(h["n_channels"] for h in heads))
    loaded = []
    for cid, files in cases:  # read and check everything before writing anything
        case = _read_channels(cid, files)
        if case["image"].shape[0] != pred.in_channels:
            raise DataError(f"{files[0]}: case {cid} has {case['image'].shape[0]} channel(s)/modalities, the model "
                            f"expects {pred.in_channels}.")
        loaded.append(case)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(out, all_names)  # leftovers of a killed run
    written = []
    for case, target in tqdm(list(zip(loaded, targets)), desc="predict", disable=not progress):
        image, _, props = preprocess_case(case, plan)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        logits = sliding_window(pred.run, x, tile, ov, infer.get("mode", "gaussian"), int(infer.get("batch_size", 2)),
                                (0, 1, 2) if tta else ())
        labels = probs_to_labels(logits_to_probs(logits), float(infer.get("threshold", 0.5))).numpy()
        labels = invert_prediction(labels, props)
        written.append(write_nifti(target, labels.astype(np.uint8), case["meta"], dtype=np.uint8))
    return written
