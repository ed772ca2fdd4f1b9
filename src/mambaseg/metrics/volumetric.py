"""Per-case, per-class (or region) volumetric metrics: Dice, IoU and HD95 in mm, with explicit empty-mask policies.

Definitions (stated again in every summary):

- ``TP, FP, FN, TN`` voxel counts of the binary masks (class ``c``: ``label == c``; region: ``isin(label, members)``);
  ``n_pred = TP + FP``, ``n_ref = TP + FN``.
- ``Dice = 2TP / (2TP + FP + FN)``, ``IoU = TP / (TP + FP + FN)``.
- Surface = mask XOR its erosion by the 6-connected structuring element (outside the volume counts as background),
  as in medpy / MONAI. Surface distances use ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing`` (mm).
- ``HD95`` (``hd_method="medpy"``, default): 95th percentile of the pooled distances pred->ref and ref->pred
  (``medpy.metric.binary.hd95``, used by TransUNet, SegMamba, nnFormer). ``hd_method="max_directed"``: the larger of the
  two directed 95th percentiles (MONAI ``compute_hausdorff_distance(percentile=95)``, Google ``surface_distance``).

Empty-mask policies (``empty_policy``), applied when the prediction and/or the reference mask is empty:

=============  =========================  =========================  =========================
policy          pred > 0, ref empty        pred empty, ref > 0        both empty
=============  =========================  =========================  =========================
``nan``         Dice 0, IoU 0, HD95 NaN    Dice 0, IoU 0, HD95 NaN    Dice/IoU/HD95 NaN
``transunet``   Dice 1, IoU 1, HD95 0      Dice 0, IoU 0, HD95 0      Dice 0, IoU 0, HD95 0
``segmamba``    Dice 0, IoU 0, HD95 50     Dice 0, IoU 0, HD95 50     Dice 0, IoU 0, HD95 50
``brats``       Dice 0, IoU 0, HD95 373.13 Dice 0, IoU 0, HD95 373.13 Dice 1, IoU 1, HD95 0
=============  =========================  =========================  =========================

Sources: ``nan`` = nnU-Net v2 ``evaluate_predictions.compute_metrics`` (Dice NaN when TP+FP+FN = 0; nnU-Net has no
HD95, NaN is our choice for an undefined distance) and MIC-DKFZ/nnUNet#380; ``transunet`` = Beckschen/TransUNet
``utils.calculate_metric_percase`` (also VM-UNet, Swin-Unet); ``segmamba`` = ge-xing/SegMamba ``5_compute_metrics.py``;
``brats`` = BraTS "legacy" metrics (rachitsaluja/BraTS-2023-Metrics): both empty -> Dice 1 / HD95 0, one empty ->
HD95 = sqrt(240² + 240² + 155²) = 373.13 mm. IoU follows Dice's convention. Means use ``nanmean`` (nnU-Net).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .overlap import confusion, overlap

__all__ = ["EMPTY_POLICIES", "BRATS_HD95_PENALTY", "SEGMAMBA_HD95_PENALTY", "BRATS_REGIONS", "surface_distances",
           "hausdorff_distance", "mask_metrics", "case_metrics", "evaluate_cases", "nanmean", "METRIC_KEYS"]

logger = logging.getLogger(__name__)

#: BraTS evaluation regions as label sets: whole tumour, tumour core, enhancing tumour (labels 1 NCR, 2 ED, 3 ET)
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
BRATS_HD95_PENALTY = 373.13
SEGMAMBA_HD95_PENALTY = 50.0
METRIC_KEYS = ("Dice", "IoU", "HD95", "TP", "FP", "FN", "TN", "n_pred", "n_ref")
HD_METHODS = ("medpy", "max_directed")
EMPTY_POLICIES: dict[str, str] = {
    "nan": "nnU-Net: Dice/IoU NaN if both masks are empty, 0 if only one is; HD95 NaN whenever a mask is empty.",
    "transunet": "TransUNet calculate_metric_percase: pred>0 & ref empty -> Dice 1, HD95 0; pred empty -> Dice 0, "
                 "HD95 0 (whatever the reference); IoU follows Dice.",
    "segmamba": "SegMamba: any empty mask (pred or ref or both) -> Dice 0, HD95 50; IoU 0.",
    "brats": "BraTS legacy: both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0, HD95 373.13; IoU follows Dice.",
}
METRIC_DEFINITIONS = {
    "Dice": "2TP/(2TP+FP+FN)",
    "IoU": "TP/(TP+FP+FN)",
    "HD95": "95th percentile surface distance in mm (spacing-aware); surfaces = mask XOR 6-connected erosion",
    "HD95_medpy": "percentile of the pooled pred->ref and ref->pred distances (medpy.metric.binary.hd95)",
    "HD95_max_directed": "max of the two directed percentiles (MONAI compute_hausdorff_distance)",
}


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.shape != (ndim,) or not np.all(sp > 0):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {list(np.ravel(spacing))}")
    return sp


def _surface(mask: np.ndarray) -> np.ndarray:
    struct = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=struct, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty binary masks.

    Args:
        pred, ref: bool arrays of equal shape ``(X, Y, Z)`` (any ndim works).
        spacing: voxel size per axis (mm), same axis order as the arrays.

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: for every surface voxel of one mask, the distance to the nearest surface
        voxel of the other.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    sp = _check_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise ValueError("surface_distances needs two non-empty masks")
    # crop to the union's bounding box + 1 voxel: erosion and nearest-surface search are unchanged, EDT is cheaper
    union = pred | ref
    sl = []
    for ax in range(union.ndim):
        idx = np.flatnonzero(np.any(union, axis=tuple(a for a in range(union.ndim) if a != ax)))
        sl.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, union.shape[ax])))
    pred, ref = pred[tuple(sl)], ref[tuple(sl)]
    sp_pred, sp_ref = _surface(pred), _surface(ref)
    d_to_ref = ndimage.distance_transform_edt(~sp_ref, sampling=sp)
    d_to_pred = ndimage.distance_transform_edt(~sp_pred, sampling=sp)
    return d_to_ref[sp_pred], d_to_pred[sp_ref]


def hausdorff_distance(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       percentile: float = 95.0, method: str = "medpy") -> float:
    """Percentile Hausdorff distance in mm (NaN if a mask is empty). ``method``: ``"medpy"`` or ``"max_directed"``."""
    if method not in HD_METHODS:
        raise ValueError(f"method must be one of {HD_METHODS}, got {method!r}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if not pred.any() or not ref.any():
        return float("nan")
    d1, d2 = surface_distances(pred, ref, spacing)
    if method == "medpy":
        return float(np.percentile(np.concatenate([d1, d2]), percentile))
    return float(max(np.percentile(d1, percentile), np.percentile(d2, percentile)))


def mask_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   empty_policy: str = "nan", hd_method: str = "medpy", percentile: float = 95.0) -> dict[str, float]:
    """Dice, IoU, HD95 (mm) and counts for one pair of binary masks, empty masks handled by ``empty_policy``."""
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {sorted(EMPTY_POLICIES)}, got {empty_policy!r}")
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    tp, fp, fn, tn = confusion(pred, ref)  # the core shared with the 2D metrics (.overlap)
    n_pred, n_ref = tp + fp, tp + fn
    counts = dict(TP=tp, FP=fp, FN=fn, TN=tn, n_pred=n_pred, n_ref=n_ref)
    if n_pred > 0 and n_ref > 0:
        dice, iou = overlap(tp, fp, fn)
        hd = hausdorff_distance(pred, ref, spacing, percentile, hd_method)
    elif empty_policy == "nan":
        dice = iou = 0.0 if (n_pred + n_ref) > 0 else float("nan")
        hd = float("nan")
    elif empty_policy == "transunet":
        dice = iou = 1.0 if n_pred > 0 else 0.0
        hd = 0.0
    elif empty_policy == "segmamba":
        dice, iou, hd = 0.0, 0.0, SEGMAMBA_HD95_PENALTY
    else:  # brats
        both_empty = n_pred == 0 and n_ref == 0
        dice = iou = 1.0 if both_empty else 0.0
        hd = 0.0 if both_empty else BRATS_HD95_PENALTY
    return dict(Dice=float(dice), IoU=float(iou), HD95=float(hd), **counts)


def _resolve_classes(classes: Any, arrays: Sequence[np.ndarray] = ()) -> dict[str, tuple[int, ...]]:
    """name -> member labels. ``None``: every non-zero label present; ``"brats"``: WT/TC/ET; ints; name -> int|ints."""
    if classes is None:
        present = sorted(set().union(*(np.unique(a).tolist() for a in arrays)) - {0}) if arrays else []
        return {str(c): (int(c),) for c in present}
    if isinstance(classes, str):
        if classes.lower() != "brats":
            raise ValueError(f"classes as a string must be 'brats', got {classes!r}")
        return dict(BRATS_REGIONS)
    if isinstance(classes, Mapping):
        out = {}
        for name, val in classes.items():
            out[str(name)] = (int(val),) if np.ndim(val) == 0 else tuple(int(v) for v in val)
        return out
    return {str(int(c)): (int(c),) for c in classes}


def case_metrics(pred: np.ndarray, ref: np.ndarray, classes: Any = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 empty_policy: str = "nan", hd_method: str = "medpy") -> dict[str, dict[str, float]]:
    """Metrics of one case for every class/region.

    Args:
        pred, ref: integer label maps ``(X, Y, Z)``.
        classes: None (every non-zero label in either map), ``"brats"`` (WT/TC/ET regions), a list of labels, or a
            mapping name -> label or name -> labels (region).
        spacing: voxel size (mm) per axis.

    Returns:
        ``{class_name: {Dice, IoU, HD95, TP, FP, FN, TN, n_pred, n_ref}}``.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    out = {}
    for name, members in _resolve_classes(classes, (pred, ref)).items():
        out[name] = mask_metrics(np.isin(pred, members), np.isin(ref, members), spacing, empty_policy, hd_method)
    return out


