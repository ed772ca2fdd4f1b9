"""Each benchmark run predicted and evaluated on the test set (or, in cross-validation, on the cases its fold held
out) with :mod:`mambaseg.engine.predict` and :mod:`mambaseg.engine.evaluate`, and the per-case metrics read from an
evaluation summary (:func:`case_metrics`, 2D and 3D alike)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .plan import BenchmarkTestSet, RunSpec

__all__ = ["case_metrics", "evaluate_run"]


def evaluate_run(spec: RunSpec, test: BenchmarkTestSet) -> dict:
    from ...engine.evaluate import evaluate
    from ...engine.predict import predict

    pred_dir, eval_dir = spec.run_dir / "test_pred", spec.run_dir / "test_eval"
    if test.folds:
        images, labels = _held_out_links(spec)
        predict(spec.run_dir, images, pred_dir, overwrite=True, progress=False)
        d = spec.cfg.data  # BraTS tumour labels are scored as BraTS regions (label 4 of 2019-2021 read as 3)
        regions = "brats" if d.layout == "brats" or d.preset in ("brats2021", "brats2023") else ""
        return evaluate(pred_dir, labels, eval_dir, regions=regions, overwrite=True)
    predict(spec.run_dir, test.images, pred_dir, probs=True, mask=test.mask, overwrite=True, progress=False)
    return evaluate(pred_dir, test.labels, eval_dir, mask=test.mask, overwrite=True)


def _held_out_links(spec: RunSpec) -> tuple[Path, Path]:
    """``(inputs, references)``: folders in the run folder of links to the cases its cross-validation fold held
    out — each case's folder (case-folder layouts) or image file(s), and its label as ``<case id><suffix>`` — so that
    predict and evaluate see exactly these cases (the data stay where they are, untouched)."""
    import shutil

    from ...data.io.suffixes import volume_suffix
    from ...engine.data import held_out_cases

    cases = held_out_cases(spec.cfg.data)
    images, labels = spec.run_dir / "held_out" / "images", spec.run_dir / "held_out" / "labels"
    shutil.rmtree(spec.run_dir / "held_out", ignore_errors=True)  # links only; made again from the config
    images.mkdir(parents=True)
    labels.mkdir()
    folders = spec.cfg.data.layout in ("case_folders", "brats")
    for c in cases:
        sources = [c.images[0].parent] if folders else list(c.images)
        for src in dict.fromkeys(sources):
            (images / src.name).symlink_to(src.resolve(), target_is_directory=src.is_dir())
        (labels / f"{c.case_id}{volume_suffix(c.label) or '.nii.gz'}").symlink_to(c.label.resolve())
    return images, labels


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def case_metrics(result: dict) -> list[tuple[str, str, float]]:
    """(case, metric, value) rows of an evaluation summary: 2D metrics as they are; 3D ``dice``/``iou``/``hd95``
    (mean over foreground classes of the case) plus ``dice:<class>`` and ``hd95:<class>``."""
    from ...engine.evaluate import METRICS_2D

    rows = []
    if result.get("kind") == "2d":
        for r in result["metric_per_case"]:
            for k in METRICS_2D:
                if k in r:
                    rows.append((str(r["case"]), k, float(r[k])))
        return rows
    names = result.get("class_names") or {}  # summaries keyed by label value (nnU-Net v2) name them here
    for case in result["metric_per_case"]:
        per_class = {str(names.get(k, k)): m for k, m in case["metrics"].items()}
        for key, name in (("Dice", "dice"), ("IoU", "iou"), ("HD95", "hd95")):
            vals = [_float(m.get(key)) for m in per_class.values()]
            vals = [v for v in vals if not math.isnan(v)]
            rows.append((str(case["case_id"]), name, float(np.mean(vals)) if vals else float("nan")))
        for cls, m in per_class.items():
            rows.append((str(case["case_id"]), f"dice:{cls}", _float(m.get("Dice"))))
            rows.append((str(case["case_id"]), f"hd95:{cls}", _float(m.get("HD95"))))
    return rows
