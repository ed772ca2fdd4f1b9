"""Binary decision threshold chosen on the validation split (``infer.threshold: auto``).

During validation the foreground probability maps of the validation cases are cut at every threshold of
:data:`THRESHOLD_GRID` (0.30, 0.32, ..., 0.70); the threshold with the highest mean per-case Dice (inside the FOV
mask when the case has one) is kept (ties: the one closest to 0.5). Training stores it in the checkpoint's ``data``
dict (``data.threshold``, also carried by ONNX exports) and predict cuts at it; a run configured with a number keeps
that number.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["THRESHOLD_GRID", "choose_threshold", "dice_curve", "resolve_threshold"]

logger = logging.getLogger(__name__)

THRESHOLD_GRID: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.30, 0.70 + 1e-9, 0.02), 2))


def dice_curve(prob: np.ndarray, label: np.ndarray, mask: np.ndarray | None = None,
               grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Foreground Dice of ``prob >= t`` against ``label == 1`` for every ``t`` in ``grid`` (inside ``mask``).

    Returns:
        float array ``(len(grid),)``; NaN where both prediction and label are empty.
    """
    prob, label = np.asarray(prob), np.asarray(label)
    if prob.shape != label.shape:
        raise ValueError(f"probability map shape {prob.shape} differs from the label's {label.shape}")
    if mask is not None:
        prob, label = prob[mask], label[mask]
    fg = label.ravel() == 1
    p = prob.ravel()
    n_fg = int(fg.sum())
    out = np.empty(len(grid), dtype=np.float64)
    for i, t in enumerate(grid):
        pred = p >= t
        denom = int(pred.sum()) + n_fg
        out[i] = 2.0 * np.logical_and(pred, fg).sum() / denom if denom else np.nan
    return out


def choose_threshold(curves: Sequence[np.ndarray], grid: Sequence[float] = THRESHOLD_GRID
                     ) -> tuple[float, float]:
    """The grid threshold maximising the mean (over cases, NaN skipped) of per-case Dice curves.

    Args:
        curves: one :func:`dice_curve` per validation case.
        grid: the thresholds the curves were computed at.

    Returns:
        ``(threshold, mean Dice at it)``; ``(0.5, nan)`` when no case has a defined Dice.
    """
    if not curves:
        return 0.5, float("nan")
    stack = np.stack([np.asarray(c, dtype=np.float64) for c in curves])
    if stack.shape[1] != len(grid):
        raise ValueError(f"Dice curves have {stack.shape[1]} points, the grid {len(grid)}")
    defined = ~np.isnan(stack)
    counts = defined.sum(axis=0)
    if not counts.any():
        return 0.5, float("nan")
    mean = np.where(counts > 0, np.where(defined, stack, 0.0).sum(axis=0) / np.maximum(counts, 1), -np.inf)
    best = mean.max()
    ties = [i for i in range(len(grid)) if mean[i] >= best - 1e-12]
    i = min(ties, key=lambda j: abs(grid[j] - 0.5))
    return float(grid[i]), float(mean[i])


def resolve_threshold(config: dict, data: dict | None) -> float:
    """The threshold predict uses: ``config.infer.threshold`` when a number; for ``auto``, the one stored in the
    checkpoint's ``data.threshold`` (0.5 with a warning when the run never validated)."""
    value = (config or {}).get("infer", {}).get("threshold", 0.5)
    if isinstance(value, str) and value.strip().lower() == "auto":
        stored = (data or {}).get("threshold")
        if stored is None:
            logger.warning("infer.threshold is auto but the checkpoint holds no validated threshold; using 0.5")
            return 0.5
        return float(stored)
    return float(value)
