"""The 3D piece of ``mambaseg evaluate`` (:mod:`.pipeline` picks it when the predictions are 3D arrays): label
maps paired by case id (nnU-Net convention, :func:`.files.match_cases`) and scored with
:mod:`mambaseg.metrics.volumetric` (Dice, IoU, HD95 in mm, empty-mask policy stated in the output).

``summary.json`` follows nnU-Net v2's schema (``nnunetv2.evaluation.evaluate_predictions``), so nnU-Net's own
``load_summary_json`` reads it: ``metric_per_case[i]["metrics"]`` and ``mean`` are keyed by the label value as a
string (``"1"``, ``"2"``) or, for regions, by the string of the member tuple (``"(1, 2, 3)"``); each entry holds
``Dice, IoU, FN, FP, TP, TN, n_pred, n_ref`` (plus our ``HD95`` in mm); ``foreground_mean`` is the mean over the
classes. The names sit alongside in ``class_names`` (key -> name, e.g. ``{"1": "Anterior"}``) and ``classes``
(name -> member labels). ``prediction_file`` / ``reference_file`` are absolute paths, so a report made in another
folder still finds the volumes for its overlays.

Regions: ``--regions brats`` scores whole tumour (1, 2, 3), tumour core (1, 3) and enhancing tumour (3) on BraTS
2021/2023 labels (BraTS 2019-2021's enhancing label 4 is read as 3, as training relabels it); ``--regions wt`` scores
the whole tumour alone (every label > 0; what binary whole-tumour labels such as BraTS 2018's ``GT_W`` allow).
References may be case folders (``<gt>/<case>/<label>``, the label found by the BraTS presets' label patterns:
``*-seg.nii*``, ``*_seg.nii*``, ``GT_W.nii*``), as ``layout: case_folders`` datasets hold them.

Labels outside the class set are an error naming the file and the values: with a ``dataset.json`` beside the
references every label value must be declared there, with ``--regions brats`` / ``wt`` be one of 0-4. Without
either, every label found is scored (nothing can be outside). Cases are scored one at a time, in this process or in a
process pool (:func:`mambaseg.engine.eval_common.ordered_map`), gathered in case order.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ...data.errors import DataError
from ...data.io.suffixes import volume_suffix
from ...data.io.volume import read_volume_label
from ...data.load3d import remap_labels
from ...metrics.volumetric import METRIC_KEYS, evaluate_cases, nanmean
from ..eval_common import ordered_map
from .files import match_cases

__all__ = ["REGION_SETS", "Volumes", "check_label_set", "label_key", "nnunet_keyed"]

#: ``--regions`` values: BraTS WT/TC/ET, or the whole tumour alone (binary whole-tumour labels)
REGION_SETS = ("brats", "wt")
BRATS_RELABEL = {4: 3}  # BraTS 2019-2021 enhancing tumour -> 2023's label

logger = logging.getLogger(__name__)


def label_key(members, region: bool = False) -> str:
    """nnU-Net's key of a label (``"1"``) or region (``"(1, 2, 3)"``, ``label_or_region_to_key``: ``str`` of it)."""
    members = tuple(int(m) for m in members)
    return str(members) if region or len(members) != 1 else str(members[0])


def nnunet_keyed(result: dict, regions: bool = False) -> dict:
    """Re-key :func:`~mambaseg.metrics.volumetric.evaluate_cases`' name-keyed ``mean`` and per-case ``metrics`` by
    label value (nnU-Net v2's ``summary.json``), keeping the names in ``class_names`` (key -> name)."""
    keys = {name: label_key(members, regions) for name, members in result["classes"].items()}
    if len(set(keys.values())) != len(keys):
        raise DataError(f"two classes share one label value: {result['classes']}; expected distinct labels.")
    out = dict(result)
    out["class_names"] = {k: name for name, k in keys.items()}
    out["mean"] = {keys[name]: m for name, m in result["mean"].items()}
    out["metric_per_case"] = [dict(c, metrics={keys[name]: m for name, m in c["metrics"].items()})
                              for c in result["metric_per_case"]]
    return out


def check_label_set(arr: np.ndarray, path: Path | str, allowed: set[int] | None, source: str = "") -> None:
    """Raise a one-line :class:`DataError` naming ``path`` and the values of ``arr`` outside ``allowed`` (None:
    no class set, nothing to check)."""
    if allowed is None:
        return
    values = np.unique(arr)
    bad = [int(v) for v in values.tolist() if int(v) not in allowed]
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DataError(f"{path}: label values {shown} are outside the class set {sorted(allowed)}"
                        f"{f' ({source})' if source else ''}; expected only these labels.")


