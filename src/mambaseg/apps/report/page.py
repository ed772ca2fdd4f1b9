"""The page of ``mambaseg report`` (the tool is described in :mod:`mambaseg.apps.report`): its numbers and units
(:func:`summary_stats`), its sections in order and :func:`write_report`, from what :mod:`.data` gathered, with the
building blocks of :mod:`.html` and the figures of :mod:`.overlays`."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import yaml

from ...data.io.png import OVERLAY_COLOURS
from ...utils.atomic import atomic_write_text
from ...utils.optional import MissingDependency
from .data import collect_report
from .html import CSS, JS, Cell, esc, html_table, img_tag, to_float
from .overlays import fig_uri, load_pyplot, overlay_2d, overlay_2d_full, overlay_3d

__all__ = ["PAPER_3D", "PAPER_DRIVE", "render_html", "summary_stats", "write_report"]

logger = logging.getLogger("mambaseg.apps.report")

#: Akmamba-Net Table 1 (DRIVE), values in %: model, Precision, Dice, IoU (spec §4.2).
PAPER_DRIVE = [("U-Net", 95.61, 82.22, 71.23), ("Attention U-Net", 95.32, 80.94, 71.15),
               ("UNet++", 95.64, 81.92, 70.95), ("UNet3+", 97.03, 80.32, 71.04),
               ("TransUNet", 97.16, 82.32, 70.97), ("Akmamba-Net", 97.21, 82.57, 71.93)]
#: DM-SegNet headline numbers (spec §4.1): dataset -> (what, DSC %).
PAPER_3D = {"synapse": ("mean DSC over 8 organs", 85.44), "brats": ("DSC, mean of WT/TC/ET (assumed)", 90.22)}
METRICS_2D = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc")
#: scores in [0, 1] shown in % (2D lower case, 3D nnU-Net names)
FRACTIONS = frozenset(METRICS_2D + ("Dice", "IoU"))
N_BOOT = 2000  # bootstrap resamples for the confidence intervals


_REPORT_HEAD = "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>"  # how every report begins


# ------------------------------------------------------------------------------------------ numbers and units

def summary_stats(values, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean, SD (n - 1), median and a 95 % percentile-bootstrap confidence interval of the mean over cases.

    NaN values are left out (as in the evaluation's means); ``n`` is the number of values used. The bootstrap draws
    ``n_boot`` resamples of the cases with replacement (``numpy``, fixed ``seed``: the same report every time);
    with fewer than two values SD and CI are NaN."""
    v = np.asarray([float(x) for x in values if to_float(x) is not None], dtype=np.float64)
    out = {"n": int(v.size), "mean": float("nan"), "sd": float("nan"), "median": float("nan"),
           "ci_low": float("nan"), "ci_high": float("nan")}
    if not v.size:
        return out
    out.update(mean=float(v.mean()), median=float(np.median(v)))
    if v.size > 1:
        out["sd"] = float(v.std(ddof=1))
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
        out["ci_low"], out["ci_high"] = (float(x) for x in np.percentile(means, [2.5, 97.5]))
    return out


def _unit_header(key: str, dim: int) -> str:
    """Column header of a metric with its unit: ``Dice %``, ``HD95 (mm)`` / ``HD95 (px)``."""
    if key in FRACTIONS:
        return f"{key} %"
    if key.lower() == "hd95":
        return f"HD95 ({'mm' if dim == 3 else 'px'})"
    return key


def _value_text(key: str, v) -> str:
    """A metric's value as shown: fractions in % with two decimals, distances with two, counts as integers."""
    f = to_float(v)
    if f is None:
        return "n/a" if v is None or isinstance(v, float) else str(v)
    if key in FRACTIONS:
        return f"{100 * f:.2f}"
    if key in ("TP", "FP", "FN", "TN", "n_pred", "n_ref") and f == int(f):
        return str(int(f))
    return f"{f:.2f}" if abs(f) < 1e5 else f"{f:.4g}"


