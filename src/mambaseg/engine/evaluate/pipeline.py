"""The one ``mambaseg evaluate`` entry and scoring loop, 2D and 3D: pair the predictions with their references, refuse
(or, with ``allow_missing``, list) references without a prediction, score the pairs one case at a time (in this
process or a pool, results in case order), summarise, write ``summary.json`` and ``metrics.csv``.

The metrics are chosen by the arrays' dimensionality (:func:`piece_for`), not by file suffix: a small per-dimension
piece, :class:`.images.Images` (2D: binary metrics of :mod:`mambaseg.metrics.binary`) or :class:`.volumes.Volumes`
(3D: :mod:`mambaseg.metrics.volumetric`), pairs the files, makes the tasks, scores one case and summarises.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from ...data.errors import DataError
from ...data.io.readers import array_dims
from ...data.io.suffixes import volume_suffix
from ...utils.atomic import atomic_path, atomic_write_text, clean_stale_temp
from ...utils.runlock import RunLock
from ..eval_common import check_workers, missing_references, ordered_map
from ..outputs import check_apart
from .images import METRICS_2D, Images
from .volumes import REGION_SETS, Volumes

__all__ = ["evaluate", "evaluate_2d", "evaluate_3d", "evaluate_pairs", "format_table", "piece_for", "score_folder"]

logger = logging.getLogger("mambaseg.engine.evaluate")


def piece_for(pred: Path, mask: str | Path | None = None, threshold: float | None = None,
              empty_policy: str | None = None, regions: str = "", ignore_extra: bool = False) -> Images | Volumes:
    """The per-dimension piece for the predictions in the folder ``pred``, by the arrays' dimensionality (the
    first volume file's header; a 2D NIfTI is scored as 2D): the one place where 2D and 3D part.

    Raises:
        DataError: an option that does not apply to the data (``mask`` or ``threshold`` with 3D predictions,
            ``empty_policy`` or ``regions`` with 2D ones), naming the option; None means not given.
    """
    volumes = sorted(f for f in pred.iterdir() if volume_suffix(f) and not f.name.startswith("."))
    if volumes and array_dims(volumes[0]) == 3:
        for opt, value in (("--mask", mask), ("--threshold", threshold)):
            if value is not None and value != "":
                raise DataError(f"{opt} {value}: applies to 2D predictions; {pred} holds 3D volumes (e.g. "
                                f"{volumes[0].name}) - leave {opt} out.")
        return Volumes(empty_policy="nan" if empty_policy is None else empty_policy, regions=regions,
                       ignore_extra=ignore_extra)
    for opt, value in (("--empty-policy", empty_policy), ("--regions", regions)):
        if value:
            raise DataError(f"{opt} {value}: applies to 3D predictions; {pred} holds 2D images - leave {opt} out.")
    return Images(Path(mask) if mask else None, 0.5 if threshold is None else threshold, ignore_extra)


def _score(piece: Images | Volumes, pairs: list[tuple[str, Path, Path]], workers: int) -> list:
    """The scoring loop: every pair scored by ``piece.score`` (:func:`~mambaseg.engine.eval_common.ordered_map`:
    in this process or a pool of ``workers``, one case in memory per process), results in pair order."""
    tasks = piece.tasks(pairs, workers)
    return list(ordered_map(piece.score, tasks, workers, describe=lambda t: str(t[0])))


def score_folder(piece: Images | Volumes, pred: Path, gt: Path, allow_missing: bool = False,
                 workers: int = 1) -> dict:
    """The summary of the predictions in ``pred`` against the references in ``gt`` (nothing written): pairs,
    references without a prediction (:func:`~mambaseg.engine.eval_common.missing_references`), the scoring loop,
    the piece's summary."""
    pairs, refs = piece.pair(pred, gt)
    missing = missing_references(refs, [r for _, _, r in pairs], piece.pred_dir, allow_missing)
    result = piece.summary(_score(piece, pairs, workers), refs, missing)
    if piece.extras:  # --ignore-extra: predictions without (their own) reference, listed, not scored
        logger.warning("--ignore-extra: %d prediction(s) without their own reference not scored (e.g. %s)",
                       len(piece.extras), piece.extras[0])
        result["extra_predictions"] = [str(p) for p in piece.extras]
    return result


