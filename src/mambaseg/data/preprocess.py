"""nnU-Net-style planning and preprocessing for 3D volumes, with an exact record of how to undo it.

Stages (each a plain function; stages hand over JSON-friendly dicts):

1. :func:`fingerprint` — per case spacing (in RAS axis order), shape, shape after the non-zero crop, and per-channel
   intensity statistics of foreground voxels (label > 0, or non-zero voxels when there is no label; at most
   ``n_samples`` random voxels per case, like nnU-Net).
2. :func:`plan` — target spacing = per-axis median spacing; normalisation per channel: ``"MR"`` = per-case z-score on
   the non-zero voxels (outside set to 0) - for multi-channel MR and brain layouts on ONE brain mask shared by the
   channels (union of their non-zero voxels, holes filled, as nnU-Net's crop + ``use_mask_for_norm``); ``"CT"`` =
   clip to the foreground 0.5/99.5 percentiles, then z-score with the foreground mean/std (nnU-Net
   ``CTNormalization``), or with ``ct_window=(lo, hi)`` clip to the HU window and scale to [0, 1] (TransUNet
   style); the nnU-Net v2 names ``zscore``, ``noNorm``, ``rescale_to_0_1`` and ``rgb_to_0_1`` (``layout: nnunet``
   picks them from ``channel_names``; see :data:`NORM_SCHEMES` and :func:`normalize_channels`); patch size from
   the median resampled shape.
3. :func:`preprocess_case` — reorient to RAS (nibabel orientation transforms, exact voxel permutation/flip), crop to
   the non-zero bounding box, normalise (before resampling, as nnU-Net does, so the non-zero mask is exact),
   resample to the target spacing (scipy ``zoom``, ``grid_mode=True`` i.e. voxel extents aligned: cubic for images,
   linear interpolation of one-hot channels + argmax for labels). ``props`` records every step.
4. :func:`invert_prediction` — label map (or class probabilities) on the preprocessed grid -> original voxel grid:
   resample back, paste into the uncropped volume (background outside the crop), undo the reorientation. Writing the
   result with :func:`mambaseg.data.io.volume.write_nifti` and the original meta gives the original shape and affine.

:class:`PreprocessCache` stores the output per case (memory-mappable ``.npy`` files or one compressed ``.npz``, see
:mod:`mambaseg.data.case_store`, + props ``.json``) under a folder named by a hash of the plan, so a changed plan is
preprocessed again and an unchanged one is reused across epochs and runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mambaseg.data.case_store import CACHE_FORMAT, LazyCase, entry_files, read_arrays, write_entry
from mambaseg.data.io.volume import meta_to_json
from mambaseg.data.load3d import load_case3d
from mambaseg.data.records import Case3D
from mambaseg.utils.atomic import atomic_write_text

from ..utils.jsonable import to_jsonable

__all__ = [
    "NORM_SCHEMES",
    "PreprocessCache",
    "brain_mask",
    "fingerprint",
    "invert_prediction",
    "median_relative_size_after_crop",
    "normalization_entries",
    "normalize_channels",
    "plan",
    "plan_hash",
    "preprocess_case",
    "ras_transform",
    "resample_image",
    "resample_label",
]

logger = logging.getLogger(__name__)

_MODALITIES = {"MR": "MR", "MRI": "MR", "CT": "CT"}
# nnU-Net v2 normalisation names accepted as a channel's modality (matched case-insensitively) -> canonical name
_NNUNET_NAMES = {"zscore": "zscore", "nonorm": "noNorm", "rescale_to_0_1": "rescale_to_0_1",
                 "rgb_to_0_1": "rgb_to_0_1"}
# the ``scheme`` of a plan's normalisation entry: how :func:`normalize_channels` maps a channel's intensities.
NORM_SCHEMES = ("zscore_nonzero", "zscore_brain", "zscore", "ct", "ct_window", "none", "rescale_to_0_1", "rgb_to_0_1")
# nnU-Net uses the non-zero mask for z-scoring when cropping to it leaves less than this median fraction of a case
_MASK_FOR_NORM_BELOW = 0.75
_GEOM_KEYS = ("path", "shape", "spacing", "affine", "orientation", "qform", "qform_code", "sform", "sform_code",
              "xyzt_units")


# --------------------------------------------------------------------------------------------------- geometry helpers
def ras_transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform ``(3, 2)`` taking voxel axes of ``affine`` to RAS+ (closest axis permutation)."""
    return nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))


