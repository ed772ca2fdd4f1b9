"""The nnU-Net-style plan of a volume dataset, and how to apply it and undo it exactly.

1. :func:`mambaseg.data.plans.fingerprint.fingerprint` - the dataset's spacings, shapes and intensity statistics.
2. :func:`plan` — target spacing = per-axis median spacing; normalisation per channel: ``"MR"`` = per-case z-score on
   the non-zero voxels (outside set to 0) - for multi-channel MR and brain layouts on ONE brain mask shared by the
   channels (union of their non-zero voxels, holes filled, as nnU-Net's crop + ``use_mask_for_norm``); ``"CT"`` =
   clip to the foreground 0.5/99.5 percentiles, then z-score with the foreground mean/std (nnU-Net
   ``CTNormalization``), or with ``ct_window=(lo, hi)`` clip to the HU window and scale to [0, 1] (TransUNet
   style); the nnU-Net v2 names ``zscore``, ``noNorm``, ``rescale_to_0_1`` and ``rgb_to_0_1`` (``layout: nnunet``
   picks them from ``channel_names``; see :mod:`mambaseg.data.plans.normalize`); patch size from the median
   resampled shape.
3. :func:`preprocess_case` (forward) — reorient to RAS, crop to the non-zero bounding box, normalise (before
   resampling, as nnU-Net does, so the non-zero mask is exact), resample to the target spacing
   (:mod:`mambaseg.data.plans.geometry`). ``props`` records every step.
4. :func:`invert_prediction` (inverse) — label map (or class probabilities) on the preprocessed grid -> original voxel
   grid: resample back, paste into the uncropped volume (background outside the crop), undo the reorientation.
   Writing the result with :func:`mambaseg.data.io.volume.write_nifti` and the original meta gives the original shape
   and affine.

:class:`mambaseg.data.plans.cache.PreprocessCache` stores the output per case under a folder named by
:func:`plan_hash`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np

from mambaseg.data.io.volume import meta_to_json
from mambaseg.data.plans.geometry import apply_ornt, crop, nonzero_bbox, ras_transform, resample_image, resample_label
from mambaseg.data.plans.normalize import modality_name, normalization_entries, normalize_channels
from mambaseg.utils.jsonable import to_jsonable

__all__ = ["invert_prediction", "plan", "plan_hash", "preprocess_case"]

_GEOM_KEYS = ("path", "shape", "spacing", "affine", "orientation", "qform", "qform_code", "sform", "sform_code",
              "xyzt_units")


def plan(fp: dict[str, Any], modality: str | Sequence[str] = "MR", patch_size: Sequence[int] | None = None, *,
         target_spacing: Sequence[float] | None = None, ct_window: tuple[float, float] | None = None,
         max_patch: int = 128, brain_mask: bool | None = None) -> dict[str, Any]:
    """Preprocessing plan from a :func:`~mambaseg.data.plans.fingerprint.fingerprint`.

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
    return dict(version=1, modality=[modality_name(m) for m in mods], normalization=norm,
                target_spacing=spacing.tolist(), patch_size=patch, median_shape=np.round(median_shape, 2).tolist(),
                crop_nonzero=True, image_order=3, label_resampling="onehot_linear", orientation="RAS")


def plan_hash(p: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of a plan (keys sorted)."""
    return hashlib.sha256(json.dumps(to_jsonable(p), sort_keys=True).encode()).hexdigest()[:16]


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
    image = apply_ornt(image, ornt)
    label = None if label is None else apply_ornt(label, ornt)
    affine_ras = affine @ nib.orientations.inv_ornt_aff(ornt, shape0)
    spacing_ras = np.sqrt((affine_ras[:3, :3] ** 2).sum(axis=0))
    shape_ras = tuple(int(s) for s in image.shape[1:])

    bbox = nonzero_bbox(image) if plan.get("crop_nonzero", True) else [[0, s] for s in shape_ras]
    image, label = crop(image, bbox), None if label is None else crop(label, bbox)
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
    out = apply_ornt(full, back)
    if tuple(out.shape[-3:]) != tuple(props["original_shape"]):
        raise AssertionError(f"internal: inverted shape {out.shape} != original {props['original_shape']}")
    return out
