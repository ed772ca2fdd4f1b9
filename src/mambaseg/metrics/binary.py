"""Per-image binary (foreground vs background) metrics, optionally restricted to a field-of-view mask.

All count-based metrics come from the confusion counts TP, FP, FN, TN over the pixels inside ``mask`` (every
pixel when ``mask`` is None); ``pred`` and ``gt`` are binarised as ``> 0`` (pass thresholded predictions).

Empty policy: a metric whose denominator is 0 is **NaN** (undefined), never 0 or 1. In particular Dice and IoU are
NaN when both prediction and ground truth are empty inside the mask; aggregate with ``np.nanmean`` and report how
many images were NaN. (The 3D evaluation in ``metrics.volumetric`` may use SegMamba's DSC 0 / HD95 50 convention.)

``auc`` is the exact ROC AUC from rank statistics (Mann-Whitney U with average ranks for ties), numpy only.
"""

from __future__ import annotations

import numpy as np

from .overlap import confusion, overlap

__all__ = [
    "METRIC_DEFINITIONS",
    "confusion_counts",
    "dice",
    "iou",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "accuracy",
    "auc",
    "binary_metrics",
]

#: One-line formula per metric (used by ``mambaseg evaluate`` to state how each number is computed).
METRIC_DEFINITIONS: dict[str, str] = {
    "dice": "Dice = 2TP / (2TP + FP + FN), foreground class, pixels inside the FOV mask; NaN if pred and GT are empty",
    "iou": "IoU (Jaccard) = TP / (TP + FP + FN), foreground class, inside the FOV mask; NaN if pred and GT are empty",
    "precision": "Precision = TP / (TP + FP) (positive predictive value of the foreground class), inside the FOV; "
                 "note: the Akmamba-Net paper's 'Precision' (97.2 % on DRIVE with Dice 82.6 %) is ambiguous and may "
                 "be pixel accuracy - compare it with 'accuracy' as well",
    "recall": "Recall = Sensitivity = TP / (TP + FN), inside the FOV",
    "sensitivity": "Sensitivity = Recall = TP / (TP + FN), inside the FOV",
    "specificity": "Specificity = TN / (TN + FP), inside the FOV",
    "accuracy": "Pixel accuracy = (TP + TN) / (TP + FP + FN + TN), inside the FOV",
    "auc": "ROC AUC of the foreground probability inside the FOV, exact via rank statistics (ties averaged); "
           "NaN if one class is absent",
}


def _binarise(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} must equal gt shape {gt.shape}")
    p, g = pred > 0, gt > 0
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} must equal gt shape {gt.shape}")
        p, g = p[mask], g[mask]
    return p.ravel(), g.ravel()


def confusion_counts(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, int]:
    """Confusion counts of a binary prediction.

    Args:
        pred: prediction (any shape); values > 0 are foreground.
        gt: ground truth, same shape; values > 0 are foreground.
        mask: optional bool mask of the pixels to count (e.g. the FOV), same shape.

    Returns:
        ``{'tp', 'fp', 'fn', 'tn'}`` as Python ints.
    """
    tp, fp, fn, tn = confusion(*_binarise(pred, gt, mask))  # the core shared with the 3D metrics (.overlap)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _from_counts(c: dict[str, int]) -> dict[str, float]:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    rec = _ratio(tp, tp + fn)
    dice_, iou_ = overlap(tp, fp, fn)
    return {
        "dice": dice_,
        "iou": iou_,
        "precision": _ratio(tp, tp + fp),
        "recall": rec,
        "sensitivity": rec,
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def dice(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Dice = 2TP / (2TP + FP + FN); NaN when pred and gt are both empty (inside ``mask``)."""
    return _from_counts(confusion_counts(pred, gt, mask))["dice"]


def iou(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """IoU = TP / (TP + FP + FN); NaN when pred and gt are both empty."""
    return _from_counts(confusion_counts(pred, gt, mask))["iou"]


def precision(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Precision = TP / (TP + FP); NaN when nothing is predicted."""
    return _from_counts(confusion_counts(pred, gt, mask))["precision"]


def recall(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Recall (sensitivity) = TP / (TP + FN); NaN when gt is empty."""
    return _from_counts(confusion_counts(pred, gt, mask))["recall"]


sensitivity = recall


def specificity(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Specificity = TN / (TN + FP); NaN when gt has no background."""
    return _from_counts(confusion_counts(pred, gt, mask))["specificity"]


def accuracy(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pixel accuracy = (TP + TN) / all counted pixels; NaN when no pixel is counted."""
    return _from_counts(confusion_counts(pred, gt, mask))["accuracy"]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # start index of each tie group in the sorted array
    starts = np.flatnonzero(np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1])))
    ends = np.concatenate((starts[1:], [values.size]))  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def auc(prob: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Exact ROC AUC of scores ``prob`` for the binary ground truth ``gt`` (inside ``mask``).

    AUC = P(score of a random positive > score of a random negative) + 0.5 · P(tie), computed as the
    Mann-Whitney U statistic from average ranks: ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos · n_neg)``.

    Returns:
        The AUC in [0, 1], or NaN when the counted pixels hold only one class.

    Raises:
        ValueError: shape mismatch or non-finite scores.
    """
    prob = np.asarray(prob, dtype=np.float64)
    gt = np.asarray(gt)
    if prob.shape != gt.shape:
        raise ValueError(f"prob shape {prob.shape} must equal gt shape {gt.shape}")
    g = gt > 0
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} must equal gt shape {gt.shape}")
        prob, g = prob[mask], g[mask]
    prob, g = prob.ravel(), g.ravel()
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob must be finite, got NaN/Inf values")
    n_pos = int(np.count_nonzero(g))
    n_neg = int(g.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(_average_ranks(prob)[g].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))


def binary_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None,
                   prob: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of :data:`METRIC_DEFINITIONS` for one image (``auc`` only when ``prob`` is given).

    Returns:
        ``{'dice', 'iou', 'precision', 'recall', 'sensitivity', 'specificity', 'accuracy'[, 'auc'], 'tp', 'fp',
        'fn', 'tn'}``; counts as floats so the dict can be averaged.
    """
    counts = confusion_counts(pred, gt, mask)
    out = _from_counts(counts)
    if prob is not None:
        out["auc"] = auc(prob, gt, mask)
    out.update({k: float(v) for k, v in counts.items()})
    return out
