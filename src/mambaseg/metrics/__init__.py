"""Segmentation metrics: per-image binary metrics inside a FOV (:mod:`.binary`)."""

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
