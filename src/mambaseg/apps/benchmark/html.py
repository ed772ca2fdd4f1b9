"""The self-contained HTML page of ``mambaseg benchmark``: tables of the statistics, per-case box/strip plots per model
and the learning curves of every run (PNG figures embedded as data URIs; tables only when matplotlib is missing)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ...utils.atomic import atomic_write_text
from ..report.html import CSS, JS, esc, html_table

__all__ = ["render_html", "write_html"]


def _f(v, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "n/a"


def _range(agg: dict, fmt: str = ".0f") -> str:
    if not agg or agg.get("mean") is None:
        return "n/a"
    if agg["min"] == agg["max"]:
        return _f(agg["mean"], fmt)
    return f"{_f(agg['mean'], fmt)} ({_f(agg['min'], fmt)}–{_f(agg['max'], fmt)})"


def _history(run_dir: str) -> list[dict]:
    out = []
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _figures(summary: dict, rows: list[dict]) -> tuple[list[str], str | None]:
    """(figure HTML blocks, note when matplotlib is missing)."""
    from ...utils.optional import MissingDependency

    try:
        from ..report.overlays import fig_uri, load_pyplot

        plt = load_pyplot()
    except (ImportError, MissingDependency):
        return [], "matplotlib is not installed: tables only (pip install 'mambaseg[viz]' for the plots)."
    labels = list(summary["models"])
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    blocks = []
    metric = summary["primary_metric"]
    for m in [metric] + [x for x in ("iou", "hd95") if x in summary["metrics"] and x != metric]:
        per_case: dict[str, dict[str, list[float]]] = {}
        by_seed: dict[str, dict[int, list[tuple[str, float]]]] = {}
        for r in rows:
            if r["metric"] != m or math.isnan(float(r["value"])):
                continue
            per_case.setdefault(r["model"], {}).setdefault(r["case"], []).append(float(r["value"]))
            by_seed.setdefault(r["model"], {}).setdefault(int(r["seed"]), []).append((r["case"], float(r["value"])))
        present = [lab for lab in labels if lab in per_case]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(present) + 2), 4))
        data = [[float(np.mean(v)) for v in per_case[lab].values()] for lab in present]
        ax.boxplot(data, widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)
        for i, lab in enumerate(present, start=1):
            for j, (seed, pts) in enumerate(sorted(by_seed[lab].items())):
                vals = [v for _, v in pts]
                ax.scatter(i - 0.18 + 0.36 * rng.random(len(vals)), vals, s=12, alpha=0.6, color=colours[lab],
                           marker="os^vD"[j % 5], label=f"seed {seed}" if i == 1 else None)
            ax.scatter([i], [np.mean(data[i - 1])], marker="_", s=400, color="k")
        ax.set_xticks(range(1, len(present) + 1), present, rotation=15)
        ax.set_ylabel(f"test {m} per case")
        ax.set_title(f"{m}: box = seed-averaged per-case values, points = single runs (marker = seed)")
        ax.legend(fontsize=7, loc="best")
        blocks.append(f'<img src="{fig_uri(fig)}" alt="per-case {esc(m)}">')
    runs = summary["runs"]
    if runs:
        fig, axes = plt.subplots(1, 3, figsize=(16, 4))
        styles = ["-", "--", ":", "-."]
        for r in runs:
            hist = _history(r["run_dir"])
            if not hist:
                continue
            c, ls = colours.get(r["model"], "k"), styles[r["seed"] % len(styles)]
            t = [h.get("seconds", np.nan) for h in hist]
            axes[0].plot(t, [h.get("train_loss", np.nan) for h in hist], ls, color=c, label=r["run"])
            val = [(h.get("seconds", np.nan), h["epoch"] * r["iters_per_epoch"], h["val_dice"]) for h in hist
                   if h.get("val_dice") is not None]
            if val:
                axes[1].plot([v[0] for v in val], [v[2] for v in val], ls, marker="o", ms=3, color=c, label=r["run"])
                axes[2].plot([v[1] for v in val], [v[2] for v in val], ls, marker="o", ms=3, color=c, label=r["run"])
        for ax, (xl, yl) in zip(axes, [("training seconds", "train loss"), ("training seconds", "validation Dice"),
                                       ("training steps", "validation Dice")]):
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle("learning curves of every run (colour = model, line style = seed)")
        blocks.append(f'<img src="{fig_uri(fig)}" alt="learning curves">')
    return blocks, None


def render_html(summary: dict, rows: list[dict]) -> str:
    """The benchmark page as one HTML string."""
    m = summary["primary_metric"]
    b = summary["budget"]
    budget = " and ".join(x for x in (f"{b['minutes']:g} min" if b.get("minutes") else "",
                                       f"{b['steps']} steps" if b.get("steps") else "") if x)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>mambaseg benchmark</title>"
             f"<style>{CSS}</style></head><body><h1>Equal-budget benchmark</h1>"),
             (f"<p>Budget {esc(budget)} per run; {summary['threads_per_run']} thread(s) per run, "
             f"{summary['parallel']} run(s) side by side; seeds {esc(summary['seeds'])}; test set "
             f"<code>{esc(summary['test']['images'])}</code>. Created {esc(summary['created'])}.</p>")]
    if summary.get("command"):
        parts.append(f"<pre>{esc(summary['command'])}</pre>")
    for w in summary.get("warnings", []):
        parts.append(f"<p class='note'>warning: {esc(w)}</p>")
    for w in summary.get("failed", []):
        parts.append(f"<p class='note'>failed run: {esc(w)}</p>")
    head = ["model", f"{m} mean ± SD (cases)", "median", "95% CI (cases)", "n cases", "mean ± SD (seeds)",
            "95% CI (seeds)", "steps", "epochs", "train s", "peak RSS MB", "parameters"]
    body = []
    for label, info in summary["models"].items():
        s = info.get("metrics", {}).get(m)
        if not s:
            continue
        oc, os_ = s["over_cases"], s["over_seeds"]
        body.append([label, f"{_f(oc['mean'])} ± {_f(oc['sd'])}", oc["median"], _ci(oc["ci95"]), oc["n"],
                     f"{_f(os_['mean'])} ± {_f(os_['sd'])}", _ci(os_["ci95"]), _range(info["steps"]),
                     _range(info["epochs"]), _range(info["train_seconds"]), _range(info["peak_rss_mb"]),
                     info.get("parameters") or ""])
    parts.append(f"<h2>Test {esc(m)} per model</h2>" + html_table(head, body, "models", sortable=True))
    parts.append("<p class='note'>" + esc(summary["statistics"]["over_cases"]) + ". Seeds: "
                 + esc(summary["statistics"]["over_seeds"]) + ".</p>")
    comp = [[c["a"], c["b"], c["metric"], c["n"], c["mean_difference"], _ci(c["ci95"]), c["wilcoxon_p"]]
            for c in summary["comparisons"]]
    if comp:
        parts.append("<h2>Paired comparisons (b − a)</h2>" + html_table(
            ["a", "b", "metric", "n cases", "mean difference", "95% CI", "Wilcoxon p"], comp, "pairs", sortable=True))
        parts.append("<p class='note'>" + esc(summary["statistics"]["comparisons"])
                     + "; for hd95 lower is better.</p>")
    blocks, note = _figures(summary, rows)
    if note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    if blocks:
        parts.append("<h2>Per-case results and learning curves</h2>" + "".join(f"<p>{b}</p>" for b in blocks))
    run_rows = [[r["run"], r["seed"], r["steps"], r["epochs"], r.get("train_seconds"), r.get("wall_seconds"),
                 r.get("peak_rss_mb"), r["threads"], r.get("budget_minutes") or "", r.get("budget_steps") or "",
                 r.get("best_val_dice")] for r in summary["runs"]]
    parts.append("<h2>Runs</h2>" + html_table(["run", "seed", "steps", "epochs", "train s", "wall s", "peak RSS MB",
                                           "threads", "budget min", "budget steps", "best val Dice"], run_rows,
                                          "runs", sortable=True))
    metrics = summary["metrics"]
    all_rows = []
    for label, info in summary["models"].items():
        all_rows.append([label] + [(info["metrics"].get(k) or {}).get("over_cases", {}).get("mean", float("nan"))
                                   for k in metrics])
    parts.append("<h2>All metrics (mean over cases of seed-averaged values)</h2>"
                 + html_table(["model", *metrics], all_rows, "all", sortable=True))
    parts.append(f"<p class='note'>{esc(summary['checkpoint'])}. Per-case values: results.csv; everything: "
                 f"summary.json.</p><script>{JS}</script></body></html>")
    return "\n".join(parts)


def write_html(summary: dict, rows: list[dict], plan, path: Path) -> Path:
    """Write ``index.html``."""
    path = Path(path)
    atomic_write_text(path, render_html(summary, rows))  # complete or absent under its name
    return path