def _cell(key: str, v) -> Cell:
    return Cell(_value_text(key, v), v)


def _stats_cells(key: str, values) -> list:
    """mean, SD, median, 95 % CI and n of ``values`` as cells (in the metric's unit)."""
    st = summary_stats(values)
    ci = (f"{_value_text(key, st['ci_low'])} – {_value_text(key, st['ci_high'])}"
          if to_float(st["ci_low"]) is not None else "n/a")
    return [_cell(key, st["mean"]), _cell(key, st["sd"]), _cell(key, st["median"]), Cell(ci, st["ci_low"]),
            st["n"]]


STATS_HEADERS = ["mean", "SD", "median", "95% CI of the mean", "n"]


# ----------------------------------------------------------------------------------------------- per-case rows
def _case_rows(ev: dict) -> tuple[list[str], list[list], dict[str, float]]:
    """Table headers, rows and per-case mean Dice (for best/worst) of an evaluation summary."""
    per_case = ev["metric_per_case"]
    if ev.get("kind") == "3d" or (per_case and "metrics" in per_case[0]):
        keys: list[str] = []
        for c in per_case:
            for m in c["metrics"].values():
                keys += [k for k in m if k not in keys]
        headers = ["case", "class"] + keys
        ml = {c.get("case_id", ""): _voxel_ml(c.get("reference_file")) for c in per_case}
        vol = ("n_ref" in keys or "n_pred" in keys) and any(v is not None for v in ml.values())
        if vol:
            headers += ["reference volume mL", "predicted volume mL"]
        rows, dice = [], {}
        for c in per_case:
            vals = []
            v_ml = ml[c.get("case_id", "")]
            for cls, m in c["metrics"].items():
                rows.append([c.get("case_id", ""), cls] + [m.get(k, float("nan")) for k in keys])
                if vol:
                    rows[-1] += [float(m[k]) * v_ml if v_ml is not None and to_float(m.get(k)) is not None
                                 else float("nan") for k in ("n_ref", "n_pred")]
                if to_float(m.get("Dice")) is not None:
                    vals.append(float(m["Dice"]))
            dice[c.get("case_id", "")] = float(np.mean(vals)) if vals else float("nan")
        return headers, rows, dice
    cols = [k for k in METRICS_2D if any(k in r for r in per_case)]
    rows = [[r.get("case", "")] + [r.get(k, float("nan")) for k in cols] for r in per_case]
    dice = {r.get("case", ""): float(r.get("dice", float("nan"))) for r in per_case}
    return ["case"] + cols, rows, dice


def _voxel_ml(path) -> float | None:
    """Volume of one voxel of a NIfTI file in mL (from its header), or None when it cannot be read."""
    if not path:
        return None
    try:
        import nibabel as nib

        zooms = nib.load(str(path)).header.get_zooms()[:3]
        v = float(np.prod(zooms)) / 1000.0
    except Exception:  # noqa: BLE001 - a missing or odd file: no volume column, the report goes on
        return None
    return v if math.isfinite(v) and v > 0 else None


def _best_worst(dice: dict[str, float]) -> list[tuple[str, str]]:
    valid = sorted(((v, k) for k, v in dice.items() if not math.isnan(v)))
    if not valid:
        return []
    picks = [("best", valid[-1][1])]
    if len(valid) > 1:
        picks.append(("worst", valid[0][1]))
    return picks


