"""3D prediction: NIfTI files, ``_0000``-style channel files or BraTS case folders -> ``<case>.nii.gz`` label maps
in each input's original geometry (orientation, crop and resampling undone), with the checkpoint's plan.

Optional outputs, next to the label maps as nnU-Net's ``--save_probabilities`` puts them:

- ``probs=True``: ``<case>.npz`` with ``probabilities``, float32 ``(K, X, Y, Z)``: one map per class (background
  first; a 1-output sigmoid model gives ``[1 - p, p]``), resampled back to the input's voxel grid - the same
  ``(X, Y, Z)`` voxel array as ``<case>.nii.gz`` (nibabel order, i.e. the NIfTI's i, j, k axes; nnU-Net's
  SimpleITK-read files are ``(K, z, y, x)`` instead) - plus ``<case>.json`` (instead of nnU-Net's pickle): axis
  order, shape, affine, spacing, class labels, activation, source files and model. Outside the cropped
  (non-zero) region the background probability is 1. The label map is computed on the preprocessed grid and
  resampled separately, so at boundaries it can differ from the argmax of the resampled probabilities.
- ``overlay=True``: ``overlays/<case>.png``: axial, coronal and sagittal slices (labelled with the file's voxel
  index) through the predicted foreground voxel nearest its centre (the volume's middle when nothing is predicted),
  the first channel in grey with the classes coloured; reoriented to RAS and drawn with superior (coronal,
  sagittal) / anterior (axial) up, the patient's right on the image's left (radiological convention), anterior on
  the left in the sagittal panel, voxel spacing respected.

``predict_provenance.json`` (model, checkpoint SHA-256, training config, the plan, inference settings, versions,
command line) is written next to the label maps: see :mod:`mambaseg.engine.predict_provenance`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from ..config import InferCfg
from ..data.io import DataError
from ..data.nifti import SUPPORTED_SUFFIXES, check_resample_size, read_volume, volume_header, volume_suffix, write_nifti
from ..data.plans import Plan3D
from ..utils.atomic import clean_stale_temp
from ..utils.progress import ItemProgress, StatusLine
from .inference import logits_to_probs, probs_to_labels, sliding_window
from .outputs import check_existing, check_output_dir
from .threshold import resolve_threshold

__all__ = ["gather_volume_cases", "orthogonal_overlay", "predict_volumes"]

logger = logging.getLogger(__name__)


def _stem(p: Path) -> str:
    s = volume_suffix(p)
    return p.name[: -len(s)] if s else p.stem


def gather_volume_cases(inp: Path) -> list[tuple[str, list[Path]]]:
    """(case id, channel files) for a file, a folder of volumes (``CASE_0000`` channel suffixes grouped) or a folder
    of BraTS case folders (or one BraTS case folder)."""
    from ..data.layouts.brats import brats_cases
    from ..data.layouts.msd import group_channels

    if not inp.exists():
        raise DataError(f"{inp}: input not found.")
    if inp.is_file():
        if not volume_suffix(inp):
            raise DataError(f"{inp}: unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)}.")
        return [(_stem(inp), [inp])]
    subdirs = [d for d in sorted(inp.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    files = [f for f in sorted(inp.iterdir()) if f.is_file() and not f.name.startswith(".")
             and volume_suffix(f)]
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


_PALETTE = np.asarray([(255, 220, 0), (0, 200, 255), (255, 0, 200), (0, 220, 0), (255, 120, 0), (150, 90, 255),
                       (255, 60, 60), (0, 255, 170), (200, 200, 255), (170, 110, 40)], dtype=np.float32)


def _grey(sl: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((sl.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255)


def orthogonal_overlay(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, title: str = "",
                       panel_px: int = 256, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 figure of axial, coronal and sagittal slices with the labels coloured (see the module docstring).

    Args:
        image: ``(X, Y, Z)`` intensities (voxel array of the file with ``affine``).
        labels: ``(X, Y, Z)`` integer labels, same grid.
        affine: voxel -> world (RAS mm) matrix of that grid.
        title: text written above the panels.
        panel_px: the longest side of each panel, in pixels (small volumes are enlarged, nearest neighbour).
    """
    import nibabel as nib
    from PIL import Image, ImageDraw, ImageFont

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    img = nib.orientations.apply_orientation(np.asarray(image), ornt)  # now RAS voxel axes
    lab = nib.orientations.apply_orientation(np.asarray(labels), ornt)
    zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
    spacing = [1.0, 1.0, 1.0]
    for i in range(3):  # input axis i became RAS axis ornt[i, 0]
        spacing[int(ornt[i, 0])] = float(zooms[i])
    fg = np.argwhere(lab > 0)
    # the foreground voxel nearest the foreground's centre: every panel then cuts through a predicted structure
    ctr = [int(v) for v in fg[np.argmin(((fg - fg.mean(0)) ** 2).sum(1))]] if len(fg) else [s // 2 for s in lab.shape]
    finite = img[np.isfinite(img)]
    lo, hi = (float(np.percentile(finite, 0.5)), float(np.percentile(finite, 99.5))) if finite.size else (0.0, 1.0)
    panels = []
    for name, axis in (("axial", 2), ("coronal", 1), ("sagittal", 0)):
        sl = [slice(None)] * 3
        sl[axis] = min(max(ctr[axis], 0), lab.shape[axis] - 1)
        g, m = img[tuple(sl)], lab[tuple(sl)]  # the two remaining RAS axes: (x, y), (x, z) or (y, z)
        rem = [a for a in range(3) if a != axis]
        # rows: the second remaining axis decreasing (anterior / superior up); columns: the first one decreasing
        # (x grows towards the patient's right, so the right is on the image's left; sagittal: anterior on the left)
        g, m = g.T[::-1, ::-1], m.T[::-1, ::-1]
        rgb = np.repeat(_grey(g, lo, hi)[..., None], 3, -1)
        for v in sorted(int(u) for u in np.unique(m) if u > 0):
            sel = m == v
            rgb[sel] = (1 - alpha) * rgb[sel] + alpha * _PALETTE[(v - 1) % len(_PALETTE)]
        h_mm, w_mm = g.shape[0] * spacing[rem[1]], g.shape[1] * spacing[rem[0]]
        scale = panel_px / max(h_mm, w_mm, 1e-6)
        size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        pim = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).resize(size, Image.NEAREST)
        src_axis = int(np.flatnonzero(ornt[:, 0] == axis)[0])  # the file's voxel axis behind this RAS axis
        idx = sl[axis] if ornt[src_axis, 1] > 0 else lab.shape[axis] - 1 - sl[axis]
        panels.append((f"{name}: {'ijk'[src_axis]} = {idx} of {lab.shape[axis]}", pim))
    pad, head = 8, 34
    width = sum(p.width for _, p in panels) + pad * (len(panels) + 1)
    height = max(p.height for _, p in panels) + head + pad
    fig = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(fig)
    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        font = ImageFont.load_default()
    draw.text((pad, 2), title, fill=(255, 255, 255), font=font)
    x = pad
    for label, p in panels:
        fig.paste(p, (x, head))
        draw.text((x, head - 16), label, fill=(255, 255, 255), font=font)
        x += p.width + pad
    return np.asarray(fig)


