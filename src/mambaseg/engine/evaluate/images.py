"""The 2D piece of ``mambaseg evaluate`` (:mod:`.pipeline` picks it when the predictions are 2D arrays): per-image
foreground Dice, IoU, precision, recall, specificity, pixel accuracy (inside the FOV mask when given) and ROC AUC
when ``<pred>/probs/`` holds probability maps, computed by :mod:`mambaseg.metrics.binary`.

A 2D prediction with at most two values (0 and one other, e.g. 0/1, 0/7 or 0/255) is a label mask: foreground where
non-zero. Any other map is read as probabilities (float in [0, 1], 8-bit /255, 16-bit /65535) and cut at
``threshold``. References must be 0/1 or 0/255; a prediction with three or more integer values all below 16 (no 8-bit
probability map reaches p = 0.06 there) is a multi-label map, not a binary one: an error naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...data.errors import DataError
from ...data.io.raster import read_label, read_mask, read_raw, to_single_channel
from ...data.io.suffixes import SUPPORTED_2D, stem_of
from ...metrics.binary import METRIC_DEFINITIONS, auc, binary_metrics
from ...metrics.volumetric import nanmean
from .files import list_files, match_files, pair_files

__all__ = ["METRICS_2D", "NNUNET_METRICS", "Images", "read_prediction_2d", "read_probabilities_2d"]

METRICS_2D = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc")
#: per-label metrics of nnU-Net v2's summary.json (``compute_metrics``), in its order
NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")
#: an integer 2D prediction whose values all lie below this is a label map, never an 8-bit probability map
_MAX_LABEL_VALUE_2D = 16


def _probability_scale(arr: np.ndarray, meta: dict, path: Path) -> float:
    """Value of probability 1 in a stored probability map: 1 (float), 255 (8-bit) or 65535 (16-bit)."""
    mode = str(meta.get("mode", ""))
    if arr.dtype.kind == "f" and mode not in ("L", "P") and not mode.startswith("I"):
        scale = 1.0
    elif mode in ("L", "P", "1") or arr.dtype == np.uint8:
        scale = 255.0
    elif mode.startswith("I") or arr.dtype == np.uint16:
        scale = 65535.0
    else:
        raise DataError(f"{path}: cannot tell the probability scale of a {arr.dtype} map; store probabilities as "
                        f"float in [0, 1], 8-bit (0-255) or 16-bit (0-65535).")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > scale:
        raise DataError(f"{path}: values {lo:g}..{hi:g} are neither a label mask (0 and one other value) nor "
                        f"probabilities in [0, {scale:g}].")
    return scale


def read_prediction_2d(path: Path, threshold: float = 0.5) -> tuple[np.ndarray, str]:
    """Foreground of a 2D prediction and how it was read.

    A label mask (values ``{0, k}``, integers) is foreground where non-zero, whatever ``k`` (0/1, 0/7, 0/255, ...);
    any other map is a probability map (float in [0, 1], 8-bit /255, 16-bit /65535) cut at ``p > threshold``.

    Returns:
        ``(foreground (H, W) bool, "label mask" | "probabilities > T")``.
    """
    arr, meta = read_raw(path, palette="index")
    arr = to_single_channel(arr, str(path), "prediction")
    values = np.unique(arr)
    nonzero = values[values != 0]
    integral = bool(np.all(values == np.round(values)))
    if nonzero.size <= 1 and integral:
        return arr > 0, "label mask"
    if integral and values.min() >= 0 and values.max() < _MAX_LABEL_VALUE_2D:
        shown = ", ".join(f"{v:g}" for v in nonzero[:10].tolist()) + (" ..." if nonzero.size > 10 else "")
        raise DataError(f"{path}: prediction holds the labels {shown}, outside the class set of a binary 2D "
                        f"evaluation (0 and one foreground value, e.g. 0/1 or 0/255); a probability map with every "
                        f"value below {_MAX_LABEL_VALUE_2D}/255 is ambiguous: store it as float in [0, 1].")
    scale = _probability_scale(arr, meta, path)
    return arr.astype(np.float64) / scale > threshold, f"probabilities > {threshold:g}"


def read_probabilities_2d(path: Path) -> np.ndarray:
    """A stored probability map as float64 in [0, 1] (see :func:`read_prediction_2d` for the scales)."""
    arr, meta = read_raw(path, palette="index")
    arr = to_single_channel(arr, str(path), "probability map")
    return arr.astype(np.float64) / _probability_scale(arr, meta, path)


def _drive_split(gt: Path) -> tuple[Path, Path | None]:
    """A DRIVE split folder (``1st_manual`` + ``mask``) given as --gt: use its labels and masks."""
    if (gt / "1st_manual").is_dir():
        return gt / "1st_manual", (gt / "mask") if (gt / "mask").is_dir() else None
    return gt, None



def _label_names_2d(gt_dir: Path) -> dict[str, str]:
    """nnU-Net key -> name of the 2D foreground label: from ``dataset.json`` beside the references (nnU-Net 2D
    dataset, ``labelsTr/`` in it) when it names label 1, else ``"foreground"``."""
    for f in (gt_dir.parent / "dataset.json", gt_dir / "dataset.json"):
        if not f.is_file():
            continue
        from ...data.layouts.dataset_json import declared_label_values

        try:
            raw = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{f}: invalid JSON ({getattr(err, 'msg', err)}), expected a dataset.json object") \
                from None
        labels = raw.get("labels") if isinstance(raw, dict) else None
        if labels:
            names = [n for n, v in declared_label_values(labels, f).items() if v == 1 and ":" not in n]
            if names:
                return {"1": names[0]}
    return {"1": "foreground"}


def _nnunet_metrics_2d(row: dict) -> dict[str, dict[str, float | int]]:
    """nnU-Net v2's per-label entry of one 2D row (label ``"1"``, counts inside the FOV mask when given)."""
    tp, fp, fn, tn = (int(row[k]) for k in ("tp", "fp", "fn", "tn"))
    return {"1": {"Dice": row["dice"], "IoU": row["iou"], "FP": fp, "TP": tp, "FN": fn, "TN": tn,
                  "n_pred": tp + fp, "n_ref": tp + fn}}


