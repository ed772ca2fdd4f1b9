"""The records of a benchmark's runs, read back on every rerun: what state each run is in (done, to evaluate, to
resume, new), whether its training records are whole, the steps, time, CPU share and memory each training reached
(``summary.json``, ``metrics.jsonl``, ``benchmark_train.json``, ``provenance.json``), and what makes runs not
like-for-like (:func:`fairness_warnings`)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ...config import config_to_dict
from ...utils.atomic import atomic_write_text
from .evaluation import case_metrics
from .options import BenchmarkError
from .plan import FOREVER_EPOCHS, BenchmarkTestSet, RunSpec

__all__ = ["DONE_MARKER", "append_segment", "check_run_records", "fairness_warnings", "read_json", "run_state",
           "short_commit", "training_record"]

DONE_MARKER = "benchmark_done.json"
UNEQUAL_SHARE = 0.8  # warn when a run got less than this fraction of the best-served run's CPU share (wall budgets)


def read_json(path: Path) -> dict | None:
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
            training_record(spec)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BenchmarkError(f"{d}: damaged training record summary.json, metrics.jsonl or benchmark_train.json "
                                 f"({type(e).__name__}: {' '.join(str(e).split())[:80]}); {move}") from None


def _cached_evaluation(path: Path) -> dict | None:
    """A run's cached ``test_eval/summary.json`` when it is whole (its per-case metrics can be read), else None."""
    result = read_json(path)
    if not isinstance(result, dict):
        return None
    try:
        rows = case_metrics(result)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return result if rows else None


def run_state(spec: RunSpec, test: BenchmarkTestSet) -> tuple[str, str]:
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
    marker = read_json(marker_file)
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


def append_segment(run_dir: Path, segment: dict) -> None:
    """Record one training subprocess (exit code, wall time, peak RSS) in ``benchmark_train.json``."""
    path = run_dir / "benchmark_train.json"
    segments = (read_json(path) or {}).get("segments", [])
    atomic_write_text(path, json.dumps({"segments": [*segments, segment]}, indent=2))


def training_record(spec: RunSpec) -> dict:
    """Steps, epochs, time and memory of one finished training (from its summary.json, metrics.jsonl and the
    training subprocesses recorded in benchmark_train.json; a resumed run has several)."""
    d = spec.run_dir
    summ = read_json(d / "summary.json") or {}
    history = _read_history(d)
    ipe = spec.cfg.train.iters_per_epoch
    epochs = int(summ.get("epochs_done", len(history)))
    skipped = int(sum(int(h.get("skipped_steps", 0)) for h in history))
    segments = (read_json(d / "benchmark_train.json") or {}).get("segments", [])
    rss = [s["peak_rss_mb"] for s in segments if s.get("peak_rss_mb") is not None]
    wall = sum(s.get("wall_seconds", 0.0) for s in segments)
    cpu = sum(s["cpu_seconds"] for s in segments) if segments and all("cpu_seconds" in s for s in segments) else None
    timed = [(s["load_mean"], s.get("wall_seconds", 0.0)) for s in segments if s.get("load_mean") is not None]
    threads = spec.cfg.train.num_threads
    commit = (read_json(d / "provenance.json") or {}).get("git_commit")
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


def short_commit(commit: str) -> str:
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
                   + "; ".join(f"{short_commit(c)}: {', '.join(runs)}" for c, runs in by_commit.items())
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
