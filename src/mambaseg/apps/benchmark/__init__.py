"""``mambaseg benchmark``: fair, equal-budget comparison of several models and seeds on one test set.

Every (model, seed) run trains under the same conditions — same threads, same budget (wall-clock minutes through
``train.time_limit_min`` and/or a step budget), the same seeded data split for a given seed — as a subprocess
``python -m mambaseg train ...`` in its own folder ``OUT/runs/<model>_seed<k>/``. Up to ``parallel`` trainings
run side by side. Each run is then predicted and evaluated on the test set with the checkpoint that training
selected on validation (``checkpoint_best.pt``), reusing :mod:`mambaseg.engine.predict` and
:mod:`mambaseg.engine.evaluate` (2D images and 3D volumes alike).

Outputs: ``OUT/results.csv`` (one row per model, seed, case, metric), ``OUT/summary.json`` (per-model statistics,
paired comparisons, steps/time/memory per run), ``OUT/summary.md`` (its tables in Markdown) and ``OUT/index.html``
(tables, per-case plots, learning curves).

Several budgets (``--budget steps:600 --budget cpu:30``, :func:`run_benchmarks`) train every (arm, seed) once per
budget, each budget in its own folder ``OUT/<tag>/`` laid out as above, and ``OUT/summary.md`` puts their tables one
after the other.

One module per idea:

- :mod:`.options`: the command-line inputs parsed and checked (models, seeds, budgets, model size);
- :mod:`.plan`: what will run (the test set or folds, one run per model, seed and fold, command lines);
- :mod:`.run`: running it (trainings, locks, signals, ``results.csv`` / ``summary.json``);
- :mod:`.records`: what each run's folder says (its state on a rerun, its training record, fairness warnings);
- :mod:`.evaluation`: each run predicted and evaluated on the test set, the per-case metrics;
- :mod:`.statistics`: the numbers (bootstrap CIs, paired comparisons);
- :mod:`.markdown` and :mod:`.html`: ``summary.md`` and ``index.html``.
"""

from __future__ import annotations

from .evaluation import case_metrics
from .options import BenchmarkError, Budget, parse_budget, parse_budget_spec, parse_models, parse_n_boot, parse_seeds
from .plan import (
    FOREVER_EPOCHS,
    BenchmarkPlan,
    BenchmarkTestSet,
    RunSpec,
    plan_benchmark,
    plan_budgets,
    resolve_test_set,
    train_command,
    train_env,
)
from .records import check_run_records, fairness_warnings
from .run import (
    BenchmarkInterrupted,
    format_plan,
    format_summary,
    run_benchmark,
    run_benchmarks,
    write_results_csv,
)
from .statistics import PRIMARY_METRIC, summarize

__all__ = [
    "FOREVER_EPOCHS",
    "PRIMARY_METRIC",
    "BenchmarkError",
    "BenchmarkInterrupted",
    "BenchmarkPlan",
    "BenchmarkTestSet",
    "Budget",
    "RunSpec",
    "case_metrics",
    "check_run_records",
    "fairness_warnings",
    "format_plan",
    "format_summary",
    "parse_budget",
    "parse_budget_spec",
    "parse_models",
    "parse_n_boot",
    "parse_seeds",
    "plan_benchmark",
    "plan_budgets",
    "resolve_test_set",
    "run_benchmark",
    "run_benchmarks",
    "summarize",
    "train_command",
    "train_env",
    "write_results_csv",
]
