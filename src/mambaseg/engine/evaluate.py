"""``mambaseg evaluate``: score a folder of predictions against ground truth, 2D or 3D.

2D (PNG/TIF/GIF/...): per-image foreground Dice, IoU, precision, recall, specificity, pixel accuracy (inside the FOV
mask when given) and ROC AUC when ``<pred>/probs/`` holds probability maps. 3D (NIfTI): per-case and per-class
Dice, IoU, HD95 in mm, see :mod:`mambaseg.metrics.volumetric`. Both write ``metrics.csv`` and ``summary.json``
with the definition of every metric next to the numbers.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..data.io import SUPPORTED_2D, DataError, read_image, read_label, read_mask, suffix_of
from ..metrics.binary import METRIC_DEFINITIONS, auc, binary_metrics

__all__ = ["evaluate", "format_table", "match_files"]

METRICS_2D = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


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
    pairs = []
    for p in preds:
        s = _stem(p)
        if s in by_stem:
            pairs.append((p, by_stem[s]))
            continue
        cands = by_key.get(s.split("_")[0], [])
        if len(cands) != 1:
            raise DataError(f"{p}: no unique {what} file for it in {refs[0].parent} (looked for {s}.* or "
                            f"{s.split('_')[0]}_*).")
        pairs.append((p, cands[0]))
    return pairs


def _drive_split(gt: Path) -> tuple[Path, Path | None]:
    """A DRIVE split folder (``1st_manual`` + ``mask``) given as --gt: use its labels and masks."""
    if (gt / "1st_manual").is_dir():
        return gt / "1st_manual", (gt / "mask") if (gt / "mask").is_dir() else None
    return gt, None


def _check_out(out: Path, overwrite: bool) -> None:
    for name in ("metrics.csv", "summary.json"):
        if (out / name).exists() and not overwrite:
            raise DataError(f"{out / name}: output already exists (use --overwrite to replace it).")


def evaluate_2d(pred_dir: Path, gt_dir: Path, out: Path, mask: Path | None = None, threshold: float = 0.5,
                overwrite: bool = False) -> dict:
    gt_dir, auto_mask = _drive_split(gt_dir)
    mask = mask or auto_mask
    preds = _files(pred_dir, SUPPORTED_2D, "prediction")
    pairs = match_files(preds, _files(gt_dir, SUPPORTED_2D, "ground truth"))
    mask_pairs = dict(match_files(preds, _files(mask, SUPPORTED_2D, "mask"), "mask")) if mask else {}
    prob_dir = pred_dir / "probs"
    _check_out(out, overwrite)
    rows = []
    for p, g in pairs:
        pred_img, _ = read_image(p)
        pred = pred_img[0] > (127 if pred_img.max() > 1 else 0)
        ref, _ = read_label(g, num_classes=2)
        if pred.shape != ref.shape:
            raise DataError(f"{p}: prediction shape {pred.shape} differs from ground truth {g} shape {ref.shape}.")
        m = None
        if p in mask_pairs:
            m, _ = read_mask(mask_pairs[p])
            if m.shape != ref.shape:
                raise DataError(f"{mask_pairs[p]}: mask shape {m.shape} differs from ground truth {g} "
                                f"shape {ref.shape}.")
        row = {"case": _stem(p), "prediction": str(p), "reference": str(g)}
        row.update(binary_metrics(pred, ref > 0, m))
        prob_file = prob_dir / f"{_stem(p)}.png"
        if prob_file.is_file():
            prob, _ = read_image(prob_file)
            scale = 65535.0 if prob.max() > 255 else (255.0 if prob.max() > 1 else 1.0)
            row["auc"] = auc(prob[0] / scale, ref > 0, m)
        rows.append(row)
    means = {}
    for k in METRICS_2D:
        vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
        if vals:
            means[k] = float(np.mean(vals))
    return {
        "kind": "2d",
        "prediction_folder": str(pred_dir), "reference_folder": str(gt_dir),
        "mask_folder": str(mask) if mask else None,
        "n_cases": len(rows),
        "averaging": "per image, then mean over images (NaN scores are left out of the mean)",
        "region": "inside the FOV mask" if mask else "whole image",
        "definitions": METRIC_DEFINITIONS,
        "metric_per_case": rows,
        "mean": means,
    }


def evaluate(pred: str | Path, gt: str | Path, out: str | Path, mask: str | Path | None = None,
             empty_policy: str = "nan", regions: str = "", overwrite: bool = False, threshold: float = 0.5) -> dict:
    """Evaluate and write ``metrics.csv`` + ``summary.json`` into ``out``; returns the summary."""
    pred, gt, out = Path(pred), Path(gt), Path(out)
    if not pred.is_dir():
        raise DataError(f"{pred}: prediction folder not found.")
    volumes = [f for f in pred.iterdir() if suffix_of(f) in VOLUME_SUFFIXES]
    if volumes:
        from .evaluate3d import evaluate_3d

        _check_out(out, overwrite)
        result = evaluate_3d(pred, gt, empty_policy=empty_policy, regions=regions)
    else:
        result = evaluate_2d(pred, gt, out, Path(mask) if mask else None, threshold, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=float))
    _write_csv(result, out / "metrics.csv")
    return result


def _write_csv(result: dict, path: Path) -> None:
    rows = result.get("csv_rows") or result["metric_per_case"]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], dict)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def format_table(result: dict) -> str:
    """A plain-text table of the per-case rows and the means, with how the metrics are computed."""
    if result.get("kind") != "2d":
        return result.get("table", json.dumps(result.get("mean", {}), indent=1))
    cols = [k for k in METRICS_2D if k in result["mean"]]
    lines = [f"{'case':16s}" + "".join(f"{c:>12s}" for c in cols)]
    for r in result["metric_per_case"]:
        lines.append(f"{r['case'][:16]:16s}" + "".join(f"{r.get(c, float('nan')):12.4f}" for c in cols))
    lines.append(f"{'mean':16s}" + "".join(f"{result['mean'][c]:12.4f}" for c in cols))
    lines.append(f"({result['averaging']}; {result['region']})")
    for c in cols:
        lines.append(f"  {c}: {result['definitions'].get(c, '')}")
    return "\n".join(lines)
