"""``mambaseg report``: one self-contained HTML page for a training run or an evaluation folder.

Everything is embedded: figures are base64 PNG data URIs, CSS and the table-sorting script are inline, nothing is
loaded from the network. Sections (each skipped when its inputs are missing): summary and paper comparison, the
per-case (2D) or per-case-and-class (3D) metrics table (click a header to sort), the per-case Dice distribution,
overlays of the best and worst cases (2D: image / ground truth / prediction / errors; 3D: three orthogonal slices
through every structure), learning curves from ``metrics.jsonl``, the configuration and provenance.

A run folder may contain ``test_eval/`` (an evaluation, ``summary.json``) and ``test_pred/`` (predictions); both
are used when present. Error colours follow :data:`mambaseg.data.io.OVERLAY_COLOURS`: true positive green, false
positive red, false negative blue. The inline script sets ``data-ready="1"`` on ``<body>`` once the tables are
sortable; a URL fragment ``#sort=<table id>:<column>[:desc]`` sorts a table on load.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import yaml

from .config import ConfigError, safe_yaml
from .data.io import OVERLAY_COLOURS
from .report_overlays import _fig_uri, _plt, overlay_2d, overlay_3d

__all__ = ["write_report", "collect_report", "render_html", "PAPER_DRIVE", "PAPER_3D"]

logger = logging.getLogger(__name__)

#: Akmamba-Net Table 1 (DRIVE), values in %: model, Precision, Dice, IoU (spec §4.2).
PAPER_DRIVE = [("U-Net", 95.61, 82.22, 71.23), ("Attention U-Net", 95.32, 80.94, 71.15),
               ("UNet++", 95.64, 81.92, 70.95), ("UNet3+", 97.03, 80.32, 71.04),
               ("TransUNet", 97.16, 82.32, 70.97), ("Akmamba-Net", 97.21, 82.57, 71.93)]
#: DM-SegNet headline numbers (spec §4.1): dataset -> (what, DSC %).
PAPER_3D = {"synapse": ("mean DSC over 8 organs", 85.44), "brats": ("DSC, mean of WT/TC/ET (assumed)", 90.22)}
METRICS_2D = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc")

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}table.sortable th{cursor:pointer}
th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}tr.ours td{font-weight:bold;background:#eef6ee}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.85em}img{max-width:100%}.note{color:#666;font-size:.9em}
.legend span{display:inline-block;padding:0 8px;margin-right:6px;color:#fff}"""

JS = """(function(){
function key(td){var v=td.getAttribute('data-v');var n=parseFloat(v);return isNaN(n)?null:n;}
function sortTable(t,i,desc){var tb=t.tBodies[0];var rows=Array.prototype.slice.call(tb.rows);
 rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
  if(x===null&&y===null){var s=a.cells[i].textContent.localeCompare(b.cells[i].textContent);return desc?-s:s;}
  if(x===null)return 1;if(y===null)return -1;return desc?y-x:x-y;});
 rows.forEach(function(r){tb.appendChild(r);});
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(c,j){c.className=j===i?(desc?'desc':'asc'):'';});}
var tables=document.querySelectorAll('table.sortable');
Array.prototype.forEach.call(tables,function(t){
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.setAttribute('data-sortable','1');
  th.title='click to sort';th.addEventListener('click',function(){sortTable(t,i,th.className==='asc');});});});
var m=/sort=([A-Za-z0-9_-]+):(\\d+)(:desc)?/.exec(location.hash||'');
if(m){var t=document.getElementById(m[1]);if(t)sortTable(t,parseInt(m[2],10),!!m[3]);}
document.body.setAttribute('data-ready','1');})();"""


def _esc(x) -> str:
    return html.escape(str(x))


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    f = _num(v)
    if f is None:
        return "n/a" if isinstance(v, float) else _esc(v)
    return f"{f:.4f}" if abs(f) < 1000 else f"{f:.1f}"