# ---------------------------------------------------------------------------------------------------- figures
def _curves(history: list[dict]) -> str | None:
    ep = [h.get("epoch") for h in history if to_float(h.get("train_loss")) is not None]
    if not ep:
        return None
    plt = load_pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.plot(ep, [h["train_loss"] for h in history if to_float(h.get("train_loss")) is not None], "o-", ms=3)
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    val = [(h["epoch"], h["val_dice"]) for h in history if to_float(h.get("val_dice")) is not None]
    if val:
        a2.plot(*zip(*val), "o-", color="tab:orange", ms=3)
    a2.set(xlabel="epoch", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    return fig_uri(fig)


def _dice_plot(ev: dict, headers: list[str], rows: list[list]) -> str | None:
    if "class" in headers:
        ci, di = headers.index("class"), headers.index("Dice") if "Dice" in headers else None
        if di is None:
            return None
        groups: dict[str, list[float]] = {}
        for r in rows:
            if to_float(r[di]) is not None:
                groups.setdefault(r[ci], []).append(float(r[di]))
    else:
        groups = {m: [float(r[headers.index(m)]) for r in rows if to_float(r[headers.index(m)]) is not None]
                  for m in ("dice", "iou") if m in headers}
    groups = {k: [100 * x for x in v] for k, v in groups.items() if v}  # in %, as in the tables
    if not groups:
        return None
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.4))
    ax.boxplot(list(groups.values()), showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), list(groups))
    rng = np.random.default_rng(0)
    for i, v in enumerate(groups.values(), start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, "o", alpha=0.6, ms=4, color="tab:blue")
    ax.set(ylabel="per-case score (%)", ylim=(0, 100), title="per-case distribution")
    return fig_uri(fig)


# -------------------------------------------------------------------------------------------- paper numbers
def _dataset(info: dict) -> str | None:
    data = (info.get("config") or {}).get("data") or {}
    ev = info.get("evaluation") or {}
    layout, root = str(data.get("layout", "")).lower(), str(data.get("root", "")).lower()
    refs = [str(r.get("reference", r.get("reference_file", ""))) for r in ev.get("metric_per_case", [])]
    if layout == "drive" or any("1st_manual" in r for r in refs):
        return "drive"
    text = " ".join([layout, root, str(ev.get("reference_folder", ""))] + refs).lower()
    classes = {str(c).lower() for c in (ev.get("classes") or ev.get("mean") or {})}
    if layout in ("synapse_npz", "btcv") or "synapse" in text or {"aorta", "pancreas", "spleen"} <= classes:
        return "synapse"
    if layout == "brats" or "brats" in text or {"wt", "tc", "et"} <= classes:
        return "brats"
    return None


def _paper_section(info: dict) -> str:
    ds, ev = _dataset(info), info.get("evaluation")
    if ds is None:
        return ""
    if ds == "drive":
        rows = [[r[0]] + [f"{v:.2f}" for v in r[1:]] + [""] for r in PAPER_DRIVE]
        note = "Akmamba-Net paper, Table 1 (DRIVE), values in %."
        if ev and ev.get("kind") == "2d":
            m = ev.get("mean", {})
            rows.append(["ours (this evaluation)"] + [f"{100 * m[k]:.2f}" if k in m else "n/a"
                                                      for k in ("precision", "dice", "iou")] +
                        [f"{100 * m['accuracy']:.2f}" if "accuracy" in m else "n/a"])
            note += (" Our Precision is TP/(TP+FP) of the vessel class; the paper's 'Precision' may be pixel accuracy"
                     " (last column), see the metric definitions.")
        return (f"<h2>Published numbers</h2><p class='note'>{esc(note)}</p>" +
                html_table(["model", "Precision", "Dice", "IoU", "pixel accuracy"], rows, "paper",
                       row_classes=[""] * len(PAPER_DRIVE) + ["ours"]))
    what, value = PAPER_3D[ds]
    rows, ours = [["DM-SegNet (paper)", what, f"{value:.2f}"]], None
    if ev and ev.get("mean"):
        mean = ev["mean"]
        regions = [mean[k]["Dice"] for k in ("WT", "TC", "ET") if k in mean and to_float(mean[k].get("Dice"))]
        ours = (np.mean(regions) if ds == "brats" and len(regions) == 3 else
                (ev.get("foreground_mean") or {}).get("Dice"))
    if to_float(ours) is not None:
        rows.append(["ours (this evaluation)", "mean foreground Dice over cases" if ds == "synapse" or
                     "WT" not in ev["mean"] else "mean of WT/TC/ET Dice", f"{100 * float(ours):.2f}"])
    return (f"<h2>Published numbers</h2><p class='note'>DM-SegNet abstract ({esc(ds)}), DSC in %. Only the "
            f"headline number is available.</p>" + html_table(["model", "metric", "DSC %"], rows, "paper",
                                                          row_classes=[""] + ["ours"] * (len(rows) - 1)))


