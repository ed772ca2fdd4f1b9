"""Binary per-image metrics: hand-computed cases, FOV masking, NaN policy and exact AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mambaseg.metrics import (
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

# 3x4 case: TP = 2, FP = 1, FN = 3, TN = 6
PRED = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
GT = np.array([[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]])


def test_counts_and_hand_computed_values():
    assert confusion_counts(PRED, GT) == {"tp": 2, "fp": 1, "fn": 3, "tn": 6}
    assert dice(PRED, GT) == pytest.approx(4 / 8)
    assert iou(PRED, GT) == pytest.approx(2 / 6)
    assert precision(PRED, GT) == pytest.approx(2 / 3)
    assert recall(PRED, GT) == pytest.approx(2 / 5) == sensitivity(PRED, GT)
    assert specificity(PRED, GT) == pytest.approx(6 / 7)
    assert accuracy(PRED, GT) == pytest.approx(8 / 12)


def test_mask_excludes_pixels():
    mask = np.ones_like(GT, dtype=bool)
    mask[0, 2] = False  # drop the FP
    mask[1, :2] = False  # drop two FN
    mask[2] = False  # drop four TN
    assert confusion_counts(PRED, GT, mask) == {"tp": 2, "fp": 0, "fn": 1, "tn": 2}
    assert dice(PRED, GT, mask) == pytest.approx(4 / 5)
    assert precision(PRED, GT, mask) == 1.0
    assert accuracy(PRED, GT, mask) == pytest.approx(4 / 5)


def test_values_above_zero_are_foreground():
    assert confusion_counts(PRED * 255, GT * 3) == confusion_counts(PRED, GT)
    assert dice(PRED.astype(bool), GT.astype(np.uint8)) == pytest.approx(0.5)


def test_empty_policy_nan():
    empty = np.zeros((4, 4))
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))
    assert math.isnan(precision(empty, empty)) and math.isnan(recall(empty, empty))
    assert specificity(empty, empty) == 1.0 and accuracy(empty, empty) == 1.0
    one = empty.copy()
    one[0, 0] = 1
    assert dice(one, empty) == 0.0 and dice(empty, one) == 0.0
    assert math.isnan(accuracy(one, one, np.zeros((4, 4), bool)))


def test_shape_mismatch():
    with pytest.raises(ValueError, match="pred shape"):
        dice(PRED[:2], GT)
    with pytest.raises(ValueError, match="mask shape"):
        dice(PRED, GT, np.ones((2, 2), bool))


def _auc_bruteforce(prob, gt):
    pos, neg = prob[gt > 0], prob[gt == 0]
    diff = pos[:, None] - neg[None, :]
    return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    gt = rng.random((17, 13)) < 0.3
    prob = np.round(rng.random((17, 13)) * 0.6 + 0.4 * gt, 1)  # rounding creates many ties
    assert auc(prob, gt) == pytest.approx(_auc_bruteforce(prob.ravel(), gt.ravel()), abs=1e-12)
    mask = rng.random((17, 13)) < 0.6
    assert auc(prob, gt, mask) == pytest.approx(_auc_bruteforce(prob[mask], gt[mask]), abs=1e-12)


def test_auc_extremes_and_missing_class():
    gt = np.array([0, 0, 1, 1])
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), gt) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), gt) == 0.0
    assert auc(np.full(4, 0.5), gt) == 0.5
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isnan(auc(np.array([0.1, 0.9, 0.3]), np.array([0, 1, 0]), np.array([True, False, True])))
    with pytest.raises(ValueError, match="finite"):
        auc(np.array([np.nan, 0.2]), np.array([0, 1]))


def test_binary_metrics_and_definitions():
    prob = np.where(PRED > 0, 0.9, 0.1)
    out = binary_metrics(PRED, GT, prob=prob)
    assert out["dice"] == pytest.approx(0.5) and out["tp"] == 2.0 and "auc" in out
    assert out["auc"] == pytest.approx(_auc_bruteforce(prob.ravel(), GT.ravel()))
    metric_keys = {k for k in out if k not in ("tp", "fp", "fn", "tn")}
    assert metric_keys == set(METRIC_DEFINITIONS)
    assert all(isinstance(v, str) and "\n" not in v for v in METRIC_DEFINITIONS.values())
    assert "ambiguous" in METRIC_DEFINITIONS["precision"]
    assert "auc" not in binary_metrics(PRED, GT)
