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

Rerunning the same command resumes: a run with ``benchmark_done.json`` is skipped, a finished training without an
evaluation is only evaluated (so is one whose done-marker or cached evaluation is damaged), and an interrupted training
continues from its ``checkpoint_last.pt``. A damaged training record (``summary.json``, ``benchmark_train.json``,
``provenance.json`` of a run) is a one-line error naming the file, found before anything is trained.

Several budgets (``--budget steps:600 --budget cpu:30``, :func:`run_benchmarks`) train every (arm, seed) once per
budget, each budget in its own folder ``OUT/<tag>/`` laid out as above, and ``OUT/summary.md`` puts their tables one
after the other. One benchmark at a time per output folder (a lock, :mod:`mambaseg.utils.runlock`); SIGTERM, SIGHUP
and SIGINT stop the training subprocesses, wait for them and release the locks. New or resumed trainings are refused
when runs of the same table were trained at another commit, unless mixed commits are allowed.

The plan (inputs, runs, training command lines) is made by :mod:`mambaseg.apps.benchmark_plan`; the statistics are
pure functions in :mod:`mambaseg.apps.benchmark_stats`.
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
import yaml

from ..config import config_to_dict
from ..utils.atomic import atomic_path, atomic_write_text
from ..utils.runlock import LOCK_NAME, RunLock, RunLockedError
from .benchmark_plan import (
    FOREVER_EPOCHS,
    BenchmarkError,
    BenchmarkPlan,
    BenchmarkTestSet,
    Budget,
    RunSpec,
    parse_budget,
    parse_budget_spec,
    parse_models,
    parse_n_boot,
    parse_seeds,
    plan_benchmark,
    plan_budgets,
    resolve_test_set,
    train_command,
    train_env,
)
from .benchmark_stats import PRIMARY_METRIC, summarize

__all__ = [
    "BenchmarkError",
    "BenchmarkInterrupted",
    "BenchmarkPlan",
    "BenchmarkTestSet",
    "Budget",
    "RunSpec",
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
    "train_command",
]

logger = logging.getLogger(__name__)

DONE_MARKER = "benchmark_done.json"
LOAD_SAMPLE_S = 30.0  # how often the load average is sampled while trainings run
UNEQUAL_SHARE = 0.8  # warn when a run got less than this fraction of the best-served run's CPU share (wall budgets)


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
        state = _run_state(spec, plan.test)[0]
        lines.append(f"  {spec.name} [{state}]: OMP_NUM_THREADS={plan.threads} "
                     + " ".join(shlex.quote(x) for x in train_command(spec, resume=state == "resume")))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ run states
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _comparable(cfg: dict | None) -> dict | None:
    """A saved config as compared on rerun: ``data.modality`` ``auto`` (the default since nnU-Net layouts) means MR
    outside ``layout: nnunet``, and a run saved before ``train.budget_clock`` existed counted wall time, so runs saved
    before those keys had their defaults still match."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        return cfg
    data = dict(cfg["data"])
    if str(data.get("modality", "")).lower() in ("auto", "mr") and data.get("layout") != "nnunet":
        data["modality"] = "MR"
    out = {**cfg, "data": data}
    if isinstance(cfg.get("train"), dict):
        out["train"] = {"budget_clock": "wall", **cfg["train"]}
    return out


def _read_dict(path: Path, what: str, fix: str) -> dict | None:
    """A run's JSON record: None when absent; a one-line :class:`BenchmarkError` naming the file when it is damaged
    (not JSON, or not a JSON object)."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        why = f"not valid JSON: {' '.join(str(e).split())[:80]}" if isinstance(e, ValueError) else str(e)
        raise BenchmarkError(f"{path}: damaged {what} ({why}); {fix}") from None
    if not isinstance(obj, dict):
        raise BenchmarkError(f"{path}: damaged {what} (expected a JSON object, got {type(obj).__name__}); {fix}")
    return obj


