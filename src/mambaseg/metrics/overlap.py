"""The one confusion-count / overlap core of the 2D and 3D metrics: the per-image metrics of :mod:`.binary` and the
per-case, per-class metrics of :mod:`.volumetric` both count and compute Dice / IoU here.

The masks may have any number of dimensions (2D images, 3D volumes): the dimension is only the arrays' ``ndim``.
Callers binarise first (:mod:`.binary`: ``> 0`` inside a field of view; :mod:`.volumetric`: ``label == c`` or a
region's labels) and keep their own empty-mask policies; this module states the counts and the two overlap ratios
once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion", "overlap"]


def confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of two boolean masks of one shape (any dimension), as Python ints.

    Raises:
        ValueError: the shapes differ.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def overlap(tp: int, fp: int, fn: int) -> tuple[float, float]:
    """``(Dice, IoU)`` = ``(2TP / (2TP + FP + FN), TP / (TP + FP + FN))``; both NaN when ``TP + FP + FN`` is 0
    (prediction and reference empty: the callers' empty-mask policies decide what to report instead)."""
    if tp + fp + fn == 0:
        return float("nan"), float("nan")
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