# ---------------------------------------------------------------------------------------------------- render
def _stats_section(ev: dict, headers: list[str], rows: list[list], dim: int) -> str:
    """Mean, SD, median and 95 % CI over cases of every metric (3D: of every class, and over classes per case)."""
    n_cases = len(ev["metric_per_case"])
    note = (f"<p class='note'>Over {n_cases} case(s); NaN scores left out (n = cases used). 95% CI: percentile "
            f"bootstrap of the mean over cases ({N_BOOT} resamples). Overlap scores in %"
            + (", HD95 in mm" if dim == 3 else ", HD95 in pixels" if any(h.lower() == "hd95" for h in headers)
               else "") + ".</p>")
    if "class" in headers:  # 3D: rows (case, class, metrics...)
        keys = [k for k in ("Dice", "IoU", "HD95") if k in headers]
        ci = headers.index("class")
        classes = list(dict.fromkeys(r[ci] for r in rows))
        out = []
        for cls in classes:
            for k in keys:
                vals = [r[headers.index(k)] for r in rows if r[ci] == cls]
                out.append([cls, _unit_header(k, dim)] + _stats_cells(k, vals))
        if len(classes) > 1:  # per case: the mean over its classes, then statistics over cases
            by_case: dict[str, dict[str, list[float]]] = {}
            for r in rows:
                for k in keys:
                    if to_float(r[headers.index(k)]) is not None:
                        by_case.setdefault(r[0], {}).setdefault(k, []).append(float(r[headers.index(k)]))
            for k in keys:
                vals = [float(np.mean(v[k])) for v in by_case.values() if v.get(k)]
                out.append(["mean over classes (per case)", _unit_header(k, dim)] + _stats_cells(k, vals))
        return ("<h3>Summary over cases</h3>" + note +
                html_table(["class", "metric"] + STATS_HEADERS, out, "means",
                       row_classes=["" if r[0] != "mean over classes (per case)" else "ours" for r in out]))
    out = [[_unit_header(k, dim)] + _stats_cells(k, [r[headers.index(k)] for r in rows]) for k in headers[1:]]
    return "<h3>Summary over cases</h3>" + note + html_table(["metric"] + STATS_HEADERS, out, "means")


def _display_rows(headers: list[str], rows: list[list], dim: int) -> tuple[list[str], list[list]]:
    """Per-case table as shown: metric headers with units, values formatted (``data-v`` keeps the raw value)."""
    fixed = {"case", "class"}
    shown = [h if h in fixed or "volume" in h else _unit_header(h, dim) for h in headers]
    out = []
    for r in rows:
        out.append([v if h in fixed else _cell(h, v) for h, v in zip(headers, r)])
    return shown, out


def _full_resolution(row: dict, cid: str) -> str:
    """A click-to-open block with the 2D case's image and error overlay at full resolution (embedded PNGs)."""
    try:
        full = overlay_2d_full(row)
    except Exception as e:  # noqa: BLE001 - a broken file must not sink the whole report
        logger.warning("report: no full-resolution overlay for case %s (%s)", cid, e)
        full = None
    if not full:
        return ""
    import base64
    import io

    from PIL import Image

    w, h = Image.open(io.BytesIO(base64.b64decode(full[0][1].split(",", 1)[1]))).size
    imgs = "".join(f'<img src="{uri}" alt="{esc(cid)}: {esc(name)}, full resolution" title="{esc(name)}">'
                   for name, uri in full)
    return (f"<details class='full'><summary>{esc(cid)}: image and errors at full resolution ({w} × {h} px), "
            f"click to open</summary><div>{imgs}</div></details>")