def check_run_records(spec: RunSpec) -> None:
    """The training records a benchmark reads from a run folder (``summary.json``, ``provenance.json``,
    ``benchmark_train.json``) are whole: a damaged one is a one-line error naming it (they cannot be recomputed
    without training again), raised before anything is trained."""
    d = spec.run_dir
    move = f"move the run folder {d} away to train this run again."
    _read_dict(d / "summary.json", "training summary", move)
    _read_dict(d / "provenance.json", "provenance record", move)
    rec = _read_dict(d / "benchmark_train.json", "record of the training processes",
                     "delete it to drop this run's time and memory record, or move the run folder away.")
    if rec is not None:
        seg = rec.get("segments", [])
        if not isinstance(seg, list) or not all(isinstance(x, dict) for x in seg) or any(
                x.get(k) is not None and (not isinstance(x[k], (int, float)) or isinstance(x[k], bool))
                for x in seg for k in ("wall_seconds", "cpu_seconds", "peak_rss_mb", "load_mean", "rc")):
            raise BenchmarkError(f"{d / 'benchmark_train.json'}: damaged record of the training processes "
                                 f"('segments' must be a list of records with numbers); delete it to drop this run's "
                                 f"time and memory record, or move the run folder away.")
    if (d / "summary.json").is_file():
        try:
            _training_record(spec)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BenchmarkError(f"{d}: damaged training record summary.json, metrics.jsonl or benchmark_train.json "
                                 f"({type(e).__name__}: {' '.join(str(e).split())[:80]}); {move}") from None


def _cached_evaluation(path: Path) -> dict | None:
    """A run's cached ``test_eval/summary.json`` when it is whole (its per-case metrics can be read), else None."""
    result = _read_json(path)
    if not isinstance(result, dict):
        return None
    try:
        rows = case_metrics(result)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return result if rows else None