def evaluate_2d(pred_dir: Path, gt_dir: Path, out: Path, mask: Path | None = None, threshold: float = 0.5,
                overwrite: bool = False, allow_missing: bool = False, workers: int = 1) -> dict:
    """Score 2D predictions (:mod:`.images`); returns the summary (nnU-Net v2's shape plus ours), writes nothing."""
    piece = Images(mask, threshold)
    _check_out(out, overwrite)
    return score_folder(piece, pred_dir, gt_dir, allow_missing, workers)


def evaluate_3d(pred: Path, gt: Path, empty_policy: str = "nan", regions: str = "", allow_missing: bool = False,
                workers: int = 1) -> dict:
    """Score every 3D prediction against its reference (:mod:`.volumes`); references without a prediction are an
    error unless ``allow_missing``; label values outside the class set (``dataset.json``, BraTS regions) are an error
    naming the file. Returns the summary, writes nothing."""
    return score_folder(Volumes(empty_policy=empty_policy, regions=regions), pred, gt, allow_missing, workers)


def evaluate_pairs(pairs: list[tuple[str, Path, Path]], classes, empty_policy: str = "nan", workers: int = 1,
                   allowed: set[int] | None = None, source: str = "") -> dict:
    """:func:`~mambaseg.metrics.volumetric.evaluate_cases` of ``(case id, prediction, reference)`` pairs, one case
    in memory at a time (it would read every pair first): scored pair by pair with the classes fixed beforehand
    (``None``: every non-zero label of any file, collected in a first pass that keeps only the label values), then
    averaged as it averages (nan-mean per class, then over classes).

    Args:
        workers: 1 = in this process; N > 1 = a pool of N processes (:func:`~mambaseg.engine.eval_common.ordered_map`),
            results in pair order, identical outputs.
        allowed: the class set (label values, 0 included): a file holding another value is an error naming it;
            ``source`` says where the set comes from. None: no check.
    """
    piece = Volumes(empty_policy=empty_policy, classes=classes, allowed=allowed, source=source, declared=True)
    return piece.average(_score(piece, pairs, workers))


def _check_out(out: Path, overwrite: bool) -> None:
    for name in ("metrics.csv", "summary.json"):
        if os.path.lexists(out / name) and not overwrite:
            raise DataError(f"{out / name}: output already exists (use --overwrite to replace it).")


def evaluate(pred: str | Path, gt: str | Path, out: str | Path, mask: str | Path | None = None,
             empty_policy: str | None = None, regions: str = "", overwrite: bool = False,
             threshold: float | None = None, allow_missing: bool = False, workers: int = 1,
             ignore_extra: bool = False) -> dict:
    """Evaluate and write ``metrics.csv`` + ``summary.json`` into ``out``; returns the summary.

    Args:
        empty_policy: 3D only (default ``"nan"``); threshold: 2D only (default 0.5); mask: 2D only; regions: 3D
            only - an option given for the other kind of data is an error.
        workers: cases scored in parallel: 1 = in this process, N > 1 = a pool of N processes (same outputs).
        ignore_extra: leave predictions without their own reference out (listed in ``extra_predictions``).

    Raises:
        DataError: a reference without prediction (unless ``allow_missing``), a prediction without (its own)
            reference (unless ``ignore_extra``), two files with one case id, unreadable files, shape mismatches,
            labels outside the class set, ``workers`` < 1, an inapplicable option, an output that is an input (one
            line naming the file or the option).
    """
    check_workers(workers)
    if regions not in ("", *REGION_SETS):
        raise DataError(f"--regions {regions!r}: expected one of {', '.join(REGION_SETS)} (or none).")
    pred, gt, out = Path(pred), Path(gt), Path(out)
    if not pred.is_dir():
        raise DataError(f"{pred}: prediction folder not found.")
    piece = piece_for(pred, mask, threshold, empty_policy, regions, ignore_extra)
    targets = [out / "summary.json", out / "metrics.csv"]
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output exists and is not a folder.")
    _check_out(out, overwrite)
    result = score_folder(piece, pred, gt, allow_missing, workers)
    inputs = [Path(r["prediction_file"]) for r in result.get("metric_per_case", [])] + \
        [Path(r["reference_file"]) for r in result.get("metric_per_case", [])]
    in_dirs = [piece.gt_dir] + ([piece.mask] if getattr(piece, "mask", None) else [])
    check_apart([out], in_dirs=in_dirs, option="-o")  # the output folder never inside the references
    check_apart(out_files=targets, in_files=inputs + [d / "dataset.json" for d in (gt, gt.parent)], option="-o")
    with RunLock(out, what="mambaseg run", option="-o", remove=True):  # one writer per output folder
        _check_out(out, overwrite)
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
