"""Running ``mambaseg benchmark`` (the idea of the whole tool is in :mod:`mambaseg.apps.benchmark`): the trainings
as subprocesses under one lock per output folder, resumed from their states (:mod:`.records`), every trained run
evaluated on the test set (:mod:`.evaluation`), and the outputs ``results.csv`` / ``summary.json`` (then
:mod:`.markdown` and :mod:`.html`).

Rerunning the same command resumes: a run with ``benchmark_done.json`` is skipped, a finished training without an
evaluation is only evaluated (so is one whose done-marker or cached evaluation is damaged), and an interrupted training
continues from its ``checkpoint_last.pt``. A damaged training record (``summary.json``, ``benchmark_train.json``,
``provenance.json`` of a run) is a one-line error naming the file, found before anything is trained.

One benchmark at a time per output folder (a lock, :mod:`mambaseg.utils.runlock`); SIGTERM, SIGHUP and SIGINT stop
the training subprocesses, wait for them and release the locks. New or resumed trainings are refused when runs of the
same table were trained at another commit, unless mixed commits are allowed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...utils.atomic import atomic_path, atomic_write_text
from ...utils.runlock import LOCK_NAME, RunLock, RunLockedError
from .evaluation import case_metrics, evaluate_run
from .options import BenchmarkError, parse_n_boot
from .plan import BenchmarkPlan, RunSpec, train_command, train_env
from .records import (
    DONE_MARKER,
    append_segment,
    check_run_records,
    fairness_warnings,
    read_json,
    run_state,
    short_commit,
    training_record,
)
from .statistics import PRIMARY_METRIC, summarize

__all__ = [
    "BenchmarkInterrupted",
    "format_plan",
    "format_summary",
    "run_benchmark",
    "run_benchmarks",
    "write_results_csv",
]

logger = logging.getLogger("mambaseg.apps.benchmark")

LOAD_SAMPLE_S = 30.0  # how often the load average is sampled while trainings run


def format_plan(plan: BenchmarkPlan) -> str:
    """A human-readable plan: budget, runs and their command lines."""
    clock = plan.runs[0].cfg.train.budget_clock if plan.runs else "wall"
    budget = " and ".join(x for x in (f"{plan.budget_minutes:g} min ({clock} clock)" if plan.budget_minutes else "",
                                       f"{plan.steps} steps" if plan.steps else "") if x)
    by_label = plan.seeds_by_label or {label: plan.seeds for label in plan.labels}
    if all(by_label.get(label) == plan.seeds for label in plan.labels):
        shape = f"{len(plan.labels)} model(s) x {len(plan.seeds)} seed(s)"
    else:
        shape = f"{len(plan.labels)} model(s), seeds " + "; ".join(
            f"{label} {','.join(str(x) for x in by_label[label])}" for label in plan.labels)
    lines = [(f"benchmark: {shape} = {len(plan.runs)} run(s); budget "
             f"{budget} per run; {plan.threads} thread(s) per run, {plan.parallel} run(s) side by side"),
             (f"test set: {plan.test.folds}-fold cross-validation on {plan.test.images} (folds "
              f"{','.join(str(k) for k in plan.test.fold_ids)} run; each run predicts the cases its fold held out)"
              if plan.test.folds else f"test set: images {plan.test.images}, labels {plan.test.labels}"
              + (f", mask {plan.test.mask}" if plan.test.mask else "")),
             f"output: {plan.out}" + (f"; paired comparisons against {plan.reference}" if plan.reference else "")]
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    for spec in plan.runs:
        state = run_state(spec, plan.test)[0]
        lines.append(f"  {spec.name} [{state}]: OMP_NUM_THREADS={plan.threads} "
                     + " ".join(shlex.quote(x) for x in train_command(spec, resume=state == "resume")))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- training
def _run_trainings(jobs: list[tuple[RunSpec, bool]], parallel: int, threads: int,
                   log: Callable[[str], None]) -> dict[str, dict]:
    """Run ``(spec, resume)`` trainings as subprocesses, ``parallel`` at a time; per run: rc, peak RSS, wall time,
    CPU time (user + system, all its threads) and the machine's mean 1-minute load average while it ran."""
    pending = list(jobs)
    running: dict[int, tuple[RunSpec, subprocess.Popen, float, object, bool]] = {}
    results: dict[str, dict] = {}
    loads: dict[int, list[float]] = {}
    last_sample = 0.0
    env = train_env(threads)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                spec, resume = pending.pop(0)
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                logf = open(spec.run_dir / "train_stdout.log", "a")  # noqa: SIM115 (open while the child runs)
                logf.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} "
                           f"{' '.join(shlex.quote(x) for x in train_command(spec, resume))}\n")
                logf.flush()
                proc = subprocess.Popen(train_command(spec, resume), env=env, stdout=logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
                running[proc.pid] = (spec, proc, time.time(), logf, resume)
                loads[proc.pid] = []
                log(f"{spec.name}: training started ({'resumed' if resume else 'new'}, pid {proc.pid})")
            time.sleep(0.2)
            if time.time() - last_sample >= LOAD_SAMPLE_S:
                last_sample = time.time()
                for pid in running:
                    loads[pid].append(os.getloadavg()[0])
            for pid in list(running):
                wpid, status, usage = os.wait4(pid, os.WNOHANG)
                if wpid == 0:
                    continue
                spec, proc, t0, logf, resume = running.pop(pid)
                proc.returncode = os.waitstatus_to_exitcode(status)
                logf.close()
                samples = loads.pop(pid)
                results[spec.name] = {"rc": proc.returncode, "wall_seconds": round(time.time() - t0, 1),
                                      "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                                      "load_mean": round(float(np.mean(samples)), 2) if samples else None,
                                      "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1)}  # Linux: ru_maxrss in KiB
                append_segment(spec.run_dir, dict(results[spec.name], resumed=resume,
                                                   started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))))
                res = results[spec.name]
                log(f"{spec.name}: training {'finished' if proc.returncode == 0 else 'FAILED'} "
                    f"({res['wall_seconds']:.0f} s, peak RSS {res['peak_rss_mb']:.0f} MB)")
    finally:
        for _, proc, _, logf, _ in running.values():  # interrupted: stop our children, keep their checkpoints
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
    return results


