"""The statistics of ``mambaseg benchmark``: mean, SD, median and percentile-bootstrap CIs, and paired per-case
differences with a bootstrap CI and a Wilcoxon signed-rank p-value (scipy), per model and pair of models."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["PRIMARY_METRIC", "bootstrap_ci", "describe", "paired_comparison", "summarize"]

PRIMARY_METRIC = "dice"


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[~np.isnan(arr)]


def bootstrap_ci(values: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95,
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Args:
        values: sample (NaNs are left out).
        n_boot: number of resamples with replacement.
        seed: seed of the resampling generator (the result is reproducible).
        level: coverage, e.g. 0.95.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for an empty sample, ``(v, v)`` for one value or a constant sample.
    """
    x = _clean(values)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(int(n_boot), x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def describe(values: Sequence[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """n, mean, SD (ddof=1; NaN for n < 2), median and 95 % percentile-bootstrap CI of the mean (NaNs left out)."""
    x = _clean(values)
    if x.size == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "sd": nan, "median": nan, "ci95": [nan, nan]}
    return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
            "median": float(np.median(x)), "ci95": list(bootstrap_ci(x, n_boot, seed))}


def paired_comparison(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired comparison of two models on the same cases: the difference ``b - a`` per case.

    Pairs with a NaN on either side are left out.

    Returns:
        ``{n, mean_difference, sd_difference, median_difference, ci95 (bootstrap of the mean difference),
        wilcoxon_statistic, wilcoxon_p}`` — the two-sided Wilcoxon signed-rank test of
        :func:`scipy.stats.wilcoxon` (p = 1 when every difference is zero, NaN when there are no pairs).
    """
    from scipy.stats import wilcoxon

    xa, xb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if xa.shape != xb.shape:
        raise ValueError(f"paired_comparison needs equal-length samples, got {xa.size} and {xb.size}")
    ok = ~(np.isnan(xa) | np.isnan(xb))
    d = xb[ok] - xa[ok]
    desc = describe(d, n_boot, seed)
    stat, p = float("nan"), float("nan")
    if d.size and np.all(d == 0):
        stat, p = 0.0, 1.0
    elif d.size:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = wilcoxon(d)
        stat, p = float(res.statistic), float(res.pvalue)
    return {"n": desc["n"], "mean_difference": desc["mean"], "sd_difference": desc["sd"],
            "median_difference": desc["median"], "ci95": desc["ci95"], "wilcoxon_statistic": stat,
            "wilcoxon_p": p}


def _higher_is_better(metric: str) -> bool:
    return not metric.split(":")[0].startswith("hd")


def summarize(rows: list[dict], labels: Sequence[str], n_boot: int = 10000, seed: int = 0,
              reference: str | None = None) -> dict:
    """Per-model statistics and pairwise comparisons from ``results.csv``-style rows (model, seed, case, metric, value).

    Per model and metric: ``over_cases`` (each case's value averaged over seeds first) and ``over_seeds`` (each seed's
    mean over cases). Per pair (a, b) and metric: the paired per-case difference ``b - a`` (seed-averaged values, so
    models with different numbers of seeds pair on their per-case means). Pairs are (earlier, later) in ``labels``
    order; with ``reference`` its pairs come first, each as (reference, other)."""
    table: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in rows:
        table.setdefault((r["model"], r["metric"]), {}).setdefault(r["case"], {})[int(r["seed"])] = float(r["value"])
    metrics = sorted({m for _, m in table}, key=lambda m: (m != PRIMARY_METRIC, m))

    def per_case(model: str, metric: str) -> dict[str, float]:
        out = {}
        for case, by_seed in table.get((model, metric), {}).items():
            vals = [v for v in by_seed.values() if not math.isnan(v)]
            out[case] = float(np.mean(vals)) if vals else float("nan")
        return out

    models = {}
    for label in labels:
        stats = {}
        for metric in metrics:
            pc = per_case(label, metric)
            if not pc:
                continue
            seeds = sorted({s for by_seed in table[(label, metric)].values() for s in by_seed})
            per_seed = []
            for s in seeds:
                vals = [by_seed[s] for by_seed in table[(label, metric)].values() if s in by_seed]
                vals = [v for v in vals if not math.isnan(v)]
                per_seed.append(float(np.mean(vals)) if vals else float("nan"))
            stats[metric] = {"over_cases": describe(list(pc.values()), n_boot, seed),
                             "over_seeds": dict(describe(per_seed, n_boot, seed), seeds=seeds, values=per_seed),
                             "higher_is_better": _higher_is_better(metric)}
        models[label] = {"metrics": stats}
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    if reference in labels:
        pairs = [(reference, b) for b in labels if b != reference] + [
            (a, b) for a, b in pairs if reference not in (a, b)]
    comparisons = []
    for a, b in pairs:
        for metric in metrics:
            ca, cb = per_case(a, metric), per_case(b, metric)
            cases = sorted(set(ca) & set(cb))
            if not cases:
                continue
            res = paired_comparison([ca[c] for c in cases], [cb[c] for c in cases], n_boot, seed)
            comparisons.append({"a": a, "b": b, "metric": metric, "difference": "b - a (per case, mean over seeds)",
                                "higher_is_better": _higher_is_better(metric), **res})
    return {"metrics": metrics, "models": models, "comparisons": comparisons}
