"""``OUT/summary.md`` of ``mambaseg benchmark``: the tables of ``summary.json`` as Markdown, to read on GitHub or paste
into a paper's supplement — per model the primary metric over cases (mean ± SD, median, 95 % bootstrap CI) and per
seed, the steps, epochs, time, CPU share and memory each run reached under the budget; the paired comparisons with
their CI and Wilcoxon p-value; every other metric's mean over cases; the warnings (runs not like-for-like). Pure
formatting: nothing is computed that ``summary.json`` does not hold."""

from __future__ import annotations

import math

__all__ = ["render_budgets_markdown", "render_markdown"]

SECONDARY = ("hd95",)  # compared pair by pair beside the primary metric when the benchmark has it


def _f(v, fmt: str = ".4f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _budget(summary: dict) -> str:
    b = summary.get("budget") or {}
    parts = []
    if b.get("minutes"):
        parts.append(f"{_f(b['minutes'], 'g')} min ({b.get('clock') or 'wall'} clock)")
    if b.get("steps"):
        parts.append(f"{b['steps']} steps")
    return " and ".join(parts) or "none"


def _per_run(summary: dict, label: str, key: str, fmt: str, scale: float = 1.0) -> str:
    """One model's ``key`` per run, in seed order, e.g. ``1250 / 1225`` (``scale`` divides, e.g. 60 for minutes)."""
    runs = sorted((r for r in summary.get("runs", []) if r.get("model") == label), key=lambda r: r.get("seed", 0))
    return " / ".join(_f(None if r.get(key) is None else r[key] / scale, fmt) for r in runs) or "n/a"


def _models_table(summary: dict, metric: str) -> list[str]:
    lines = [f"| model | params | {metric} mean ± SD (cases) | median | 95 % CI (cases) | per-seed means | "
             "steps per seed | epochs per seed | train min per seed | CPU share per seed | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, info in summary["models"].items():
        m = info.get("metrics", {}).get(metric, {})
        oc, os_ = m.get("over_cases") or {}, m.get("over_seeds") or {}
        ci = oc.get("ci95") or [None, None]
        params = info.get("parameters")
        seeds = " / ".join(_f(v) for v in os_.get("values", [])) or "n/a"
        lines.append(
            f"| {label} | {_f(params / 1e6, '.2f') + ' M' if params else 'n/a'} | {_f(oc.get('mean'))} ± "
            f"{_f(oc.get('sd'))} | {_f(oc.get('median'))} | [{_f(ci[0])}, {_f(ci[1])}] | {seeds} | "
            f"{_per_run(summary, label, 'steps', '.0f')} | {_per_run(summary, label, 'epochs', '.0f')} | "
            f"{_per_run(summary, label, 'train_seconds', '.1f', 60)} | "
            f"{_per_run(summary, label, 'cpu_share', '.2f')} | "
            f"{_f((info.get('peak_rss_mb') or {}).get('max'), '.0f')} |")
    return lines


def _comparisons_table(summary: dict, metrics: list[str]) -> list[str]:
    rows = [c for c in summary.get("comparisons", []) if c["metric"] in metrics]
    if not rows:
        return []
    lines = ["| b − a | metric | better | mean difference | 95 % CI | Wilcoxon p | cases |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        ci = c.get("ci95") or [None, None]
        better = "higher" if c.get("higher_is_better", True) else "lower"
        lines.append(f"| {c['b']} − {c['a']} | {c['metric']} | {better} | {_f(c.get('mean_difference'))} | "
                     f"[{_f(ci[0])}, {_f(ci[1])}] | {_f(c.get('wilcoxon_p'), '.3g')} | {c.get('n', 'n/a')} |")
    return lines


def _other_metrics_table(summary: dict, skip: str) -> list[str]:
    names = [m for m in summary.get("metrics", []) if m != skip]
    if not names:
        return []
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, info in summary["models"].items():
        vals = [_f(((info.get("metrics", {}).get(n) or {}).get("over_cases") or {}).get("mean")) for n in names]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return lines


def _test_text(test: dict) -> str:
    """What the arms were tested on: a test set, or the held-out cases of k-fold cross-validation."""
    if test.get("folds"):
        return (f"{test['folds']}-fold cross-validation on `{test.get('images')}` (folds "
                f"{', '.join(str(k) for k in test.get('fold_ids') or [])} run; every case of those folds predicted "
                f"once per seed by the run that held it out)")
    return (f"test images `{test.get('images')}`" + (f", labels `{test['labels']}`" if test.get("labels") else "")
            + (f", masks `{test['mask']}`" if test.get("mask") else ""))


def render_markdown(summary: dict) -> str:
    """Markdown text of a benchmark ``summary.json`` (see the module docstring)."""
    metric = summary["primary_metric"]
    test = summary.get("test") or {}
    seeds = ", ".join(str(s) for s in summary.get("seeds", []))
    out = [f"# Benchmark: {', '.join(summary['models'])}", "",
           f"Budget {_budget(summary)} per run, {summary.get('threads_per_run')} thread(s) per run, "
           f"{summary.get('parallel')} run(s) side by side; seeds {seeds}; {_test_text(test)}"
           f"; {summary.get('checkpoint', '')}.",
           "", f"Command: `{summary.get('command', '')}` ({summary.get('created', '')}).", "",
           f"## {metric} per model", "", *_models_table(summary, metric), ""]
    stats = summary.get("statistics") or {}
    if any(r.get("cpu_share") is not None for r in summary.get("runs", [])):
        out += ["CPU share: the run's CPU time over wall time x threads (1.00: its threads never waited for a core).",
                ""]
    if stats:
        out += [f"Over cases: {stats.get('over_cases')}. Over seeds: {stats.get('over_seeds')}.", ""]
    compared = [metric, *(m for m in SECONDARY if m in summary.get("metrics", []))]
    comp = _comparisons_table(summary, compared)
    if comp:
        out += ["## Paired comparisons", "", *comp, ""]
        if stats.get("comparisons"):
            out += [f"{stats['comparisons'][0].upper()}{stats['comparisons'][1:]}; bootstrap with "
                    f"{stats.get('n_boot')} resamples.", ""]
    other = _other_metrics_table(summary, metric)
    if other:
        out += ["## Other metrics (mean over cases)", "", *other, ""]
    if summary.get("warnings"):
        out += ["## Warnings", "", *(f"- {w}" for w in summary["warnings"]), ""]
    if summary.get("failed"):
        out += ["## Failed runs", "", *(f"- {f}" for f in summary["failed"]), ""]
    return "\n".join(out)


def _vs_reference(summary: dict, ref: str, arm: str, metric: str) -> dict | None:
    """The paired comparison arm − ref of ``metric`` (a stored ref − arm is turned round)."""
    for c in summary.get("comparisons", []):
        if c.get("metric") != metric:
            continue
        if (c.get("a"), c.get("b")) == (ref, arm):
            return c
        if (c.get("a"), c.get("b")) == (arm, ref):
            ci = c.get("ci95") or [None, None]
            d, lo, hi = (None if v is None else -v for v in (c.get("mean_difference"), ci[1], ci[0]))
            return dict(c, mean_difference=d, ci95=[lo, hi])
    return None


def _budget_table(summary: dict) -> list[str]:
    metric = summary["primary_metric"]
    ref = summary.get("reference") or next(iter(summary["models"]), "")
    lines = [f"| arm | seeds | {metric} mean ± SD (cases) | 95 % CI (cases) | − {ref} (paired) | 95 % CI | p | "
             "steps | CPU min | train min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, info in summary["models"].items():
        oc = ((info.get("metrics") or {}).get(metric) or {}).get("over_cases") or {}
        ci = oc.get("ci95") or [None, None]
        seeds = ",".join(str(x) for x in info.get("seeds") or []) or "n/a"
        if label == ref:
            diff = ["reference", "", ""]
        else:
            c = _vs_reference(summary, ref, label, metric) or {}
            dci = c.get("ci95") or [None, None]
            diff = [_f(c.get("mean_difference")), f"[{_f(dci[0])}, {_f(dci[1])}]", _f(c.get("wilcoxon_p"), ".3g")]
        cpu = (info.get("cpu_seconds") or {}).get("mean")
        train = (info.get("train_seconds") or {}).get("mean")
        lines.append(f"| {label} | {seeds} | {_f(oc.get('mean'))} ± {_f(oc.get('sd'))} | [{_f(ci[0])}, {_f(ci[1])}] | "
                     f"{' | '.join(diff)} | {_f((info.get('steps') or {}).get('mean'), '.0f')} | "
                     f"{_f(None if cpu is None else cpu / 60, '.1f')} | "
                     f"{_f(None if train is None else train / 60, '.1f')} |")
    return lines


def render_budgets_markdown(budgets: list[tuple[str, object, dict]], command: str = "") -> str:
    """``OUT/summary.md`` of a benchmark with several budgets: per budget (its description, its folder relative to
    ``OUT`` and its ``summary.json``) one table — per arm the primary metric's mean ± SD over cases and 95 % CI, the
    paired per-case difference to the reference arm with its CI and Wilcoxon p, mean steps, CPU minutes and training
    minutes per run — then the budget's warnings. Each budget's own summary.md has the full tables."""
    out = ["# Benchmark: one table per budget", ""]
    if command:
        out += [f"Command: `{command}`.", ""]
    for describe, folder, summary in budgets:
        stats = summary.get("statistics") or {}
        out += [f"## {describe} (`{folder}/`)", "", *_budget_table(summary), "",
                f"Tested on {_test_text(summary.get('test') or {})}; per case the value is averaged over the "
                f"arm's seeds, then paired with the reference arm ({summary.get('reference')}); bootstrap with "
                f"{stats.get('n_boot')} resamples, two-sided Wilcoxon signed-rank p. Full tables: "
                f"`{folder}/summary.md`.", ""]
        if summary.get("warnings"):
            out += [*(f"- warning: {w}" for w in summary["warnings"]), ""]
        if summary.get("failed"):
            out += [*(f"- failed: {f}" for f in summary["failed"]), ""]
    return "\n".join(out)