def _eval_sections(info: dict) -> list[str]:
    ev = info["evaluation"]
    headers, rows, dice = _case_rows(ev)
    dim = 3 if "class" in headers else 2
    parts = [f"<h2>Evaluation</h2><p class='note'>{esc(info['eval_dir'])}: {len(ev['metric_per_case'])} case(s)"
             + (f"; {esc(ev['averaging'])}" if ev.get("averaging") else "")
             + (f"; {esc(ev['region'])}" if ev.get("region") else "")
             + (f"; empty-mask policy {esc(ev.get('empty_policy'))}: {esc(ev.get('empty_policy_description', ''))}"
                if "empty_policy_description" in ev else "") + "</p>"]
    if rows:
        parts.append(_stats_section(ev, headers, rows, dim))
    shown, cells = _display_rows(headers, rows, dim)
    parts.append(f"<h3>Per case{' and class' if 'class' in headers else ''}</h3><p class='note'>Click a column "
                 f"header to sort. Overlap scores in %"
                 + ("; HD95 in mm; volumes in mL (voxel counts times the reference's voxel volume)" if dim == 3
                    else "") + ".</p>" + html_table(shown, cells, "cases", sortable=True))
    figures = info.get("figures", True)
    uri = _dice_plot(ev, headers, rows) if figures else None
    if uri:
        parts.append("<h3>Distribution</h3>" + img_tag(uri, "per-case Dice distribution"))
    overlays = []
    by_case = {(c.get("case_id") or c.get("case")): c for c in ev["metric_per_case"]}
    for label, cid in _best_worst(dice) if figures else []:
        try:
            title = f"{label} case {cid} (mean Dice {100 * dice[cid]:.2f} %)"
            uri = (overlay_3d(by_case[cid], ev.get("classes") or {}, title) if "class" in headers
                   else overlay_2d(by_case[cid], title))
        except Exception as e:  # noqa: BLE001 - a broken file must not sink the whole report
            logger.warning("report: no overlay for case %s (%s)", cid, e)
            uri = None
        if uri:
            overlays.append(img_tag(uri, f"{label} case {cid}" + (": axial, coronal and sagittal slices" if dim == 3
                                                                else ": image, ground truth, prediction, errors"))
                            + ("" if "class" in headers else _full_resolution(by_case[cid], str(cid))))
    if overlays:
        c = OVERLAY_COLOURS
        legend = "".join(f"<span style='background:rgb{c[k]}'>{n}</span>" for k, n in
                         (("tp", "true positive"), ("fp", "false positive"), ("fn", "false negative")))
        how = ("One row per structure: axial, coronal and sagittal slices through its centre, reoriented with the "
               "file's affine (its orientation code above the panels) and shown in the radiological convention "
               "(patient's right on the image's left; sagittal: anterior on the left), orientation letters at the "
               "edges, the slice index along the file's voxel axis in each title." if dim == 3 else
               "Image, ground truth, prediction and errors; the image and the errors at full resolution open "
               "below each figure.")
        parts.append(f"<h3>Best and worst cases</h3><p class='legend'>{legend}</p><p class='note'>{esc(how)}</p>"
                     + "".join(overlays))
    defs = ev.get("definitions") or ev.get("metric_definitions")
    if defs:
        parts.append("<h3>Metric definitions</h3><ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>"
                                                                for k, v in defs.items()) + "</ul>")
    return parts