def _score_2d(task: tuple) -> tuple[dict, str]:
    """Score one 2D case (a pool task: only file names travel): ``(row, how the prediction was read)``."""
    p, g, mask_file, prob_file, threshold = task
    pred, kind = read_prediction_2d(p, threshold)
    ref, _ = read_label(g, num_classes=2)
    if pred.shape != ref.shape:
        raise DataError(f"{p}: prediction shape {pred.shape} differs from ground truth {g} shape {ref.shape}.")
    m = None
    if mask_file is not None:
        m, _ = read_mask(mask_file)
        if m.shape != ref.shape:
            raise DataError(f"{mask_file}: mask shape {m.shape} differs from ground truth {g} shape {ref.shape}.")
    row: dict[str, Any] = {"case": stem_of(p), "prediction": str(p.absolute()), "reference": str(g.absolute()),
                           "read_as": kind}
    row.update(binary_metrics(pred, ref > 0, m))
    if prob_file is not None:
        row["auc"] = auc(read_probabilities_2d(prob_file), ref > 0, m)
    row["prediction_file"], row["reference_file"] = row["prediction"], row["reference"]
    row["metrics"] = _nnunet_metrics_2d(row)
    return row, kind



class Images:
    """What 2D evaluation does its own way; the methods are those :func:`.pipeline.score_folder` calls.

    Raises:
        DataError: ``threshold`` outside [0, 1).
    """

    kind = "2d"
    score = staticmethod(_score_2d)  # one case (a pool task): (row, how the prediction was read)

    def __init__(self, mask: Path | None = None, threshold: float = 0.5, ignore_extra: bool = False):
        if not 0.0 <= threshold < 1.0:
            raise DataError(f"--threshold must be in [0, 1), got {threshold:g}.")
        self.mask, self.threshold, self.ignore_extra = mask, threshold, ignore_extra
        self.extras: list[Path] = []

    def pair(self, pred_dir: Path, gt_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
        """``(case, prediction, reference)`` of every prediction (:func:`.files.match_files`), and the references.
        A DRIVE split folder (``1st_manual`` + ``mask``) given as ``gt_dir`` gives its labels and masks."""
        gt_dir, auto_mask = _drive_split(gt_dir)
        self.mask = self.mask or auto_mask
        self.pred_dir, self.gt_dir = pred_dir, gt_dir
        preds = list_files(pred_dir, SUPPORTED_2D, "prediction")
        refs = list_files(gt_dir, SUPPORTED_2D, "ground truth")
        pairs, self.extras = pair_files(preds, refs, ignore_extra=self.ignore_extra)
        self.preds = [p for p, _ in pairs]
        return [(stem_of(p), p, g) for p, g in pairs], refs

    def tasks(self, pairs: list[tuple[str, Path, Path]], workers: int = 1) -> list[tuple]:
        """A pool task per pair (file names only): prediction, reference, its FOV mask and probability map (or
        None), the threshold."""
        mask = self.mask
        mask_pairs = dict(match_files(self.preds, list_files(mask, SUPPORTED_2D, "mask"), "mask", exclusive=False)) \
            if mask else {}
        self.names = _label_names_2d(self.gt_dir)
        prob_dir = self.pred_dir / "probs"
        tasks = []
        for _, p, g in pairs:
            prob_file = prob_dir / f"{stem_of(p)}.png"
            tasks.append((p, g, mask_pairs.get(p), prob_file if prob_file.is_file() else None, self.threshold))
        return tasks

    def summary(self, scored: list[tuple[dict, str]], refs: list[Path], missing: list[str]) -> dict:
        """The summary of the scored cases: nnU-Net v2's shape plus the 2D metrics (:mod:`mambaseg.engine.evaluate`)."""
        rows = [row for row, _ in scored]
        kinds = {kind for _, kind in scored}
        names, mask, threshold = self.names, self.mask, self.threshold
        means = {}
        for k in METRICS_2D:
            vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
            if vals:
                means[k] = float(np.mean(vals))
        label_mean = {key: {k: nanmean([r["metrics"][key][k] for r in rows]) for k in NNUNET_METRICS}
                      for key in names} if rows else {}
        foreground_mean = {k: nanmean([m[k] for m in label_mean.values()]) for k in NNUNET_METRICS}
        return {
            "kind": "2d",
            "prediction_folder": str(self.pred_dir.absolute()), "reference_folder": str(self.gt_dir.absolute()),
            "mask_folder": str(mask.absolute()) if mask else None,
            "n_cases": len(rows),
            "n_references": len(refs),
            "missing_predictions": missing,
            "prediction_reading": ("label masks (0 and one other value) are foreground where non-zero; other maps "
                                   f"are probabilities cut at p > {threshold:g}; this run: {', '.join(sorted(kinds))}"),
            "averaging": "per image, then mean over images (NaN scores are left out of the mean)"
                         + (f"; {len(missing)} references without prediction not scored (--allow-missing)"
                            if missing else ""),
            "region": "inside the FOV mask" if mask else "whole image",
            "definitions": METRIC_DEFINITIONS,
            "class_names": names,
            "classes": {name: [int(key)] for key, name in names.items()},
            "metric_per_case": rows,
            "mean": label_mean,
            "foreground_mean": foreground_mean,
            "mean_2d": means,
        }
