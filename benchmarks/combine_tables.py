"""One table from several `mambaseg benchmark` folders that share a budget and a test set, e.g. an ablation's first
seeds and a later seed added at another commit (issue 21: the equal-steps DRIVE ablation, seeds 0/1 at 306421f and
91d4a30, seed 2 of the base and full networks at b03fb9e).

The per-case rows (``results.csv``) of every folder are pooled and summarised by the benchmark's own statistics
(:func:`mambaseg.apps.benchmark.statistics.summarize`: each case averaged over seeds, mean ± SD over cases, bootstrap
95 % CI, paired differences against ``--reference`` with Wilcoxon p). Refused: a (model, seed) in two folders, or
folders whose budgets or test sets differ. The commit of every run is listed beside the table, so a reader sees what
was mixed.

Usage:
    python benchmarks/combine_tables.py FOLDER [FOLDER ...] --reference MODEL [--metric dice] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from mambaseg.apps.benchmark.statistics import summarize


def _fail(msg: str) -> None:
    print(f"combine_tables: {msg}", file=sys.stderr)
    raise SystemExit(2)


def load(folders: list[Path]) -> tuple[list[dict], list[str], dict[str, dict]]:
    """Pooled rows, model labels in first-seen order, and per run (model_seed): folder, commit, steps, minutes."""
    rows, labels, runs, ref = [], [], {}, None
    for folder in folders:
        summary_file, results_file = folder / "summary.json", folder / "results.csv"
        if not summary_file.is_file() or not results_file.is_file():
            _fail(f"{folder}: expected a benchmark output folder with summary.json and results.csv")
        summary = json.loads(summary_file.read_text())
        key = (json.dumps(summary.get("budget"), sort_keys=True), json.dumps(summary.get("test"), sort_keys=True))
        if ref is None:
            ref = key
        elif key != ref:
            _fail(f"{folder}: its budget or test set differs from {folders[0]}'s; only like budgets are pooled")
        for run in summary.get("runs", []):
            name = f"{run.get('model')}_seed{run.get('seed')}"
            if name in runs:
                _fail(f"{folder}: run {name} is also in {runs[name]['folder']}")
            runs[name] = dict(folder=str(folder), commit=run.get("commit"), steps=run.get("steps"),
                              cpu_minutes=round(float(run.get("cpu_seconds") or "nan") / 60, 1))
        with results_file.open() as f:
            for row in csv.DictReader(f):
                rows.append(row)
                if row["model"] not in labels:
                    labels.append(row["model"])
    return rows, labels, runs


def table(stats: dict, labels: list[str], reference: str, metric: str) -> str:
    lines = [f"| model | seeds | {metric} mean ± SD (cases) | 95 % CI | per-seed means "
             f"| − {reference} (95 % CI), Wilcoxon p |", "|---|---|---|---|---|---|"]
    comps = {c["b"]: c for c in stats["comparisons"] if c["a"] == reference and c["metric"] == metric}
    for label in labels:
        m = stats["models"][label]["metrics"].get(metric)
        if m is None:
            continue
        oc, os_ = m["over_cases"], m["over_seeds"]
        c = comps.get(label)
        diff = "—" if c is None else (f"{c['mean_difference']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], "
                                      f"p = {c['wilcoxon_p']:.2g}")
        lines.append(f"| {label} | {','.join(map(str, os_['seeds']))} | {oc['mean']:.4f} ± {oc['sd']:.4f} | "
                     f"[{oc['ci95'][0]:.4f}, {oc['ci95'][1]:.4f}] | {' / '.join(f'{v:.4f}' for v in os_['values'])} | "
                     f"{diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--reference", required=True, help="the model every other is compared with")
    ap.add_argument("--metric", default="dice")
    ap.add_argument("--out", type=Path, help="write the pooled statistics and the run list here (JSON)")
    args = ap.parse_args(argv)
    rows, labels, runs = load(args.folders)
    if args.reference not in labels:
        _fail(f"--reference {args.reference}: not a model of these folders ({', '.join(labels)})")
    stats = summarize(rows, labels, reference=args.reference)
    print(table(stats, labels, args.reference, args.metric))
    print("\nruns: " + "; ".join(f"{k} {str(v['commit'])[:7]}" for k, v in sorted(runs.items())))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(command=" ".join(sys.argv), folders=[str(f) for f in args.folders],
                                            runs=runs, statistics=stats), indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