def _table(headers, rows, table_id: str | None = None, sortable: bool = False, row_classes=None) -> str:
    """HTML table; every cell carries ``data-v`` (its raw value) for the sort script."""
    attrs = (f' id="{_esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    out = [f"<table{attrs}><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for v in r:
            f = _num(v) if not isinstance(v, str) else None
            dv = repr(f) if f is not None else ("" if isinstance(v, float) else str(v))
            cells.append(f'<td data-v="{_esc(dv)}">{_fmt(v)}</td>')
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("report: skipping unreadable %s (%s)", path, e)
        return None


def _is_eval(summary) -> bool:
    return isinstance(summary, dict) and isinstance(summary.get("metric_per_case"), list)


def _by_name(ev: dict) -> dict:
    """A 3D summary keyed by label value (nnU-Net v2 shape, names in ``class_names``) as the report shows it: keyed by
    class name. Summaries without ``class_names`` (2D, older 3D ones keyed by name) are returned unchanged."""
    names = ev.get("class_names")
    if not isinstance(names, dict) or not names:
        return ev

    def rename(d):
        return {str(names.get(k, k)): v for k, v in d.items()} if isinstance(d, dict) else d

    return dict(ev, mean=rename(ev.get("mean")),
                metric_per_case=[dict(c, metrics=rename(c.get("metrics"))) if isinstance(c, dict) else c
                                 for c in ev["metric_per_case"]])


def collect_report(path: str | Path) -> dict:
    """Gather what the report shows from a run or evaluation folder (missing pieces are None / empty).

    Raises:
        ValueError: ``path`` does not exist, or is neither a run folder (config.yaml, metrics.jsonl or a
            checkpoint) nor an evaluation folder (summary.json with ``metric_per_case``).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: report input not found (expected a run folder or an evaluation folder).")
    if path.is_file() and path.name == "summary.json":
        path = path.parent
    if not path.is_dir():
        raise ValueError(f"{path}: expected a run folder or an evaluation folder, got a file.")
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else None
    is_run = any((path / n).is_file() for n in ("config.yaml", "metrics.jsonl", "checkpoint_best.pt",
                                                 "checkpoint_last.pt"))
    if not is_run and not _is_eval(summary):
        raise ValueError(f"{path}: not a run folder (config.yaml, metrics.jsonl, checkpoint_*.pt) or an evaluation "
                         f"folder (summary.json with metric_per_case).")
    info: dict = {"path": str(path), "kind": "run" if is_run else "evaluation", "config": None, "provenance": None,
                  "train_summary": None, "history": [], "evaluation": None, "eval_dir": None, "pred_dir": None}
    if is_run:
        if (path / "config.yaml").is_file():
            try:  # within the YAML alias budget: a hostile run folder cannot make the report expand without bound
                info["config"] = safe_yaml((path / "config.yaml").read_text(), str(path / "config.yaml"))
            except (OSError, UnicodeDecodeError, ConfigError) as e:
                logger.warning("report: skipping unreadable %s (%s)", path / "config.yaml", e)
        if (path / "provenance.json").is_file():
            info["provenance"] = _read_json(path / "provenance.json")
        if isinstance(summary, dict) and not _is_eval(summary):
            info["train_summary"] = summary
        if (path / "metrics.jsonl").is_file():
            for line in (path / "metrics.jsonl").read_text().splitlines():
                try:
                    info["history"].append(json.loads(line))
                except ValueError:
                    logger.warning("report: skipping a bad line of %s", path / "metrics.jsonl")
        evals = [path / "test_eval"] + sorted(d for d in path.iterdir() if d.is_dir() and d.name != "test_eval")
        for d in evals:
            s = _read_json(d / "summary.json") if (d / "summary.json").is_file() else None
            if _is_eval(s):
                info["evaluation"], info["eval_dir"] = _by_name(s), str(d)
                break
        if (path / "test_pred").is_dir():
            info["pred_dir"] = str(path / "test_pred")
    else:
        info["evaluation"], info["eval_dir"] = _by_name(summary), str(path)
        info["provenance"] = _read_json(path / "provenance.json") if (path / "provenance.json").is_file() else None
    return info


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
        rows, dice = [], {}
        for c in per_case:
            vals = []
            for cls, m in c["metrics"].items():
                rows.append([c.get("case_id", ""), cls] + [m.get(k, float("nan")) for k in keys])
                if _num(m.get("Dice")) is not None:
                    vals.append(float(m["Dice"]))
            dice[c.get("case_id", "")] = float(np.mean(vals)) if vals else float("nan")
        return headers, rows, dice
    cols = [k for k in METRICS_2D if any(k in r for r in per_case)]
    rows = [[r.get("case", "")] + [r.get(k, float("nan")) for k in cols] for r in per_case]
    dice = {r.get("case", ""): float(r.get("dice", float("nan"))) for r in per_case}
    return ["case"] + cols, rows, dice


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
    ep = [h.get("epoch") for h in history if _num(h.get("train_loss")) is not None]
    if not ep:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.plot(ep, [h["train_loss"] for h in history if _num(h.get("train_loss")) is not None], "o-", ms=3)
    a1.set(xlabel="epoch", ylabel="training loss", title="loss")
    val = [(h["epoch"], h["val_dice"]) for h in history if _num(h.get("val_dice")) is not None]
    if val:
        a2.plot(*zip(*val), "o-", color="tab:orange", ms=3)
    a2.set(xlabel="epoch", ylabel="validation Dice", title="validation Dice", ylim=(0, 1))
    return _fig_uri(fig)


def _dice_plot(ev: dict, headers: list[str], rows: list[list]) -> str | None:
    if "class" in headers:
        ci, di = headers.index("class"), headers.index("Dice") if "Dice" in headers else None
        if di is None:
            return None
        groups: dict[str, list[float]] = {}
        for r in rows:
            if _num(r[di]) is not None:
                groups.setdefault(r[ci], []).append(float(r[di]))
    else:
        groups = {m: [float(r[headers.index(m)]) for r in rows if _num(r[headers.index(m)]) is not None]
                  for m in ("dice", "iou") if m in headers}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 2), 3.4))
    ax.boxplot(list(groups.values()), showfliers=False)
    ax.set_xticks(range(1, len(groups) + 1), list(groups))
    rng = np.random.default_rng(0)
    for i, v in enumerate(groups.values(), start=1):
        ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, "o", alpha=0.6, ms=4, color="tab:blue")
    ax.set(ylabel="per-case score", ylim=(0, 1), title="per-case distribution")
    return _fig_uri(fig)


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
        return (f"<h2>Published numbers</h2><p class='note'>{_esc(note)}</p>" +
                _table(["model", "Precision", "Dice", "IoU", "pixel accuracy"], rows, "paper",
                       row_classes=[""] * len(PAPER_DRIVE) + ["ours"]))
    what, value = PAPER_3D[ds]
    rows, ours = [["DM-SegNet (paper)", what, f"{value:.2f}"]], None
    if ev and ev.get("mean"):
        mean = ev["mean"]
        regions = [mean[k]["Dice"] for k in ("WT", "TC", "ET") if k in mean and _num(mean[k].get("Dice"))]
        ours = (np.mean(regions) if ds == "brats" and len(regions) == 3 else
                (ev.get("foreground_mean") or {}).get("Dice"))
    if _num(ours) is not None:
        rows.append(["ours (this evaluation)", "mean foreground Dice over cases" if ds == "synapse" or
                     "WT" not in ev["mean"] else "mean of WT/TC/ET Dice", f"{100 * float(ours):.2f}"])
    return (f"<h2>Published numbers</h2><p class='note'>DM-SegNet abstract ({_esc(ds)}), DSC in %. Only the "
            f"headline number is available.</p>" + _table(["model", "metric", "DSC %"], rows, "paper",
                                                          row_classes=[""] + ["ours"] * (len(rows) - 1)))


# ---------------------------------------------------------------------------------------------------- render
def _eval_sections(info: dict) -> list[str]:
    ev = info["evaluation"]
    headers, rows, dice = _case_rows(ev)
    parts = [f"<h2>Evaluation</h2><p class='note'>{_esc(info['eval_dir'])}: {len(ev['metric_per_case'])} case(s)"
             + (f"; {_esc(ev['averaging'])}" if ev.get("averaging") else "")
             + (f"; {_esc(ev['region'])}" if ev.get("region") else "")
             + (f"; empty-mask policy {_esc(ev.get('empty_policy'))}: {_esc(ev.get('empty_policy_description', ''))}"
                if "empty_policy_description" in ev else "") + "</p>"]
    mean = ev.get("mean") or {}
    if mean and all(isinstance(v, dict) for v in mean.values()):  # 3D: class -> metrics
        keys = [k for k in ("Dice", "IoU", "HD95") if any(k in v for v in mean.values())]
        mrows = [[c] + [v.get(k, float("nan")) for k in keys] for c, v in mean.items()]
        if ev.get("foreground_mean"):
            mrows.append(["mean (foreground)"] + [ev["foreground_mean"].get(k, float("nan")) for k in keys])
        parts.append("<h3>Mean per class</h3>" + _table(["class"] + keys, mrows, "means"))
    elif mean:
        parts.append("<h3>Mean over cases</h3>" + _table(list(mean), [list(mean.values())], "means"))
    parts.append(f"<h3>Per case{' and class' if 'class' in headers else ''}</h3><p class='note'>Click a column "
                 f"header to sort.</p>" + _table(headers, rows, "cases", sortable=True))
    uri = _dice_plot(ev, headers, rows)
    if uri:
        parts.append("<h3>Distribution</h3>" + _img(uri, "per-case Dice distribution"))
    overlays = []
    by_case = {(c.get("case_id") or c.get("case")): c for c in ev["metric_per_case"]}
    for label, cid in _best_worst(dice):
        try:
            title = f"{label} case {cid} (mean Dice {dice[cid]:.3f})"
            uri = (overlay_3d(by_case[cid], ev.get("classes") or {}, title) if "class" in headers
                   else overlay_2d(by_case[cid], title))
        except Exception as e:  # noqa: BLE001 - a broken file must not sink the whole report
            logger.warning("report: no overlay for case %s (%s)", cid, e)
            uri = None
        if uri:
            overlays.append(_img(uri, f"{label} case {cid}"))
    if overlays:
        c = OVERLAY_COLOURS
        legend = "".join(f"<span style='background:rgb{c[k]}'>{n}</span>" for k, n in
                         (("tp", "true positive"), ("fp", "false positive"), ("fn", "false negative")))
        parts.append(f"<h3>Best and worst cases</h3><p class='legend'>{legend}</p>" + "".join(overlays))
    defs = ev.get("definitions") or ev.get("metric_definitions")
    if defs:
        parts.append("<h3>Metric definitions</h3><ul>" + "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>"
                                                                for k, v in defs.items()) + "</ul>")
    return parts


def render_html(info: dict) -> str:
    """The report page for the dict returned by :func:`collect_report`."""
    cfg = info.get("config") or {}
    title = f"mambaseg report: {Path(info['path']).name}"
    model = (cfg.get("model") or {}).get("name")
    parts = [f"<h1>{_esc(title)}</h1><p class='note'>{_esc(info['kind'])} folder {_esc(info['path'])}"
             + (f"; model {_esc(model)}" if model else "") + f"; generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    ts = info.get("train_summary")
    if ts:
        keys = [k for k in ("epochs_done", "best_val_dice", "train_seconds", "parameters") if k in ts]
        parts.append("<h2>Training</h2>" + _table(keys, [[ts[k] for k in keys]], "training"))
    parts.append(_paper_section(info))
    if info.get("evaluation"):
        parts += _eval_sections(info)
    elif info["kind"] == "run":
        parts.append("<h2>Evaluation</h2><p class='note'>No evaluation in this run folder (test_eval/summary.json); "
                     "run <code>mambaseg predict</code> and <code>mambaseg evaluate -o RUN/test_eval</code>.</p>")
    if info.get("pred_dir"):
        parts.append(f"<p class='note'>Predictions: {_esc(info['pred_dir'])}</p>")
    uri = _curves(info.get("history") or [])
    if uri:
        parts.append("<h2>Learning curves</h2>" + _img(uri, "learning curves"))
    if cfg:
        parts.append("<h2>Configuration</h2><pre>" + _esc(yaml.safe_dump(cfg, sort_keys=False)) + "</pre>")
    if info.get("provenance"):
        parts.append("<h2>Provenance</h2><pre>" + _esc(json.dumps(info["provenance"], indent=1)) + "</pre>")
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}\n<script>{JS}</script>\n</body></html>\n")


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run or evaluation folder.

    Args:
        path: run folder or evaluation folder.
        out: HTML file (default ``<path>/report.html``); parent folders are created.

    Returns:
        The written path.

    Raises:
        ValueError: ``path`` is missing or is not a run / evaluation folder (the message names it).
        MissingDependency: matplotlib is not installed.
    """
    info = collect_report(path)
    _plt()  # the figures need matplotlib: a one-line error naming the extra (mambaseg[viz]) before any work
    out = Path(out) if out else Path(info["path"]) / "report.html"
    page = render_html(info)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
