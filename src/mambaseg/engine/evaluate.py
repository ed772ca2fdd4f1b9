"""``mambaseg evaluate``: score a folder of predictions against ground truth, 2D or 3D.

2D (PNG/TIF/GIF/...): per-image foreground Dice, IoU, precision, recall, specificity, pixel accuracy (inside the FOV
mask when given) and ROC AUC when ``<pred>/probs/`` holds probability maps. A 2D prediction with at most two values
(0 and one other, e.g. 0/1, 0/7 or 0/255) is a label mask: foreground where non-zero. Any other map is read as
probabilities (float in [0, 1], 8-bit /255, 16-bit /65535) and cut at ``threshold``.

Every reference needs a prediction: missing ones are an error naming how many and one of them, unless
``allow_missing`` (then only the predicted cases are scored, with a warning, and the missing ones are listed in
``summary.json`` under ``missing_predictions``, as nnU-Net does with ``chill``). 3D (NIfTI): per-case and per-class
Dice, IoU, HD95 in mm, see :mod:`mambaseg.metrics.volumetric`. Both write ``metrics.csv`` and ``summary.json``
with the definition of every metric next to the numbers.

Labels outside the class set are an error naming the file and the values: 2D references must be 0/1 or 0/255, a 2D
prediction with three or more integer values all below 16 (no 8-bit probability map reaches p = 0.06 there) is a
multi-label map, not a binary one; 3D label maps must hold only the labels of ``dataset.json`` (or of the BraTS
regions, ``--regions brats``).

``summary.json`` has nnU-Net v2's shape (``nnunetv2.evaluation.evaluate_predictions``) in 2D as in 3D, so nnU-Net's
``load_summary_json`` reads it: 2D rows of ``metric_per_case`` carry ``prediction_file`` / ``reference_file``
(absolute) and ``metrics`` keyed by the label value (``{"1": {Dice, IoU, FP, TP, FN, TN, n_pred, n_ref}}``), ``mean``
is keyed the same way, ``foreground_mean`` averages the foreground labels and ``class_names`` names them. The 2D
per-image metrics (``dice``, ``iou``, ``precision``, ...) stay in each row and their means are in ``mean_2d``.

Cases are scored one at a time, in this process (``workers=1``) or in a pool of ``workers`` spawned processes (one
case in memory per worker, one thread each); results are gathered in case order, so the outputs are byte-identical.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import SUPPORTED_2D, DataError, read_label, read_mask, read_raw, suffix_of, to_single_channel
from ..data.nifti import volume_suffix
from ..data.readers import array_dims
from ..metrics.binary import METRIC_DEFINITIONS, auc, binary_metrics
from ..metrics.volumetric import nanmean
from ..utils.atomic import atomic_path, atomic_write_text, clean_stale_temp
from .eval_common import check_workers, missing_references, ordered_map

__all__ = ["evaluate", "format_table", "match_files", "ordered_map", "check_workers"]

logger = logging.getLogger(__name__)

METRICS_2D = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc")
#: per-label metrics of nnU-Net v2's summary.json (``compute_metrics``), in its order
NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")
#: an integer 2D prediction whose values all lie below this is a label map, never an 8-bit probability map
_MAX_LABEL_VALUE_2D = 16


def _stem(p: Path) -> str:
    s = suffix_of(p)
    return p.name[: -len(s)] if s else p.stem


def _files(folder: Path, suffixes, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found.")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and suffix_of(f) in suffixes)
    if not files:
        raise DataError(f"{folder}: {what} folder has no files ({', '.join(suffixes)}).")
    return files


def match_files(preds: list[Path], refs: list[Path], what: str = "ground truth") -> list[tuple[Path, Path]]:
    """Pair predictions with references by identical stem, else by the leading case key (text before the first '_',
    e.g. DRIVE's ``01_test`` <-> ``01_manual1``). Every prediction needs exactly one reference."""
    by_stem = {_stem(r): r for r in refs}
    by_key: dict[str, list[Path]] = {}
    for r in refs:
        by_key.setdefault(_stem(r).split("_")[0], []).append(r)
    by_dot: dict[str, list[Path]] = {}  # STARE: im0001.ppm <-> im0001.ah.ppm
    for r in refs:
        by_dot.setdefault(_stem(r).split(".")[0], []).append(r)
    pairs = []
    for p in preds:
        s = _stem(p)
        if s in by_stem:
            pairs.append((p, by_stem[s]))
            continue
        case = re.sub(r"_\d{4}$", "", s)  # nnU-Net: an image-named prediction CASE_0000 <-> label CASE
        if case != s and case in by_stem:
            pairs.append((p, by_stem[case]))
            continue
        cands = by_key.get(s.split("_")[0], [])
        if len(cands) != 1 and len(by_dot.get(s.split(".")[0], [])) == 1:
            cands = by_dot[s.split(".")[0]]
        if len(cands) != 1:
            raise DataError(f"{p}: no unique {what} file for it in {refs[0].parent} (looked for {s}.*, "
                            f"{s.split('_')[0]}_* or {s.split('.')[0]}.*).")
        pairs.append((p, cands[0]))
    return pairs


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


def _check_out(out: Path, overwrite: bool) -> None:
    for name in ("metrics.csv", "summary.json"):
        if (out / name).exists() and not overwrite:
            raise DataError(f"{out / name}: output already exists (use --overwrite to replace it).")


def _label_names_2d(gt_dir: Path) -> dict[str, str]:
    """nnU-Net key -> name of the 2D foreground label: from ``dataset.json`` beside the references (nnU-Net 2D
    dataset, ``labelsTr/`` in it) when it names label 1, else ``"foreground"``."""
    for f in (gt_dir.parent / "dataset.json", gt_dir / "dataset.json"):
        if not f.is_file():
            continue
        from ..data.layouts.dataset_json import declared_label_values

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
    row: dict[str, Any] = {"case": _stem(p), "prediction": str(p.absolute()), "reference": str(g.absolute()),
                           "read_as": kind}
    row.update(binary_metrics(pred, ref > 0, m))
    if prob_file is not None:
        row["auc"] = auc(read_probabilities_2d(prob_file), ref > 0, m)
    row["prediction_file"], row["reference_file"] = row["prediction"], row["reference"]
    row["metrics"] = _nnunet_metrics_2d(row)
    return row, kind


def evaluate_2d(pred_dir: Path, gt_dir: Path, out: Path, mask: Path | None = None, threshold: float = 0.5,
                overwrite: bool = False, allow_missing: bool = False, workers: int = 1) -> dict:
    """Score 2D predictions (see the module docstring); returns the summary (nnU-Net v2's shape plus ours)."""
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"--threshold must be in [0, 1), got {threshold:g}.")
    gt_dir, auto_mask = _drive_split(gt_dir)
    mask = mask or auto_mask
    preds = _files(pred_dir, SUPPORTED_2D, "prediction")
    refs = _files(gt_dir, SUPPORTED_2D, "ground truth")
    pairs = match_files(preds, refs)
    missing = missing_references(refs, [g for _, g in pairs], pred_dir, allow_missing)
    mask_pairs = dict(match_files(preds, _files(mask, SUPPORTED_2D, "mask"), "mask")) if mask else {}
    names = _label_names_2d(gt_dir)
    prob_dir = pred_dir / "probs"
    _check_out(out, overwrite)
    tasks = []
    for p, g in pairs:
        prob_file = prob_dir / f"{_stem(p)}.png"
        tasks.append((p, g, mask_pairs.get(p), prob_file if prob_file.is_file() else None, threshold))
    rows, kinds = [], set()
    for row, kind in ordered_map(_score_2d, tasks, workers, describe=lambda t: str(t[0])):
        rows.append(row)
        kinds.add(kind)
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
        "prediction_folder": str(pred_dir.absolute()), "reference_folder": str(gt_dir.absolute()),
        "mask_folder": str(mask.absolute()) if mask else None,
        "n_cases": len(rows),
        "n_references": len(refs),
        "missing_predictions": missing,
        "prediction_reading": ("label masks (0 and one other value) are foreground where non-zero; other maps are "
                               f"probabilities cut at p > {threshold:g}; this run: {', '.join(sorted(kinds))}"),
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