def _apply_ornt(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a ``(3, 2)`` orientation transform to the last three axes of ``arr`` (``(X,Y,Z)`` or ``(C,X,Y,Z)``)."""
    if arr.ndim == 3:
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, ornt))
    return np.stack([_apply_ornt(a, ornt) for a in arr])


def _nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """``[[lo, hi), ...]`` per spatial axis of the voxels non-zero in any channel (full extent if none)."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return [[0, s] for s in mask.shape]
    bbox = []
    for ax in range(3):
        idx = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != ax)))
        bbox.append([int(idx[0]), int(idx[-1]) + 1])
    return bbox


def _crop(arr: np.ndarray, bbox: list[list[int]]) -> np.ndarray:
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    return arr[(Ellipsis, *sl)]


def resample_image(image: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """``(C, *S)`` float -> ``(C, *new_shape)`` with scipy spline ``order``; voxel extents aligned (``grid_mode``)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(image.shape[1:]) == new_shape:
        return image.astype(np.float32, copy=False)
    zoom = np.asarray(new_shape, dtype=np.float64) / np.asarray(image.shape[1:], dtype=np.float64)
    out = [ndimage.zoom(c.astype(np.float32, copy=False), zoom, order=order, mode="nearest", grid_mode=True)
           for c in image]
    return np.stack(out).astype(np.float32, copy=False)


def resample_label(label: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """``(*S)`` int label map -> ``(*new_shape)``: linear interpolation of each class's one-hot mask, then argmax."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(label.shape) == new_shape:
        return label.astype(np.int64, copy=False)
    zoom = np.asarray(new_shape, dtype=np.float64) / np.asarray(label.shape, dtype=np.float64)
    best = np.full(new_shape, -1.0, dtype=np.float32)
    out = np.zeros(new_shape, dtype=np.int64)
    for cls in np.unique(label):
        score = ndimage.zoom((label == cls).astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
        better = score > best
        out[better] = cls
        best[better] = score[better]
    return out


# -------------------------------------------------------------------------------------------------- fingerprint / plan
def _as_case_dict(case: Case3D | dict) -> dict:
    return load_case3d(case) if isinstance(case, Case3D) else case


def fingerprint(cases: Sequence[Case3D | dict], n_samples: int = 10000, seed: int = 1234) -> dict[str, Any]:
    """Dataset fingerprint from loaded cases (``load_case3d`` dicts) or :class:`Case3D` records (loaded here).

    Returns:
        JSON-friendly dict: ``case_ids``, ``spacings`` and ``shapes`` (RAS axis order), ``shapes_after_crop``,
        ``median_spacing``, ``n_channels`` and ``intensity`` = per channel {mean, std, median, min, max,
        percentile_00_5, percentile_99_5} of sampled foreground voxels.
    """
    if not cases:
        raise ValueError("cases must not be empty")
    rng = np.random.default_rng(seed)
    spacings, shapes, cropped, ids, samples = [], [], [], [], None
    for case in cases:
        d = _as_case_dict(case)
        image, label, meta = d["image"], d["label"], d["meta"]
        ornt = ras_transform(np.asarray(meta["affine"]))
        perm = ornt[:, 0].astype(int)
        sp_ras, sh_ras = np.empty(3), np.empty(3, dtype=int)
        sp_ras[perm], sh_ras[perm] = np.asarray(meta["spacing"]), np.asarray(image.shape[1:])
        bbox = _nonzero_bbox(image)
        spacings.append(sp_ras.tolist())
        shapes.append(sh_ras.tolist())
        cropped.append(_to_ras_order([hi - lo for lo, hi in bbox], perm))
        ids.append(str(d.get("case_id", meta.get("case_id", len(ids)))))
        fg = label > 0 if label is not None and np.any(label > 0) else np.any(image != 0, axis=0)
        if samples is None:
            samples = [[] for _ in range(image.shape[0])]
        if len(samples) != image.shape[0]:
            raise ValueError(f"case {ids[-1]!r} has {image.shape[0]} channels, previous cases {len(samples)}")
        n_fg = int(fg.sum())
        pick = rng.choice(n_fg, size=min(n_samples, n_fg), replace=False) if n_fg else np.zeros(0, dtype=int)
        for c in range(image.shape[0]):
            samples[c].append(image[c][fg][pick])
    intensity = {}
    for c, chunks in enumerate(samples):
        v = np.concatenate(chunks).astype(np.float64)
        if v.size == 0:
            v = np.zeros(1)
        intensity[str(c)] = dict(mean=float(v.mean()), std=float(v.std()), median=float(np.median(v)),
                                 min=float(v.min()), max=float(v.max()),
                                 percentile_00_5=float(np.percentile(v, 0.5)),
                                 percentile_99_5=float(np.percentile(v, 99.5)))
    return dict(case_ids=ids, spacings=spacings, shapes=shapes, shapes_after_crop=cropped,
                median_spacing=np.median(np.asarray(spacings), axis=0).tolist(), n_channels=len(samples),
                intensity=intensity)


def cached_fingerprint(cases: Sequence[Case3D], cache_dir: str | os.PathLike, n_samples: int = 10000,
                       seed: int = 1234) -> dict[str, Any]:
    """:func:`fingerprint` of :class:`Case3D` records, stored as ``cache_dir/fingerprint_<hash>.json`` under a hash
    of the cases' ids and source files (path, size, mtime), ``n_samples`` and ``seed``: a later run on unchanged
    files reads no volume to plan (the fingerprint would read every training case again)."""
    sig = [[c.case_id, _source_signature([*c.images, *([c.label] if c.label else [])])] for c in cases]
    key = hashlib.sha256(json.dumps({"cases": sig, "n_samples": n_samples, "seed": seed, "version": 1},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"fingerprint_{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("fingerprint cache %s unreadable (%s); recomputing", path, err)
    fp = fingerprint(cases, n_samples=n_samples, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(to_jsonable(fp)))
    return fp


def _to_ras_order(values: Sequence[int], perm: np.ndarray) -> list[int]:
    """Reorder per-axis ``values`` of the original voxel axes into RAS axis order (``perm`` = ornt[:, 0])."""
    out = [0, 0, 0]
    for ax, v in zip(perm, values):
        out[int(ax)] = int(v)
    return out


def _modality_name(m: Any) -> str:
    """``"MR"``/``"CT"`` (legacy, upper-case aliases) or the canonical nnU-Net name; ValueError otherwise."""
    key = _MODALITIES.get(str(m).upper()) or _NNUNET_NAMES.get(str(m).casefold())
    if key is None:
        raise ValueError(f"modality must be 'MR', 'CT' or an nnU-Net normalisation name (zscore, noNorm, "
                         f"rescale_to_0_1, rgb_to_0_1), got {m!r}")
    return key


def median_relative_size_after_crop(fp: dict[str, Any]) -> float:
    """Median over the cases of (voxels in the non-zero bounding box) / (voxels in the case), as nnU-Net's
    fingerprint ``median_relative_size_after_cropping``; 1.0 when the fingerprint has no shapes."""
    shapes, cropped = fp.get("shapes") or [], fp.get("shapes_after_crop") or []
    if not shapes or len(shapes) != len(cropped):
        return 1.0
    rel = [float(np.prod(c, dtype=np.float64) / max(np.prod(s, dtype=np.float64), 1.0))
           for s, c in zip(shapes, cropped)]
    return float(np.median(rel))


def normalization_entries(modalities: Sequence[str], fp: dict[str, Any] | None = None,
                          ct_window: tuple[float, float] | None = None,
                          shared_mask: bool = False) -> list[dict[str, Any]]:
    """The plan's ``normalization`` list: one ``{scheme, ...}`` entry per channel (see :func:`normalize_channels`).

    Per channel ``modalities[c]``:

    - ``MR`` / ``MRI`` -> ``zscore_nonzero`` (mambaseg's historical 3D default: z-score on the non-zero voxels), or
      ``zscore_brain`` with ``shared_mask`` (z-score inside one mask for all channels: the union of their non-zero
      voxels with holes filled, nnU-Net's behaviour);
    - ``CT`` -> ``ct`` with the fingerprint's foreground ``percentile_00_5``/``percentile_99_5``/``mean``/``std`` of
      that channel (nnU-Net ``CTNormalization``: the same clip and z-score for every case), or ``ct_window``;
    - ``zscore`` -> per-case z-score, as nnU-Net's ``ZScoreNormalization``: over the non-zero voxels only
      (``zscore_nonzero``; ``zscore_brain`` with ``shared_mask``) when cropping to the non-zero box left less than
      3/4 of the median case (:func:`median_relative_size_after_crop` < 0.75: brain-like data, nnU-Net's
      ``use_mask_for_norm``), otherwise over every voxel (``zscore``);
    - ``noNorm`` -> ``none``; ``rescale_to_0_1`` -> per-case min-max; ``rgb_to_0_1`` -> ``x / 255``.

    Names are matched case-insensitively (``str.casefold``); an unknown name is a ValueError here - the
    nnU-Net fallback of unknown *channel names* to ``zscore`` happens in
    :func:`mambaseg.data.layouts.dataset_json.channel_modalities`.

    Args:
        modalities: one name per channel.
        fp: fingerprint (:func:`fingerprint`); needed for ``CT`` (intensity statistics) and ``zscore`` (crop size).
        ct_window: ``(lo, hi)`` HU window for CT channels instead of the statistics.
    """
    out: list[dict[str, Any]] = []
    for c, m in enumerate(modalities):
        key = _modality_name(m)
        masked_scheme = "zscore_brain" if shared_mask else "zscore_nonzero"
        if key == "MR":
            out.append(dict(scheme=masked_scheme))
        elif key == "CT" and ct_window is not None:
            lo, hi = (float(v) for v in ct_window)
            if not hi > lo:
                raise ValueError(f"ct_window must be (lo, hi) with hi > lo, got {ct_window}")
            out.append(dict(scheme="ct_window", lower=lo, upper=hi))
        elif key == "CT":
            if fp is None or str(c) not in fp.get("intensity", {}):
                raise ValueError(f"channel {c}: CT normalisation needs the fingerprint's intensity statistics")
            st = fp["intensity"][str(c)]
            out.append(dict(scheme="ct", lower=st["percentile_00_5"], upper=st["percentile_99_5"], mean=st["mean"],
                            std=max(st["std"], 1e-8)))
        elif key == "zscore":
            masked = fp is not None and median_relative_size_after_crop(fp) < _MASK_FOR_NORM_BELOW
            out.append(dict(scheme=masked_scheme if masked else "zscore"))
        else:
            out.append(dict(scheme={"noNorm": "none"}.get(key, key)))
    return out


def plan(fp: dict[str, Any], modality: str | Sequence[str] = "MR", patch_size: Sequence[int] | None = None, *,
         target_spacing: Sequence[float] | None = None, ct_window: tuple[float, float] | None = None,
         max_patch: int = 128, brain_mask: bool | None = None) -> dict[str, Any]:
    """Preprocessing plan from a :func:`fingerprint`.

    Args:
        fp: the fingerprint.
        modality: for every channel, or one per channel: ``"MR"`` or ``"CT"``, or an nnU-Net v2 normalisation name
            (``zscore``, ``noNorm``, ``rescale_to_0_1``, ``rgb_to_0_1``; any case) - see
            :func:`normalization_entries`.
        patch_size: training patch (3 ints); default = median resampled (cropped) shape floored to a multiple of 16,
            clamped to [16, ``max_patch``] per axis.
        target_spacing: override of the median spacing (mm, RAS axis order).
        ct_window: fixed HU window ``(lo, hi)`` for CT channels: clip then scale to [0, 1], instead of the
            fingerprint-based clip + z-score.
        max_patch: largest default patch edge.
        brain_mask: z-score the masked (MR) channels inside one mask shared by all channels (``zscore_brain``:
            union of non-zero, holes filled); None = when the dataset has more than one channel.
    """
    n_ch = int(fp["n_channels"])
    mods = [modality] * n_ch if isinstance(modality, str) else list(modality)
    if len(mods) != n_ch:
        raise ValueError(f"modality must be one string or {n_ch} strings (one per channel), got {modality!r}")
    shared = n_ch > 1 if brain_mask is None else bool(brain_mask)
    norm = normalization_entries(mods, fp, ct_window, shared_mask=shared)
    spacing = np.asarray(target_spacing if target_spacing is not None else fp["median_spacing"], dtype=np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"target_spacing must be 3 positive numbers, got {spacing.tolist()}")
    sizes_mm = np.asarray(fp["shapes_after_crop"], dtype=np.float64) * np.asarray(fp["spacings"], dtype=np.float64)
    median_shape = np.median(sizes_mm / spacing, axis=0)
    if patch_size is None:
        patch = np.clip((median_shape // 16).astype(int) * 16, 16, max_patch).tolist()
    else:
        patch = [int(p) for p in patch_size]
        if len(patch) != 3 or min(patch) < 1:
            raise ValueError(f"patch_size must be 3 positive ints, got {patch_size}")
    return dict(version=1, modality=[_modality_name(m) for m in mods], normalization=norm,
                target_spacing=spacing.tolist(), patch_size=patch, median_shape=np.round(median_shape, 2).tolist(),
                crop_nonzero=True, image_order=3, label_resampling="onehot_linear", orientation="RAS")


def plan_hash(p: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a plan (keys sorted)."""
    return hashlib.sha256(json.dumps(to_jsonable(p), sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ preprocessing
def normalize_channels(image: np.ndarray, schemes: Sequence[dict],
                       where: str = "plan") -> tuple[np.ndarray, list[dict]]:
    """Normalise each channel of ``image`` ``(C, *S)`` as its entry of ``schemes`` says (computed in float64).

    Schemes (``entry["scheme"]``; nnU-Net v2 class in brackets):

    - ``zscore_nonzero``: ``(x - mean) / std`` over the non-zero voxels, the others set to 0 [``ZScoreNormalization``
      with ``use_mask_for_norm``];
    - ``zscore_brain``: the same inside ONE mask shared by every ``zscore_brain`` channel: the union of the non-zero
      voxels of all channels, holes filled (:func:`brain_mask`), the others set to 0 [nnU-Net's crop to non-zero +
      ``use_mask_for_norm``: a voxel dark in one modality but inside the brain is normalised, not zeroed];
    - ``zscore``: ``(x - mean) / std`` over every voxel [``ZScoreNormalization``];
    - ``ct``: ``(clip(x, lower, upper) - mean) / std`` with the dataset-wide values stored in the entry
      [``CTNormalization``];
    - ``ct_window``: ``(clip(x, lower, upper) - lower) / (upper - lower)`` (TransUNet-style HU window);
    - ``none``: unchanged [``NoNormalization``];
    - ``rescale_to_0_1``: ``(x - min) / (max - min)`` per case [``RescaleTo01Normalization``];
    - ``rgb_to_0_1``: ``x / 255`` clipped to [0, 1] [``RGBTo01Normalization``, which asserts 0..255 instead].

    Standard deviations and ranges below 1e-8 are replaced by 1e-8, as nnU-Net does.

    Returns:
        ``(float32 image, per-channel statistics used: {mean, std} or {min, max} or {})``.

    Raises:
        ValueError: the entry count differs from the channel count, or an unknown scheme (naming ``where``).
    """
    if len(schemes) != image.shape[0]:
        raise ValueError(f"{where} has {len(schemes)} normalisation entries, image has {image.shape[0]} channels")
    out, stats = np.empty(image.shape, dtype=np.float32), []
    shared = None
    for c, sch in enumerate(schemes):
        x = np.asarray(image[c], dtype=np.float64)
        name = sch.get("scheme") if isinstance(sch, dict) else None
        if name in ("zscore_nonzero", "zscore_brain"):
            if name == "zscore_brain":
                shared = brain_mask(image) if shared is None else shared
                mask = shared
            else:
                mask = x != 0
            vals = x[mask] if mask.any() else x.ravel()
            mean, std = float(vals.mean()), float(max(vals.std(), 1e-8))
            x = np.where(mask, (x - mean) / std, 0.0)
            stats.append(dict(mean=mean, std=std))
        elif name == "zscore":
            mean, std = float(x.mean()), float(max(x.std(), 1e-8))
            x = (x - mean) / std
            stats.append(dict(mean=mean, std=std))
        elif name == "ct":
            x = (np.clip(x, sch["lower"], sch["upper"]) - sch["mean"]) / sch["std"]
            stats.append({})
        elif name == "ct_window":
            x = (np.clip(x, sch["lower"], sch["upper"]) - sch["lower"]) / (sch["upper"] - sch["lower"])
            stats.append({})
        elif name == "none":
            stats.append({})
        elif name == "rescale_to_0_1":
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / max(hi - lo, 1e-8)
            stats.append(dict(min=lo, max=hi))
        elif name == "rgb_to_0_1":
            x = np.clip(x / 255.0, 0.0, 1.0)
            stats.append({})
        else:
            raise ValueError(f"{where}: unknown normalisation scheme {name!r} for channel {c}, expected one of "
                             f"{', '.join(NORM_SCHEMES)}")
        out[c] = x
    return out, stats


def brain_mask(image: np.ndarray) -> np.ndarray:
    """bool ``(*S)``: the voxels non-zero in any channel of ``image`` ``(C, *S)``, holes filled
    (``scipy.ndimage.binary_fill_holes``), as nnU-Net's non-zero mask."""
    return ndimage.binary_fill_holes(np.any(np.asarray(image) != 0, axis=0))


def _normalise(image: np.ndarray, schemes: list[dict]) -> tuple[np.ndarray, list[dict]]:
    return normalize_channels(image, schemes, "plan")


def preprocess_case(case: dict[str, Any], plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Reorient to RAS, crop to non-zero, normalise, resample.

    Args:
        case: ``load_case3d`` output: ``image (C, X, Y, Z)``, ``label (X, Y, Z) | None``, ``meta`` (affine, spacing).
        plan: from :func:`plan`.

    Returns:
        ``(image float32 (C, X', Y', Z'), label int64 (X', Y', Z') | None, props)``; ``props`` (JSON-friendly) holds
        the original geometry, the RAS transform, the crop box, the shapes at each step, ``affine_preprocessed``
        (voxel -> world of the output grid) and the normalisation statistics.
    """
    image, label, meta = case["image"], case.get("label"), case["meta"]
    affine = np.asarray(meta["affine"], dtype=np.float64)
    if image.ndim != 4:
        raise ValueError(f"case image must be (C, X, Y, Z), got shape {image.shape}")
    if label is not None and label.shape != image.shape[1:]:
        raise ValueError(f"case label shape {label.shape} does not match image spatial shape {image.shape[1:]}")
    shape0 = tuple(int(s) for s in image.shape[1:])
    ornt = ras_transform(affine)
    image = _apply_ornt(image, ornt)
    label = None if label is None else _apply_ornt(label, ornt)
    affine_ras = affine @ nib.orientations.inv_ornt_aff(ornt, shape0)
    spacing_ras = np.sqrt((affine_ras[:3, :3] ** 2).sum(axis=0))
    shape_ras = tuple(int(s) for s in image.shape[1:])

    bbox = _nonzero_bbox(image) if plan.get("crop_nonzero", True) else [[0, s] for s in shape_ras]
    image, label = _crop(image, bbox), None if label is None else _crop(label, bbox)
    shape_crop = tuple(int(s) for s in image.shape[1:])

    image, norm_stats = _normalise(image, plan["normalization"])

    target = np.asarray(plan["target_spacing"], dtype=np.float64)
    shape_new = tuple(int(max(1, round(n * s / t))) for n, s, t in zip(shape_crop, spacing_ras, target))
    image = resample_image(image, shape_new, order=int(plan.get("image_order", 3)))
    label = None if label is None else resample_label(label, shape_new)

    scale = np.asarray(shape_crop, dtype=np.float64) / np.asarray(shape_new, dtype=np.float64)
    grid = np.eye(4)
    grid[:3, :3] = np.diag(scale)
    grid[:3, 3] = np.asarray([lo for lo, _ in bbox]) + 0.5 * scale - 0.5  # grid_mode: voxel extents aligned
    props = dict(
        case_id=str(case.get("case_id", meta.get("case_id", ""))),
        original_meta={k: meta[k] for k in _GEOM_KEYS if k in meta},
        original_shape=list(shape0), ornt_to_ras=ornt.tolist(), shape_ras=list(shape_ras),
        affine_ras=affine_ras.tolist(), spacing_ras=spacing_ras.tolist(), bbox=bbox, shape_cropped=list(shape_crop),
        target_spacing=target.tolist(), shape_resampled=list(shape_new),
        affine_preprocessed=(affine_ras @ grid).tolist(),
        normalization_stats=norm_stats, plan_hash=plan_hash(plan),
    )
    props["original_meta"] = to_jsonable(meta_to_json(props["original_meta"]))
    return image, label, props


def invert_prediction(prediction: np.ndarray, props: dict[str, Any]) -> np.ndarray:
    """Map a prediction on the preprocessed grid back to the original voxel grid of the case.

    Args:
        prediction: label map ``(X', Y', Z')`` (ints) or class scores/probabilities ``(K, X', Y', Z')``.
        props: from :func:`preprocess_case`.

    Returns:
        int64 ``(X, Y, Z)`` label map (background 0 outside the crop) or float32 ``(K, X, Y, Z)`` probabilities
        (outside the crop: 1 for class 0, 0 for the rest), in the original orientation and shape.
    """
    prediction = np.asarray(prediction)
    expected = tuple(props["shape_resampled"])
    is_label = prediction.ndim == 3
    if tuple(prediction.shape[-3:]) != expected or prediction.ndim not in (3, 4):
        raise ValueError(f"prediction shape {prediction.shape} does not match the preprocessed shape {expected} "
                         f"(expected (X', Y', Z') or (K, X', Y', Z'))")
    shape_crop, bbox = tuple(props["shape_cropped"]), props["bbox"]
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    if is_label:
        crop = resample_label(prediction.astype(np.int64), shape_crop)
        full = np.zeros(tuple(props["shape_ras"]), dtype=np.int64)
        full[sl] = crop
    else:
        crop = resample_image(prediction.astype(np.float32), shape_crop, order=1)
        full = np.zeros((prediction.shape[0], *props["shape_ras"]), dtype=np.float32)
        full[0] = 1.0
        full[(slice(None), *sl)] = crop
    # ornt_transform(orig, RAS) equals io_orientation(original affine), so RAS -> original is:
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           np.asarray(props["ornt_to_ras"], dtype=np.float64))
    out = _apply_ornt(full, back)
    if tuple(out.shape[-3:]) != tuple(props["original_shape"]):
        raise AssertionError(f"internal: inverted shape {out.shape} != original {props['original_shape']}")
    return out


# ------------------------------------------------------------------------------------------------------------- cache
def _source_signature(files: Sequence[str | os.PathLike]) -> list[list]:
    sig = []
    for f in files:
        st = Path(f).stat()
        sig.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return sig


class PreprocessCache:
    """Preprocess each case once and reuse it: ``cache_dir/plan_<hash>/<case_id>.*`` in the on-disk format of
    :mod:`mambaseg.data.case_store` (mappable ``.npy`` files, or one compressed ``.npz`` with ``compressed=True``)
    + ``<case_id>.json`` (props, written last).

    A case is recomputed when its entry is missing, unreadable, or its source files' size/mtime changed; a different
    plan uses a different folder. An entry of the first format (``<case_id>.npz``, uncompressed, all in RAM when
    read) or of the other storage is converted without preprocessing again. ``hits``/``misses``/``converted`` count.

    Example::

        cache = PreprocessCache("runs/cache")
        case = cache.entry(case_record, plan)          # computes once; a LazyCase reading the files on demand
        image, label, props = cache.load(case_record, plan)   # the arrays in RAM (label int64)
    """

    def __init__(self, cache_dir: str | os.PathLike, compressed: bool = False):
        self.cache_dir = Path(cache_dir)
        self.compressed = bool(compressed)
        self.hits = 0
        self.misses = 0
        self.converted = 0

    def folder(self, plan: dict[str, Any]) -> Path:
        """The cache folder of ``plan`` (created, with ``plan.json``)."""
        d = self.cache_dir / f"plan_{plan_hash(plan)}"
        d.mkdir(parents=True, exist_ok=True)
        pj = d / "plan.json"
        if not pj.exists():
            atomic_write_text(pj, json.dumps(to_jsonable(plan), indent=1))
        return d

    def entry(self, case: Case3D | dict[str, Any], plan: dict[str, Any]) -> LazyCase:
        """The cached entry of ``case`` (made or converted first if needed), as a :class:`LazyCase`."""
        folder, case_id, props, _ = self._ensure(case, plan)
        return LazyCase(folder, case_id, props)

    def load(self, case: Case3D | dict[str, Any], plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Preprocessed ``(image, label, props)`` of ``case`` (a :class:`Case3D` or a ``load_case3d`` dict), in RAM."""
        folder, case_id, props, arrays = self._ensure(case, plan)
        if arrays is None:
            arrays = read_arrays(folder, case_id, props, mmap=False)
        label = arrays["label"]
        return np.asarray(arrays["image"]), None if label is None else label.astype(np.int64), props

    def _ensure(self, case: Case3D | dict[str, Any], plan: dict[str, Any]):
        """``(folder, case_id, props, arrays or None)``: a valid format-2 entry exists afterwards; ``arrays`` are
        returned when they were just computed."""
        if isinstance(case, Case3D):
            case_id, files = case.case_id, [*case.images, *([case.label] if case.label else [])]
        else:
            case_id, files = str(case["case_id"]), list(case["meta"].get("files", []))
            lab = case["meta"].get("label_file")
            files += [lab] if lab else []
        folder = self.folder(plan)
        js = folder / f"{case_id}.json"
        sig = _source_signature(files) if files else []
        if js.exists():
            try:
                props = json.loads(js.read_text())
                if props.get("source_signature") == sig:
                    props = self._reuse(folder, case_id, props)
                    self.hits += 1
                    return folder, case_id, props, None
                logger.info("cache entry %s is stale (source files changed); recomputing", js)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                logger.warning("cache entry %s unreadable (%s); recomputing", js, err)
        self.misses += 1
        loaded = load_case3d(case) if isinstance(case, Case3D) else case
        image, label, props = preprocess_case(loaded, plan)
        props["source_signature"] = sig
        props = write_entry(folder, case_id, image, label, to_jsonable(props), self.compressed)
        (folder / f"{case_id}.npz").unlink(missing_ok=True)  # a first-format entry it replaces
        return folder, case_id, props, {"image": image, "label": label}

    def _reuse(self, folder: Path, case_id: str, props: dict[str, Any]) -> dict[str, Any]:
        """Props of a usable entry: format 2 in the configured storage is checked (files open); the first format or
        the other storage is rewritten. Raises on missing or damaged files (the caller recomputes)."""
        storage = "npz" if self.compressed else "npy"
        if props.get("cache_format") == CACHE_FORMAT:
            arrays = read_arrays(folder, case_id, props, keys=("image", "label", "fg"), mmap=True)
            if props.get("storage") == storage:
                return props
            arrays = {k: None if v is None else np.asarray(v) for k, v in arrays.items()}
            old = entry_files(folder, case_id, props.get("storage") == "npz")
        else:  # first format: <case>.npz, uncompressed zip of image and label
            old = {"npz": folder / f"{case_id}.npz"}
            with np.load(old["npz"]) as z:
                arrays = {"image": z["image"], "label": z["label"] if "label" in z.files else None}
        props = write_entry(folder, case_id, arrays["image"], arrays["label"], props, self.compressed)
        keep = set(entry_files(folder, case_id, self.compressed).values())
        for path in old.values():
            if path not in keep:
                path.unlink(missing_ok=True)
        self.converted += 1
        logger.info("cache entry %s converted to %s storage", folder / case_id, storage)
        return props