def _label_values(task: tuple) -> set[int]:
    """Label values of a prediction and its reference (pool task of the first pass when no classes are declared)."""
    _cid, p, r = task
    return {int(v) for f in (p, r) for v in np.unique(read_volume_label(f)[0]).tolist()}


def _score_3d(task: tuple) -> dict:
    """Score one case (a pool task: only file names travel): each file is read once, its labels checked against
    the class set, then :func:`evaluate_cases` of the pair (identical to passing it the files)."""
    p, r, cid, classes, empty_policy, allowed, source = task[:7]
    relabel = task[7] if len(task) > 7 else None
    pa, pm = read_volume_label(p)
    check_label_set(pa, p, allowed, source)
    ra, rm = read_volume_label(r)
    check_label_set(ra, r, allowed, source)
    if relabel:  # BraTS 2019-2021 enhancing tumour 4 -> 3 (after the check: 4 is an allowed raw value)
        pa, ra = (remap_labels(a, relabel) for a in (pa, ra))
    if pa.shape != ra.shape:
        raise DataError(f"{p}: prediction shape {pa.shape} differs from reference {r} shape {ra.shape}.")
    if not np.allclose(pm["affine"], rm["affine"], rtol=0, atol=1e-3):
        logger.warning("prediction %s and reference %s have different affines", p, r)
    res = evaluate_cases([pa], [ra], classes, spacing=[float(x) for x in rm["spacing"]], empty_policy=empty_policy,
                         case_ids=[cid])
    for c in res["metric_per_case"]:
        c["prediction_file"], c["reference_file"] = str(p), str(r)
    return res


def _declared_classes(gt: Path, regions: str) -> tuple:
    """``(classes, allowed label values, where they come from)``: the BraTS regions (``regions == "brats"``), the
    labels of the ``dataset.json`` beside the references, or ``(None, None, "")`` (every label found is scored)."""
    classes, allowed, source = None, None, ""
    labels_json = gt.parent / "dataset.json"
    if regions in REGION_SETS:
        from ...metrics.volumetric import BRATS_REGIONS

        allowed = {0, 4} | {v for members in BRATS_REGIONS.values() for v in members}  # 4: BraTS 2019-2021 ET
        if regions == "brats":
            classes, source = "brats", "BraTS regions, --regions brats (label 4 read as 3)"
        else:
            classes, source = {"WT": BRATS_REGIONS["WT"]}, "whole tumour, --regions wt (every label > 0)"
    elif labels_json.is_file():
        from ...data.layouts.dataset_json import declared_label_values

        try:
            raw = json.loads(labels_json.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{labels_json}: invalid JSON ({getattr(err, 'msg', err)}), expected a dataset.json "
                            f"object") from None
        labels = raw.get("labels", {}) if isinstance(raw, dict) else {}
        if labels:
            declared = declared_label_values(labels, labels_json)  # one-line error naming the file and bad key
            allowed, source = {0} | set(declared.values()), f"labels of {labels_json}"
            # MSD: {"0": "background", "1": "Anterior"}; nnU-Net v2: {"background": 0, "Anterior": 1}
            items = [(v, int(k)) for k, v in labels.items()] if all(k.isdigit() for k in labels) else \
                [(k, int(v)) for k, v in labels.items() if isinstance(v, int)]
            classes = {name: (val,) for name, val in items if val != 0} or None
    return classes, allowed, source