def evaluate(pred: str | Path, gt: str | Path, out: str | Path, mask: str | Path | None = None,
             empty_policy: str = "nan", regions: str = "", overwrite: bool = False, threshold: float = 0.5,
             allow_missing: bool = False, workers: int = 1) -> dict:
    """Evaluate and write ``metrics.csv`` + ``summary.json`` into ``out``; returns the summary.

    Args:
        workers: cases scored in parallel: 1 = in this process, N > 1 = a pool of N processes (same outputs).

    Raises:
        DataError: a reference without prediction (unless ``allow_missing``), a prediction without reference,
            unreadable files, shape mismatches, labels outside the class set, ``workers`` < 1 (one line naming the
            file or the option).
    """
    check_workers(workers)
    pred, gt, out = Path(pred), Path(gt), Path(out)
    if not pred.is_dir():
        raise DataError(f"{pred}: prediction folder not found.")
    volumes = sorted(f for f in pred.iterdir() if volume_suffix(f))
    if volumes and array_dims(volumes[0]) == 3:  # by the arrays' dimensionality: 2D NIfTI is scored as 2D
        from .evaluate3d import evaluate_3d

        _check_out(out, overwrite)
        result = evaluate_3d(pred, gt, empty_policy=empty_policy, regions=regions, allow_missing=allow_missing,
                             workers=workers)
    else:
        result = evaluate_2d(pred, gt, out, Path(mask) if mask else None, threshold, overwrite, allow_missing,
                             workers)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(out, {"summary.json", "metrics.csv"})  # leftovers of a killed run
    # each file is complete or absent: temporary name in the same folder, then rename
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2, default=float))
    _write_csv(result, out / "metrics.csv")
    return result


def _write_csv(result: dict, path: Path) -> None:
    rows = result.get("csv_rows") or result["metric_per_case"]
    keys: list[str] = []
    for r in rows:  # 2D: the nnU-Net copies of the paths (prediction_file, reference_file) stay out of the CSV
        keys += [k for k in r if k not in keys and not isinstance(r[k], dict)
                 and not (result.get("kind") == "2d" and k in ("prediction_file", "reference_file"))]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def format_table(result: dict) -> str:
    """A plain-text table of the per-case rows and the means, with how the metrics are computed."""
    if result.get("kind") != "2d":
        return result.get("table", json.dumps(result.get("mean", {}), indent=1))
    mean = result.get("mean_2d", result["mean"])
    cols = [k for k in METRICS_2D if k in mean]
    lines = [f"{'case':16s}" + "".join(f"{c:>12s}" for c in cols)]
    for r in result["metric_per_case"]:
        lines.append(f"{r['case'][:16]:16s}" + "".join(f"{r.get(c, float('nan')):12.4f}" for c in cols))
    lines.append(f"{'mean':16s}" + "".join(f"{mean[c]:12.4f}" for c in cols))
    lines.append(f"({result['averaging']}; {result['region']}; {result['prediction_reading']})")
    for c in cols:
        lines.append(f"  {c}: {result['definitions'].get(c, '')}")
    return "\n".join(lines)