def _run_state(spec: RunSpec, test: BenchmarkTestSet) -> tuple[str, str]:
    """('done' | 'evaluate' | 'resume' | 'new', reason)."""
    d = spec.run_dir
    cfg_file = d / "config.yaml"
    if cfg_file.is_file():
        try:
            old = yaml.safe_load(cfg_file.read_text())
        except (OSError, yaml.YAMLError, ValueError) as e:
            raise BenchmarkError(f"{cfg_file}: damaged run config ({' '.join(str(e).split())[:80]}); move the run "
                                 f"folder {d} away to train this run again.") from None
        if _comparable(old) != _comparable(config_to_dict(spec.cfg)):
            raise BenchmarkError(f"{d}: this run was started with a different configuration (budget, threads, seed or "
                                 f"config changed); rerun the same command or choose another --out.")
    marker_file, eval_file = d / DONE_MARKER, d / "test_eval" / "summary.json"
    marker = _read_json(marker_file)
    marker_ok = isinstance(marker, dict) and isinstance(marker.get("record"), dict)
    trained = (d / "summary.json").is_file() and (d / "checkpoint_best.pt").is_file()
    evaluation = _cached_evaluation(eval_file) if marker_ok else None
    if marker_ok and trained and marker.get("test") == test.to_dict() and evaluation is not None:
        return "done", "finished earlier"
    if trained:
        if marker_file.is_file() and not marker_ok:
            return "evaluate", f"training finished, {DONE_MARKER} damaged: evaluated again"
        if marker_ok and eval_file.is_file() and evaluation is None:
            return "evaluate", "training finished, cached evaluation test_eval/summary.json damaged: evaluated again"
        return "evaluate", "training finished, evaluation missing"
    if (d / "checkpoint_last.pt").is_file():
        return "resume", "interrupted training"
    return "new", ""


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
                _append_segment(spec.run_dir, dict(results[spec.name], resumed=resume,
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


def _append_segment(run_dir: Path, segment: dict) -> None:
    """Record one training subprocess (exit code, wall time, peak RSS) in ``benchmark_train.json``."""
    path = run_dir / "benchmark_train.json"
    segments = (_read_json(path) or {}).get("segments", [])
    atomic_write_text(path, json.dumps({"segments": [*segments, segment]}, indent=2))


def _training_record(spec: RunSpec) -> dict:
    """Steps, epochs, time and memory of one finished training (from its summary.json, metrics.jsonl and the
    training subprocesses recorded in benchmark_train.json; a resumed run has several)."""
    d = spec.run_dir
    summ = _read_json(d / "summary.json") or {}
    history = _read_history(d)
    ipe = spec.cfg.train.iters_per_epoch
    epochs = int(summ.get("epochs_done", len(history)))
    skipped = int(sum(int(h.get("skipped_steps", 0)) for h in history))
    segments = (_read_json(d / "benchmark_train.json") or {}).get("segments", [])
    rss = [s["peak_rss_mb"] for s in segments if s.get("peak_rss_mb") is not None]
    wall = sum(s.get("wall_seconds", 0.0) for s in segments)
    cpu = sum(s["cpu_seconds"] for s in segments) if segments and all("cpu_seconds" in s for s in segments) else None
    timed = [(s["load_mean"], s.get("wall_seconds", 0.0)) for s in segments if s.get("load_mean") is not None]
    threads = spec.cfg.train.num_threads
    commit = (_read_json(d / "provenance.json") or {}).get("git_commit")
    return {"run": spec.name, "model": spec.label, "model_name": spec.cfg.model.name, "seed": spec.seed,
            **({"fold": spec.fold} if spec.fold is not None else {}),
            "config": str(spec.config_path), "run_dir": str(d), "epochs": epochs, "steps": epochs * ipe,
            "skipped_steps": skipped, "iters_per_epoch": ipe, "train_seconds": summ.get("train_seconds"),
            "best_val_dice": summ.get("best_val_dice"), "parameters": summ.get("parameters"),
            "peak_rss_mb": max(rss) if rss else None, "threads": spec.cfg.train.num_threads,
            "budget_minutes": spec.cfg.train.time_limit_min or None,
            "budget_steps": (spec.cfg.train.epochs * ipe) if spec.cfg.train.epochs < FOREVER_EPOCHS else None,
            "wall_seconds": round(wall, 1) if segments else None,
            "cpu_seconds": round(cpu, 1) if cpu is not None else None,
            "cpu_share": round(cpu / (wall * threads), 3) if cpu is not None and wall > 0 and threads else None,
            "load_mean": round(sum(lo * w for lo, w in timed) / sum(w for _, w in timed), 2)
            if timed and sum(w for _, w in timed) > 0 else None,
            "commit": commit, "train_processes": len(segments),
            "checkpoint": str(d / "checkpoint_best.pt")}


def _short_commit(commit: str) -> str:
    """``abcdef123456...+dirty`` -> ``abcdef123456+dirty`` (12 hex digits, the uncommitted-changes mark kept)."""
    sha, dirty = (commit[:-6], "+dirty") if commit.endswith("+dirty") else (commit, "")
    return sha[:12] + dirty


def fairness_warnings(records: list[dict], budget_clock: str | None) -> list[str]:
    """What makes a benchmark's runs not like-for-like, from their training records: trained at different commits
    (code changes alter speed and results), or, under a wall-clock budget, unequal CPU shares (a run that got a
    smaller share of its threads' time — other work on the machine — reached fewer steps in the same minutes)."""
    out = []
    by_commit: dict[str, list[str]] = {}
    for r in records:
        if r.get("commit"):
            by_commit.setdefault(str(r["commit"]), []).append(r["run"])
    if len(by_commit) > 1:
        out.append("runs were trained at different commits ("
                   + "; ".join(f"{_short_commit(c)}: {', '.join(runs)}" for c, runs in by_commit.items())
                   + "): code changes between them can change speed and results; rerun for a like-for-like table.")
    if budget_clock == "wall":
        shares = [(r["cpu_share"], r["run"]) for r in records if r.get("cpu_share") is not None]
        if len(shares) > 1:
            lo, hi = min(shares), max(shares)
            if lo[0] < UNEQUAL_SHARE * hi[0]:
                out.append(f"unequal compute under the wall-clock budget: {lo[1]} got {lo[0]:.2f} of its threads' "
                           f"time, {hi[1]} {hi[0]:.2f} (other work on the machine); --budget-clock cpu counts each "
                           "run's own CPU time.")
        missing = [r["run"] for r in records if r.get("cpu_share") is None]
        if missing and shares:
            out.append(f"no CPU-time record for {', '.join(missing)} (trained before it was recorded): their share "
                       "of the machine is unknown.")
    return out


def _read_history(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------------- evaluation
def _evaluate_run(spec: RunSpec, test: BenchmarkTestSet) -> dict:
    from ..engine.evaluate import evaluate
    from ..engine.predict import predict

    pred_dir, eval_dir = spec.run_dir / "test_pred", spec.run_dir / "test_eval"
    if test.folds:
        images, labels = _held_out_links(spec)
        predict(spec.run_dir, images, pred_dir, overwrite=True, progress=False)
        return evaluate(pred_dir, labels, eval_dir, overwrite=True)
    predict(spec.run_dir, test.images, pred_dir, probs=True, mask=test.mask, overwrite=True, progress=False)
    return evaluate(pred_dir, test.labels, eval_dir, mask=test.mask, overwrite=True)


def _held_out_links(spec: RunSpec) -> tuple[Path, Path]:
    """``(inputs, references)``: folders in the run folder of links to the cases its cross-validation fold held
    out — each case's folder (case-folder layouts) or image file(s), and its label as ``<case id><suffix>`` — so that
    predict and evaluate see exactly these cases (the data stay where they are, untouched)."""
    import shutil

    from ..data.nifti import volume_suffix
    from ..engine.data import held_out_cases

    cases = held_out_cases(spec.cfg.data)
    images, labels = spec.run_dir / "held_out" / "images", spec.run_dir / "held_out" / "labels"
    shutil.rmtree(spec.run_dir / "held_out", ignore_errors=True)  # links only; made again from the config
    images.mkdir(parents=True)
    labels.mkdir()
    folders = spec.cfg.data.layout in ("case_folders", "brats")
    for c in cases:
        sources = [c.images[0].parent] if folders else list(c.images)
        for src in dict.fromkeys(sources):
            (images / src.name).symlink_to(src.resolve(), target_is_directory=src.is_dir())
        (labels / f"{c.case_id}{volume_suffix(c.label) or '.nii.gz'}").symlink_to(c.label.resolve())
    return images, labels


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def case_metrics(result: dict) -> list[tuple[str, str, float]]:
    """(case, metric, value) rows of an evaluation summary: 2D metrics as they are; 3D ``dice``/``iou``/``hd95``
    (mean over foreground classes of the case) plus ``dice:<class>`` and ``hd95:<class>``."""
    from ..engine.evaluate import METRICS_2D

    rows = []
    if result.get("kind") == "2d":
        for r in result["metric_per_case"]:
            for k in METRICS_2D:
                if k in r:
                    rows.append((str(r["case"]), k, float(r[k])))
        return rows
    names = result.get("class_names") or {}  # summaries keyed by label value (nnU-Net v2) name them here
    for case in result["metric_per_case"]:
        per_class = {str(names.get(k, k)): m for k, m in case["metrics"].items()}
        for key, name in (("Dice", "dice"), ("IoU", "iou"), ("HD95", "hd95")):
            vals = [_float(m.get(key)) for m in per_class.values()]
            vals = [v for v in vals if not math.isnan(v)]
            rows.append((str(case["case_id"]), name, float(np.mean(vals)) if vals else float("nan")))
        for cls, m in per_class.items():
            rows.append((str(case["case_id"]), f"dice:{cls}", _float(m.get("Dice"))))
            rows.append((str(case["case_id"]), f"hd95:{cls}", _float(m.get("HD95"))))
    return rows


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
            result = _read_json(spec.run_dir / "test_eval" / "summary.json")
            # recomputed from the run's files, so runs finished before a field was recorded get it where it can be
            record = {**_read_json(spec.run_dir / DONE_MARKER)["record"], **_training_record(spec)}
        else:
            record = _training_record(spec)
            log(f"{spec.name}: predicting and evaluating {plan.test.images}")
            result = _evaluate_run(spec, plan.test)
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
    from ..resources import git_commit

    if not jobs:
        return
    by_commit: dict[str, list[str]] = {}
    for spec in plan.runs:
        rec = _read_json(spec.run_dir / "provenance.json")
        commit = rec.get("git_commit") if isinstance(rec, dict) else None
        if commit and commit != "unknown":
            by_commit.setdefault(str(commit), []).append(spec.name)
    current = git_commit()
    others = {c: runs for c, runs in by_commit.items() if c != current}
    if (current and current != "unknown" and others) or len(by_commit) > 1:
        listed = "; ".join(f"{_short_commit(c)}: {', '.join(runs)}" for c, runs in others.items())
        raise BenchmarkError(
            f"{plan.out}: runs of this table were trained at another commit than this code "
            f"({_short_commit(current) if current else 'unknown'}) — {listed}; training "
            f"{', '.join(spec.name for spec, _ in jobs)} now would mix commits in one table: give "
            f"--allow-mixed-commits to train anyway, or use another --out.")


def _prepare(plan: BenchmarkPlan, allow_mixed_commits: bool,
             log: Callable[[str], None]) -> tuple[dict, list[tuple[RunSpec, bool]]]:
    """Every check that needs the run folders, before anything is trained: run states (damaged markers and cached
    evaluations are evaluated again), whole training records, no run being trained elsewhere, one commit per table.
    ``log`` gets the runs whose training is skipped (called once every check has passed)."""
    states = {spec.name: _run_state(spec, plan.test) for spec in plan.runs}
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
    """Run one benchmark per plan (the budgets of :func:`~mambaseg.apps.benchmark_plan.plan_budgets`) under one lock
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
                from .benchmark_md import render_budgets_markdown

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
    from .benchmark_html import write_html
    from .benchmark_md import render_markdown

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