class Volumes:
    """What 3D evaluation does its own way; the methods are those :func:`.pipeline.score_folder` calls.

    Args:
        empty_policy: see :func:`mambaseg.metrics.volumetric.evaluate_cases`.
        regions: ``"brats"`` scores the BraTS regions, ``"wt"`` the whole tumour alone.
        classes, allowed, source: the class set when it is known beforehand (:func:`.pipeline.evaluate_pairs`);
            otherwise it is read beside the references by :meth:`tasks`.
    """

    kind = "3d"
    score = staticmethod(_score_3d)  # one case (a pool task): evaluate_cases' result of that pair

    def __init__(self, empty_policy: str = "nan", regions: str = "", classes=None, allowed: set[int] | None = None,
                 source: str = "", declared: bool = False, ignore_extra: bool = False):
        self.empty_policy, self.regions, self.ignore_extra = empty_policy, regions, ignore_extra
        self.extras: list[Path] = []
        self.classes, self.allowed, self.source, self.declared = classes, allowed, source, declared

    def pair(self, pred: Path, gt: Path) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
        """``(case id, prediction, reference)`` of every prediction, and the references (absolute paths, so
        ``summary.json`` is usable from any folder); an nnU-Net dataset folder's ``labelsTr`` is used."""
        if not gt.is_dir():
            raise DataError(f"{gt}: ground-truth folder not found.")
        if (gt / "labelsTr").is_dir():
            gt = gt / "labelsTr"
        self.pred_dir, self.gt_dir = pred.absolute(), gt.absolute()
        pairs, refs = match_cases(self.pred_dir, self.gt_dir, self.ignore_extra)
        paired = {p for _, p, _ in pairs}
        self.extras = [f for f in sorted(self.pred_dir.iterdir()) if f.is_file() and not f.name.startswith(".")
                       and volume_suffix(f) and f not in paired]
        return pairs, refs

    def tasks(self, pairs: list[tuple[str, Path, Path]], workers: int = 1) -> list[tuple]:
        """A pool task per pair (file names and the class set). The classes are fixed beforehand: declared, or
        every non-zero label of any file, collected in a first pass that keeps only the label values."""
        if not self.declared:
            self.classes, self.allowed, self.source = _declared_classes(self.gt_dir, self.regions)
            self.declared = True
        if self.classes is None and pairs:
            values: set[int] = set()
            for vals in ordered_map(_label_values, pairs, workers, describe=lambda t: str(t[1])):
                values.update(vals)
            self.classes = {str(v): (int(v),) for v in sorted(values - {0})}  # = evaluate_cases' own choice
        relabel = BRATS_RELABEL if self.regions in REGION_SETS else None
        return [(p, r, cid, self.classes, self.empty_policy, self.allowed, self.source, relabel)
                for cid, p, r in pairs]

    def average(self, scored: list[dict]) -> dict:
        """:func:`~mambaseg.metrics.volumetric.evaluate_cases`' result of all the cases from the per-case results,
        averaged as it averages (nan-mean per class, then over classes)."""
        if not scored:
            return evaluate_cases([], [], self.classes, empty_policy=self.empty_policy)
        per_case = [c for res in scored for c in res["metric_per_case"]]
        result = scored[-1]
        names = list(result["classes"])
        mean = {n: {k: nanmean([c["metrics"][n][k] for c in per_case]) for k in METRIC_KEYS} for n in names}
        result.update(metric_per_case=per_case, mean=mean, n_cases=len(per_case),
                      foreground_mean={k: nanmean([mean[n][k] for n in names]) for k in METRIC_KEYS})
        return result

    def summary(self, scored: list[dict], refs: list[Path], missing: list[str]) -> dict:
        """nnU-Net v2's summary (keyed by label value) plus the CSV rows and the text table."""
        result = nnunet_keyed(self.average(scored), regions=self.regions in REGION_SETS)
        names = result["class_names"]
        result["kind"] = "3d"
        result["prediction_folder"], result["reference_folder"] = str(self.pred_dir), str(self.gt_dir)
        result["n_references"] = len(refs)
        result["missing_predictions"] = missing
        rows = []
        for case in result["metric_per_case"]:
            for key, m in case["metrics"].items():
                rows.append({"case": case["case_id"], "class": names[key], "label": key,
                             **{k: v for k, v in m.items()}})
        result["csv_rows"] = rows
        lines = [f"{'class':14s}{'Dice':>9s}{'IoU':>9s}{'HD95 mm':>10s}"]
        for key, m in result["mean"].items():
            lines.append(f"{names[key][:14]:14s}{m['Dice']:9.4f}{m['IoU']:9.4f}{m['HD95']:10.2f}")
        fg = result["foreground_mean"]
        lines.append(f"{'mean':14s}{fg['Dice']:9.4f}{fg['IoU']:9.4f}{fg['HD95']:10.2f}")
        lines.append(f"({result['n_cases']} cases; per case then mean; empty-mask policy {self.empty_policy!r}: "
                     f"{result['empty_policy_description']}; HD95 in mm, {result['hd_method']})")
        if missing:
            lines.append(f"({len(missing)} of {len(refs)} references have no prediction and are not scored: "
                         f"--allow-missing)")
        result["table"] = "\n".join(line for line in lines if not (isinstance(line, float) and math.isnan(line)))
        return result