def _write_probabilities(target: Path, probs: np.ndarray, case: dict, pred, sigmoid: bool) -> tuple[Path, Path]:
    """``<case>.npz`` (``probabilities`` float32 (K, X, Y, Z)) and ``<case>.json`` next to the label map."""
    import json

    from ..utils.atomic import atomic_path, atomic_write_text

    stem = target.name[: -len(".nii.gz")]
    npz, meta_file = target.with_name(f"{stem}.npz"), target.with_name(f"{stem}.json")
    with atomic_path(npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, probabilities=probs.astype(np.float32, copy=False))
    meta = case["meta"]
    labels = pred.ckpt.get("data", {}).get("labels") or {}
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


def predict_volumes(pred, inp, out, tta: bool = False, overlap: float | None = None, overwrite: bool = False,
                    progress: bool = True, skip_existing: bool = False, probs: bool = False, overlay: bool = False,
                    mask: str | Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Segment every case in ``inp`` with the 3D predictor ``pred`` and write ``out/<case>.nii.gz`` (atomically);
    ``skip_existing`` (``--continue``) skips the cases whose outputs exist. ``probs`` / ``overlay``: see the module
    docstring.

    Every input's headers (shape, geometry, modality count, resampled size) are checked before anything is written;
    then the cases are read, predicted and written one at a time, so memory holds one case whatever the number of
    inputs. A case whose voxels turn out unreadable (truncated file, NaN) stops the run with its outputs absent and
    the earlier cases' outputs complete: ``--continue`` goes on from there.

    Raises:
        DataError: ``mask`` given (field-of-view masks are for 2D fundus models), bad inputs (one line), a file
            ``predict_provenance.json`` in ``out`` that is not ours or describes other predictions
            (:mod:`mambaseg.engine.predict_provenance`).
    """
    from .predict_provenance import PROVENANCE_NAME, ProvenanceWriter, preprocessing_3d

    if mask:
        raise DataError(f"--mask {mask}: --mask applies to 2D fundus models; {pred.source} is a 3D model (leave "
                        f"--mask out).")
    inp, out = Path(inp), Path(out)
    plan3d = pred.plan  # DataError naming the checkpoint when it has no 3D plan
    plan = plan3d.plan
    cases = gather_volume_cases(inp)
    check_output_dir(out, inp)
    targets = [out / f"{cid}.nii.gz" for cid, _ in cases]
    extra = {t: ([out / f"{cid}.npz", out / f"{cid}.json"] if probs else []) +
             ([out / "overlays" / f"{cid}.png"] if overlay else []) for t, (cid, _) in zip(targets, cases)}
    all_names = {t.name for t in targets} | {p.name for ps in extra.values() for p in ps}
    if PROVENANCE_NAME in all_names:
        raise DataError(f"{inp}: a case named {PROVENANCE_NAME[:-5]!r} would write its probabilities' JSON over "
                        f"{out / PROVENANCE_NAME}; rename that input.")
    all_names.add(PROVENANCE_NAME)
    target_names = [t.name for t in targets]
    done = check_existing(targets, overwrite, skip_existing, extra)
    if done:
        logger.warning("--continue: %d of %d case(s) already have their output in %s; skipped", len(done),
                       len(targets), out)
        keep = [i for i, t in enumerate(targets) if t not in done]
        cases, targets = [cases[i] for i in keep], [targets[i] for i in keep]
    infer = pred.cfg.infer
    tile = infer.patch_size or plan["patch_size"]
    ov = infer.overlap if overlap is None else overlap
    for cid, files in cases:  # headers first: nothing is allocated for a volume whose header or resampling is refused
        heads = [volume_header(f) for f in files]
        if heads[0]["affine"] is not None and len(heads[0]["shape"]) == 3:  # 2D files are refused when read
            n_ch = sum(int(h["n_channels"]) for h in heads)
            _check_channels(n_ch, pred, cid, files)  # every case's modality count before anything is written
            check_resample_size(files[0], heads[0]["shape"], heads[0]["affine"], plan["target_spacing"], n_ch)
    settings = {"tile": [int(t) for t in tile], "overlap": float(ov), "mode": infer.mode,
                "batch_size": infer.batch_size, "tta": bool(tta), "probs": bool(probs),
                "overlay": bool(overlay), "device": str(getattr(pred, "device", "unknown")),
                "input": str(inp.resolve())}
    provenance = ProvenanceWriter(out, pred, preprocessing_3d(pred, plan), settings, overwrite, skip_existing,
                                  command)
    provenance.check()  # a foreign file of that name, or other predictions' description: refused before writing
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "overlays"):
        clean_stale_temp(folder, all_names)  # leftovers of a killed run
    provenance.start(target_names, [t.name for t in done])
    written = []
    # one status line on stderr: cases and sliding-window tiles done; redrawn on a terminal, a line per 30 s in a log
    status = ItemProgress(StatusLine(enabled=progress), len(cases), "case")
    try:
        for i, ((cid, files), target) in enumerate(zip(cases, targets)):
            case = _read_channels(cid, files)  # one case in memory at a time: read, predict, write, free
            _check_channels(case["image"].shape[0], pred, cid, files)
            status.item(i, cid)
            written.append(_predict_case(pred, case, target, plan3d, tile, ov, infer, tta, probs, overlay, out,
                                         status.tiles, provenance.before_write))
            del case
    finally:
        status.close()
    provenance.finish(written)
    return written


def _check_channels(n: int, pred, cid: str, files: list[Path]) -> None:
    if n != pred.in_channels:
        raise DataError(f"{files[0]}: case {cid} has {n} channel(s)/modalities, the model expects "
                        f"{pred.in_channels}.")


def _predict_case(pred, case: dict, target: Path, plan: Plan3D, tile, ov: float, infer: InferCfg, tta: bool,
                  probs: bool, overlay: bool, out: Path, callback, before_write=None) -> Path:
    """Predict one loaded case and write ``target`` (and its probabilities / overlay); returns ``target``.
    ``before_write()``: called once the prediction is computed, before its files are written."""
    image, props = plan.forward(case)
    x = torch.from_numpy(image)
    logits = sliding_window(pred.run, x, tile, ov, infer.mode, infer.batch_size, (0, 1, 2) if tta else (),
                            callback=callback, device=getattr(pred, "device", None),
                            stitch_device=infer.stitch_device).cpu()
    p = logits_to_probs(logits)
    labels = probs_to_labels(p, resolve_threshold(pred.config, pred.ckpt.get("data"))).numpy()
    labels = plan.inverse(labels, props)
    if before_write is not None:
        before_write()
    # outputs appear complete or not at all; the label map last, so it marks a finished case
    if probs:
        p = p.numpy()
        sigmoid = p.shape[0] == 1
        if sigmoid:
            p = np.concatenate([1.0 - p, p], 0)
        _write_probabilities(target, plan.inverse(p, props), case, pred, sigmoid)
    if overlay:
        from PIL import Image

        from ..utils.atomic import atomic_path

        fig = orthogonal_overlay(case["image"][0], labels, case["meta"]["affine"], f"{case['case_id']}: "
                                 f"prediction ({int((labels > 0).sum())} foreground voxels)")
        with atomic_path(out / "overlays" / f"{case['case_id']}.png") as tmp:
            Image.fromarray(fig).save(tmp, format="PNG")
    return write_nifti(target, labels.astype(np.uint8), case["meta"], dtype=np.uint8)