def nanmean(values: list[float]) -> float:
    """Mean ignoring NaN (nnU-Net's averaging); NaN when there is no finite value."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.size == 0 or np.all(np.isnan(vals)):
        return float("nan")
    return float(np.nanmean(vals))


def evaluate_cases(predictions: Sequence[np.ndarray], references: Sequence[np.ndarray], classes: Any = None, *,
                   spacing: Sequence[float] | Sequence[Sequence[float]] | None = None, empty_policy: str = "nan",
                   hd_method: str = "medpy", case_ids: Sequence[str] | None = None,
                   prediction_files: Sequence[str] | None = None,
                   reference_files: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate prediction/reference label maps into an nnU-Net ``summary.json``-shaped dict (arrays only: reading
    files is :mod:`mambaseg.engine.evaluate`'s job).

    Args:
        predictions, references: equal-length sequences of integer label maps.
        classes: see :func:`case_metrics`; None = every non-zero label found in any reference or prediction.
        spacing: voxel size (mm) of every case, or one per case; default 1 mm.
        empty_policy: ``"nan"`` | ``"transunet"`` | ``"segmamba"`` | ``"brats"`` (see module docstring).
        hd_method: ``"medpy"`` | ``"max_directed"``.
        case_ids: names for the cases (default: their indices).
        prediction_files, reference_files: where the maps came from, recorded in each case's row (default
            ``"<array>"``).

    Returns:
        ``{metric_per_case: [{case_id, prediction_file, reference_file, metrics: {class: {...}}}], mean: {class:
        {metric: nanmean}}, foreground_mean: {metric: nanmean over classes}, empty_policy, empty_policy_description,
        hd_method, hd_percentile, metric_definitions, n_cases}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions and {len(references)} references, expected equal")
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {sorted(EMPTY_POLICIES)}, got {empty_policy!r}")
    if hd_method not in HD_METHODS:
        raise ValueError(f"hd_method must be one of {HD_METHODS}, got {hd_method!r}")
    per_case_spacing = spacing is not None and len(spacing) > 0 and np.ndim(spacing[0]) == 1
    loaded = []
    for i, (p, r) in enumerate(zip(predictions, references)):
        pa, ra = np.asarray(p), np.asarray(r)
        pf = prediction_files[i] if prediction_files is not None else "<array>"
        rf = reference_files[i] if reference_files is not None else "<array>"
        if pa.shape != ra.shape:
            raise ValueError(f"prediction {pf} shape {pa.shape} != reference {rf} shape {ra.shape}")
        if spacing is None:
            sp = (1.0,) * ra.ndim
        else:
            sp = tuple(float(x) for x in (spacing[i] if per_case_spacing else spacing))
        cid = case_ids[i] if case_ids is not None else str(i)
        loaded.append((cid, pf, rf, pa, ra, sp))
    cls = _resolve_classes(classes, [a for c in loaded for a in (c[3], c[4])]) if classes is None else \
        _resolve_classes(classes)
    per_case = []
    for cid, pf, rf, pa, ra, sp in loaded:
        per_case.append(dict(case_id=str(cid), prediction_file=pf, reference_file=rf, spacing=list(sp),
                             metrics=case_metrics(pa, ra, cls, sp, empty_policy, hd_method)))
    mean = {name: {k: nanmean([c["metrics"][name][k] for c in per_case]) for k in METRIC_KEYS} for name in cls}
    fg_mean = {k: nanmean([mean[name][k] for name in cls]) for k in METRIC_KEYS}
    return dict(metric_per_case=per_case, mean=mean, foreground_mean=fg_mean, classes={k: list(v) for k, v in
                cls.items()}, empty_policy=empty_policy, empty_policy_description=EMPTY_POLICIES[empty_policy],
                hd_method=hd_method, hd_percentile=95, units={"HD95": "mm"}, metric_definitions=METRIC_DEFINITIONS,
                n_cases=len(per_case))
