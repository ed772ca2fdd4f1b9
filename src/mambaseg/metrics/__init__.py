"""Segmentation metrics: per-image binary metrics inside a FOV (:mod:`.binary`) and per-case volumetric metrics
(:mod:`.volumetric`), counting and overlapping through one core for 2D and 3D (:mod:`.overlap`)."""

from __future__ import annotations

from mambaseg.metrics.binary import (
    METRIC_DEFINITIONS,
    accuracy,
    auc,
    binary_metrics,
    confusion_counts,
    dice,
    iou,
    precision,
    recall,
    sensitivity,
    specificity,
)

__all__ = [
    "METRIC_DEFINITIONS",
    "accuracy",
    "auc",
    "binary_metrics",
    "confusion_counts",
    "dice",
    "iou",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
]