def _duration(v) -> str:
    f = to_float(v)
    if f is None:
        return "n/a"
    m, sec = divmod(round(f), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def render_html(info: dict) -> str:
    """The report page for the dict returned by :func:`collect_report`."""
    cfg = info.get("config") or {}
    title = f"mambaseg report: {Path(info['path']).name}"
    model = (cfg.get("model") or {}).get("name")
    parts = [f"<h1>{esc(title)}</h1><p class='note'>{esc(info['kind'])} folder {esc(info['path'])}"
             + (f"; model {esc(model)}" if model else "") + f"; generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    if not info.get("figures", True):
        parts.append(f"<p class='note'>Figures left out (learning curves, score distribution, best and worst "
                     f"cases): {esc(info.get('figures_missing', 'matplotlib is not installed'))}</p>")
    ts = info.get("train_summary")
    if ts:
        shown = {"epochs_done": ("epochs", lambda v: v), "best_val_dice": ("best validation Dice %", lambda v:
                                                                           _cell("dice", v)),
                 "train_seconds": ("training time", lambda v: Cell(_duration(v), v)),
                 "parameters": ("parameters", lambda v: Cell(f"{v:,}" if isinstance(v, int) else str(v), v))}
        keys = [k for k in shown if k in ts]
        parts.append("<h2>Training</h2>" + html_table([shown[k][0] for k in keys], [[shown[k][1](ts[k]) for k in keys]],
                                                  "training"))
    if info.get("evaluation"):  # the user's own results first, the published numbers after
        parts += _eval_sections(info)
    elif info["kind"] == "run":
        parts.append("<h2>Evaluation</h2><p class='note'>No evaluation in this run folder (test_eval/summary.json); "
                     "run <code>mambaseg predict</code> and <code>mambaseg evaluate -o RUN/test_eval</code>.</p>")
    parts.append(_paper_section(info))
    if info.get("pred_dir"):
        parts.append(f"<p class='note'>Predictions: {esc(info['pred_dir'])}</p>")
    uri = _curves(info.get("history") or []) if info.get("figures", True) else None
    if uri:
        parts.append("<h2>Learning curves</h2>" + img_tag(uri, "learning curves"))
    if cfg:
        parts.append("<h2>Configuration</h2><pre>" + esc(yaml.safe_dump(cfg, sort_keys=False)) + "</pre>")
    if info.get("provenance"):
        parts.append("<h2>Provenance</h2><pre>" + esc(json.dumps(info["provenance"], indent=1)) + "</pre>")
    body = "\n".join(p for p in parts if p)
    return (f"{_REPORT_HEAD}{esc(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}\n<script>{JS}</script>\n</body></html>\n")


def _check_report_out(out: Path) -> None:
    """An existing ``out`` is replaced only when it is an earlier report (it begins as every report does): a link,
    a folder or any other file (the run's own files, the user's page) is an error naming it, left untouched."""
    if not os.path.lexists(out):
        return
    why = ("a symbolic link" if out.is_symlink() else "a folder" if out.is_dir() else
           "not a file" if not out.is_file() else "")
    if not why:
        with open(out, "rb") as fh:
            why = "" if fh.read(len(_REPORT_HEAD)) == _REPORT_HEAD.encode() else "not a mambaseg report"
    if why:
        raise ValueError(f"{out}: exists and is {why}; it is left untouched - choose another -o (an .html file "
                         f"path) or move it away.")


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run or evaluation folder.

    Without matplotlib the page is written without its figures (tables, configuration and provenance only); it
    says so, and a warning names the extra that adds them (``mambaseg[viz]``).

    Args:
        path: run folder or evaluation folder.
        out: HTML file (default ``<path>/report.html``); parent folders are created.

    Returns:
        The written path.

    Raises:
        ValueError: ``path`` is missing or is not a run / evaluation folder (the message names it).
    """
    info = collect_report(path)
    try:
        load_pyplot()
    except MissingDependency as e:
        info["figures"], info["figures_missing"] = False, str(e)
        logger.warning("report: the page is written without figures; %s", e)
    out = Path(out) if out else Path(info["path"]) / "report.html"
    _check_report_out(out)
    page = render_html(info)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)  # complete or absent under its name (an earlier report stays until replaced)
    return out