def _agg(values: list) -> dict:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(np.mean(vals)), "min": float(min(vals)), "max": float(max(vals))}


# ------------------------------------------------------------------------------------------------------------ main
def _evaluate_all(plan: BenchmarkPlan, states: dict, proc: dict, log: Callable[[str], None],
                  ) -> tuple[list[dict], list[dict], list[str]]:
    """Evaluate every trained run (reusing finished evaluations): (run records, results rows, failed runs)."""
    records, rows, failed = [], [], []
    for spec in plan.runs:
        if spec.name in proc and proc[spec.name]["rc"] != 0:
            failed.append(f"{spec.name} (exit {proc[spec.name]['rc']}, see {spec.run_dir / 'train_stdout.log'})")
            continue
        if not (spec.run_dir / "summary.json").is_file():
            failed.append(f"{spec.name} (no summary.json after training)")
            continue
        state = states[spec.name][0]
        if state == "done":
            result = read_json(spec.run_dir / "test_eval" / "summary.json")
            # recomputed from the run's files, so runs finished before a field was recorded get it where it can be
            record = {**read_json(spec.run_dir / DONE_MARKER)["record"], **training_record(spec)}
        else:
            record = training_record(spec)
            log(f"{spec.name}: predicting and evaluating {plan.test.images}")
            result = evaluate_run(spec, plan.test)
            atomic_write_text(spec.run_dir / DONE_MARKER, json.dumps(
                {"record": record, "test": plan.test.to_dict(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")},
                indent=2, default=float))
        records.append(record)
        for case, metric, value in case_metrics(result):
            rows.append({"model": spec.label, "seed": spec.seed, "case": case, "metric": metric, "value": value})

    return records, rows, failed


class BenchmarkInterrupted(KeyboardInterrupt):
    """The benchmark received SIGTERM, SIGHUP or SIGINT: its trainings were stopped and its locks released."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextmanager
def _signals_stop_benchmark() -> Iterator[None]:
    """While the benchmark runs, SIGTERM/SIGHUP/SIGINT raise :class:`BenchmarkInterrupted` once (later ones are
    ignored so that the clean-up — stopping and waiting for the trainings, releasing the locks — is not cut short).
    Only in the main thread (elsewhere Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise BenchmarkInterrupted(signum)

    sigs = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {sig: signal.signal(sig, handler) for sig in sigs}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _lock_folders(folders: list[Path]) -> list[RunLock]:
    """One benchmark per output folder: lock each (top folder and budget folders), or release all and raise."""
    locks: list[RunLock] = []
    try:
        for f in dict.fromkeys(folders):
            locks.append(RunLock(f, what="benchmark").acquire())
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        raise
    return locks


def _remove_empty_outputs(folders: list[Path]) -> None:
    """Remove folders this benchmark created that hold nothing but its (released) lock file, deepest first."""
    for f in sorted(dict.fromkeys(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            if f.is_dir() and not f.is_symlink() and {p.name for p in f.iterdir()} <= {LOCK_NAME}:
                (f / LOCK_NAME).unlink(missing_ok=True)
                f.rmdir()
        except OSError:
            pass


def _check_not_training(spec: RunSpec) -> None:
    """A run about to be trained is not being trained by another process (e.g. a benchmark of an older version,
    which held no lock on its output folder): its run folder's training lock is free."""
    if not (spec.run_dir / LOCK_NAME).is_file():
        return
    lock = RunLock(spec.run_dir)
    try:
        lock.acquire()
    except RunLockedError as e:
        raise BenchmarkError(f"{spec.run_dir}: another process is training this run ({' '.join(str(e).split())}); "
                             f"wait for it to end.") from None
    lock.release()


def _check_commits(plan: BenchmarkPlan, jobs: list[tuple[RunSpec, bool]]) -> None:
    """Refuse to train into a table whose runs were trained at another commit than this code (or at several)."""
    from ...resources import git_commit

    if not jobs:
        return
    by_commit: dict[str, list[str]] = {}
    for spec in plan.runs:
        rec = read_json(spec.run_dir / "provenance.json")
        commit = rec.get("git_commit") if isinstance(rec, dict) else None
        if commit and commit != "unknown":
            by_commit.setdefault(str(commit), []).append(spec.name)
    current = git_commit()
    others = {c: runs for c, runs in by_commit.items() if c != current}
    if (current and current != "unknown" and others) or len(by_commit) > 1:
        listed = "; ".join(f"{short_commit(c)}: {', '.join(runs)}" for c, runs in others.items())
        raise BenchmarkError(
            f"{plan.out}: runs of this table were trained at another commit than this code "
            f"({short_commit(current) if current else 'unknown'}) — {listed}; training "
            f"{', '.join(spec.name for spec, _ in jobs)} now would mix commits in one table: give "
            f"--allow-mixed-commits to train anyway, or use another --out.")


def _prepare(plan: BenchmarkPlan, allow_mixed_commits: bool,
             log: Callable[[str], None]) -> tuple[dict, list[tuple[RunSpec, bool]]]:
    """Every check that needs the run folders, before anything is trained: run states (damaged markers and cached
    evaluations are evaluated again), whole training records, no run being trained elsewhere, one commit per table.
    ``log`` gets the runs whose training is skipped (called once every check has passed)."""
    states = {spec.name: run_state(spec, plan.test) for spec in plan.runs}
    jobs, notes = [], []
    for spec in plan.runs:
        check_run_records(spec)
        state, why = states[spec.name]
        if state in ("done", "evaluate"):
            notes.append(f"{spec.name}: training skipped ({why})")
        else:
            _check_not_training(spec)
            jobs.append((spec, state == "resume"))
    if not allow_mixed_commits:
        _check_commits(plan, jobs)
    for note in notes:
        log(note)
    return states, jobs


def run_benchmark(plan: BenchmarkPlan, n_boot: int = 10000, command: str = "",
                  log: Callable[[str], None] = print, allow_mixed_commits: bool = False) -> dict:
    """Train (or skip/resume), evaluate and summarise every run of ``plan``; writes the four outputs."""
    return run_benchmarks([plan], n_boot, command, log, allow_mixed_commits)[0]


def run_benchmarks(plans: list[BenchmarkPlan], n_boot: int = 10000, command: str = "",
                   log: Callable[[str], None] = print, allow_mixed_commits: bool = False,
                   out: str | Path | None = None) -> list[dict]:
    """Run one benchmark per plan (the budgets of :func:`~mambaseg.apps.benchmark.plan.plan_budgets`) under one lock
    on ``out`` (default: the first plan's folder) and each plan's folder. Every plan is checked (:func:`_prepare`)
    before any training starts; with several plans ``out/summary.md`` puts their tables one after the other. Failed
    runs of any plan raise :class:`BenchmarkError` once every plan is summarised."""
    n_boot = parse_n_boot(n_boot)
    if not plans:
        raise BenchmarkError("no benchmark to run.")
    top = Path(out) if out is not None else plans[0].out
    folders = [top, *(p.out for p in plans)]
    created = [f for f in dict.fromkeys(folders) if not f.exists()]
    summaries, errors = [], []
    with _signals_stop_benchmark():
        locks = _lock_folders(folders)
        try:
            try:
                notes: list[str] = []
                prepared = [_prepare(p, allow_mixed_commits, notes.append) for p in plans]
            except BaseException:
                for lock in locks:
                    lock.release()
                _remove_empty_outputs(created)
                raise
            for note in notes:
                log(note)
            for plan, (states, jobs) in zip(plans, prepared):
                if len(plans) > 1:
                    log(f"budget {plan.budget.describe() if plan.budget else ''}: {plan.out}")
                summary, failed = _execute(plan, states, jobs, n_boot, command, log)
                summaries.append(summary)
                if failed:
                    errors.append(f"{plan.out}: {len(failed)} run(s) failed: {'; '.join(failed)}")
            if len(plans) > 1:
                from .markdown import render_budgets_markdown

                atomic_write_text(top / "summary.md", render_budgets_markdown(
                    [(p.budget.describe() if p.budget else str(p.out), p.out.relative_to(top) if p.out != top
                      else Path("."), _json_safe(s)) for p, s in zip(plans, summaries)], command))
                log(f"budgets' tables: {top / 'summary.md'}")
        finally:
            for lock in locks:
                lock.release()
    if errors:
        raise BenchmarkError(f"{'; '.join(errors)}; rerun the same command to resume.")
    return summaries


def _execute(plan: BenchmarkPlan, states: dict, jobs: list[tuple[RunSpec, bool]], n_boot: int, command: str,
             log: Callable[[str], None]) -> tuple[dict, list[str]]:
    """Train the jobs, evaluate every run, write the four outputs of ``plan.out``: (summary, failed runs)."""
    import torch

    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    for w in plan.warnings:
        log(f"warning: {w}")
    proc = _run_trainings(jobs, plan.parallel, plan.threads, log) if jobs else {}

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, plan.threads * plan.parallel))  # trainings are over: evaluation may use them all
    try:
        records, rows, failed = _evaluate_all(plan, states, proc, log)
    finally:
        torch.set_num_threads(threads_before)
    write_results_csv(out / "results.csv", rows)
    stats = summarize(rows, plan.labels, n_boot=n_boot, reference=plan.reference or None)
    for label in plan.labels:
        recs = [r for r in records if r["model"] == label]
        stats["models"][label].update({
            "model_name": recs[0]["model_name"] if recs else None, "config": recs[0]["config"] if recs else None,
            "runs": len(recs), "seeds": [r["seed"] for r in recs],
            "steps": _agg([r["steps"] for r in recs]), "epochs": _agg([r["epochs"] for r in recs]),
            "train_seconds": _agg([r["train_seconds"] for r in recs]),
            "cpu_seconds": _agg([r.get("cpu_seconds") for r in recs]),
            "peak_rss_mb": _agg([r["peak_rss_mb"] for r in recs]),
            "parameters": recs[0]["parameters"] if recs else None,
        })
    clock = (plan.runs[0].cfg.train.budget_clock if plan.runs else "wall") if plan.budget_minutes else None
    unfair = fairness_warnings(records, clock)
    for w in unfair:
        log(f"warning: {w}")
    summary = {
        "command": command, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "budget": {"minutes": plan.budget_minutes or None, "steps": plan.steps or None, "clock": clock},
        "threads_per_run": plan.threads, "parallel": plan.parallel, "seeds": plan.seeds, "reference": plan.reference,
        "seeds_per_model": {label: plan.seeds_by_label.get(label, plan.seeds) for label in plan.labels},
        "models": stats["models"],
        "test": plan.test.to_dict(), "primary_metric": PRIMARY_METRIC, "metrics": stats["metrics"],
        "statistics": {"over_cases": "each case's value is first averaged over seeds; mean, SD (ddof 1), median and a "
                                     "95 % percentile bootstrap CI of the mean over cases",
                       "over_seeds": "each seed's mean over cases; the same statistics over seeds",
                       "comparisons": "paired per-case difference b - a of seed-averaged values: mean, 95 % "
                                      "percentile bootstrap CI, two-sided Wilcoxon signed-rank p "
                                      "(scipy.stats.wilcoxon)",
                       "n_boot": n_boot, "bootstrap_seed": 0},
        "checkpoint": "checkpoint_best.pt of each run (best validation Dice, chosen by train on its validation split)",
        "comparisons": stats["comparisons"], "runs": records, "failed": failed,
        "warnings": [*plan.warnings, *unfair],
    }
    atomic_write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2))
    from .html import write_html
    from .markdown import render_markdown

    atomic_write_text(out / "summary.md", render_markdown(_json_safe(summary)))

    write_html(summary, rows, plan, out / "index.html")
    log(format_summary(summary))
    log(f"results: {out / 'results.csv'}, {out / 'summary.json'}, {out / 'summary.md'}, {out / 'index.html'}")
    return summary, failed


def write_results_csv(path: Path, rows: list[dict]) -> Path:
    """``results.csv`` (model, seed, case, metric, value), written to a temporary name and renamed: complete or
    absent under its name."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "seed", "case", "metric", "value"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "value": repr(float(r["value"]))})
    return Path(path)


def _json_safe(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def format_summary(summary: dict) -> str:
    """Plain-text table of the primary metric per model and its paired comparisons."""
    m = summary["primary_metric"]
    lines = [f"{'model':28s}{'mean':>8s}{'SD':>8s}{'median':>8s}{'95% CI (cases)':>20s}{'steps':>9s}{'time s':>9s}"]

    def f(v, fmt=".4f"):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    for label, info in summary["models"].items():
        s = info.get("metrics", {}).get(m, {}).get("over_cases")
        if not s:
            continue
        ci = f"[{f(s['ci95'][0])}, {f(s['ci95'][1])}]"
        lines.append(f"{label[:28]:28s}{f(s['mean']):>8s}{f(s['sd']):>8s}{f(s['median']):>8s}{ci:>20s}"
                     f"{f(info['steps']['mean'], '.0f'):>9s}{f(info['train_seconds']['mean'], '.0f'):>9s}")
    for c in summary["comparisons"]:
        if c["metric"] == m:
            lines.append(f"{c['b']} - {c['a']}: {m} difference {f(c['mean_difference'])} "
                         f"[{f(c['ci95'][0])}, {f(c['ci95'][1])}], Wilcoxon p = {f(c['wilcoxon_p'], '.3g')} "
                         f"(n = {c['n']} cases)")
    return "\n".join(lines)
