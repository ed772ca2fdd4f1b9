"""What ``mambaseg benchmark`` will run (:mod:`mambaseg.apps.benchmark`): the command-line inputs parsed and checked
(models, seeds, budget, test set), one :class:`RunSpec` per (model, seed) with its config overrides and run folder,
and each training's subprocess command line and environment. Nothing is run here."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, load_config

__all__ = [
    "FOREVER_EPOCHS",
    "BenchmarkError",
    "BenchmarkPlan",
    "BenchmarkTestSet",
    "RunSpec",
    "parse_budget",
    "parse_models",
    "parse_seeds",
    "plan_benchmark",
    "resolve_test_set",
    "train_command",
    "train_env",
]

FOREVER_EPOCHS = 1_000_000  # with a time budget only, the clock (not the epoch count) ends training


class BenchmarkError(ValueError):
    """Bad benchmark input or a failed run (one-line message)."""


# ------------------------------------------------------------------------------------------------- input parsing
def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct non-negative integers)."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise BenchmarkError(f"--seeds: expected comma-separated integers such as 0,1, got {text!r}.")
    seeds = []
    for s in items:
        if not re.fullmatch(r"\d+", s):
            raise BenchmarkError(f"--seeds: {s!r} is not a non-negative integer (expected e.g. 0,1).")
        seeds.append(int(s))
    if len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"--seeds: repeated seed in {text!r}.")
    return seeds


def parse_models(text: str) -> list[str]:
    """``"unet_tiny,akmamba_net_tiny"`` -> names, each checked against the model registry."""
    from ..models import list_models

    names = [s.strip() for s in str(text).split(",") if s.strip()]
    known = list_models()
    for n in names:
        if n not in known:
            import difflib

            close = difflib.get_close_matches(n, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BenchmarkError(f"--models: unknown model {n!r}{hint}; known: {', '.join(known)}.")
    if len(set(names)) != len(names):
        raise BenchmarkError(f"--models: repeated model in {text!r}.")
    return names


def parse_budget(minutes: str | float | None, steps: str | int | None) -> tuple[float, int]:
    """(``minutes`` > 0 or 0 = none, ``steps`` > 0 or 0 = none); at least one must be given."""
    m, s = 0.0, 0
    if minutes not in (None, ""):
        try:
            m = float(minutes)
        except (TypeError, ValueError):
            raise BenchmarkError(f"--budget-minutes: expected a number of minutes > 0, got {minutes!r}.") from None
        if not (m > 0 and math.isfinite(m)):
            raise BenchmarkError(f"--budget-minutes: must be > 0, got {minutes!r}.")
    if steps not in (None, ""):
        if not re.fullmatch(r"\s*\d+\s*", str(steps)) or int(steps) <= 0:
            raise BenchmarkError(f"--steps: expected an integer number of training steps > 0, got {steps!r}.")
        s = int(steps)
    if not m and not s:
        raise BenchmarkError("no budget: give --budget-minutes (wall-clock per run) and/or --steps.")
    return m, s


# --------------------------------------------------------------------------------------------------------- test set
@dataclass(frozen=True)
class BenchmarkTestSet:
    """Images (files or folder), labels folder and optional 2D field-of-view mask folder."""

    images: Path
    labels: Path
    mask: Path | None = None

    def to_dict(self) -> dict:
        return {"images": str(self.images), "labels": str(self.labels),
                "mask": str(self.mask) if self.mask else None}


def resolve_test_set(test: str | None = None, images: str | None = None, labels: str | None = None,
                     mask: str | None = None) -> BenchmarkTestSet:
    """The test set from ``--test DIR`` (DRIVE split ``images/ + 1st_manual/ [+ mask/]``, MSD ``imagesTs/ +
    labelsTs/`` or ``imagesTr/ + labelsTr/``, or ``images/ + labels/``) or from ``--test-images/--test-labels``."""
    if test and (images or labels):
        raise BenchmarkError("give either --test DIR or --test-images/--test-labels, not both.")
    if test:
        root = Path(test)
        if not root.is_dir():
            raise BenchmarkError(f"--test: test folder not found: {root}.")
        for img, lab in (("images", "1st_manual"), ("imagesTs", "labelsTs"), ("imagesTr", "labelsTr"),
                         ("images", "labels")):
            if (root / img).is_dir() and (root / lab).is_dir():
                m = root / "mask" if img == "images" and (root / "mask").is_dir() else None
                if mask:
                    m = Path(mask)
                return _checked_test(BenchmarkTestSet(root / img, root / lab, m))
        raise BenchmarkError(f"--test: {root} has no images/ + 1st_manual/ (DRIVE), imagesTs/ + labelsTs/ or "
                             f"imagesTr/ + labelsTr/ (MSD), or images/ + labels/ folders.")
    if not images or not labels:
        raise BenchmarkError("no test set: give --test DIR or both --test-images and --test-labels.")
    return _checked_test(BenchmarkTestSet(Path(images), Path(labels), Path(mask) if mask else None))


def _checked_test(ts: BenchmarkTestSet) -> BenchmarkTestSet:
    if not ts.images.exists():
        raise BenchmarkError(f"--test-images: not found: {ts.images}.")
    if not ts.labels.is_dir():
        raise BenchmarkError(f"--test-labels: folder not found: {ts.labels}.")
    if ts.mask is not None and not ts.mask.is_dir():
        raise BenchmarkError(f"--test-mask: folder not found: {ts.mask}.")
    return ts


# ------------------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class RunSpec:
    """One (model, seed) training of the benchmark."""

    label: str  # model label (the model name, or model-configstem when two entries share a model)
    seed: int
    config_path: Path
    overrides: tuple[str, ...]  # --set overrides applied on top of the config file
    run_dir: Path
    cfg: Config = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.label}_seed{self.seed}"


@dataclass(frozen=True)
class BenchmarkPlan:
    runs: list[RunSpec]
    labels: list[str]
    seeds: list[int]
    budget_minutes: float
    steps: int
    threads: int
    parallel: int
    out: Path
    test: BenchmarkTestSet
    warnings: list[str]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def _budget_overrides(cfg: Config, minutes: float, steps: int) -> list[str]:
    """Overrides that make the budget (and only the budget) end training: steps -> whole epochs, minutes -> the
    training time limit; a budget not given is switched off so it cannot end one model's run early."""
    ipe = cfg.train.iters_per_epoch
    if steps:
        ipe = min(ipe, steps)
        epochs = math.ceil(steps / ipe)
    else:
        epochs = FOREVER_EPOCHS
    return [f"train.iters_per_epoch={ipe}", f"train.epochs={epochs}", f"train.time_limit_min={minutes or 0}"]


def plan_benchmark(configs: Sequence[str], models: str = "", budget_minutes: str | float | None = None,
                   steps: str | int | None = None, seeds: str = "0", out: str | Path = "",
                   threads: str | int | None = 0, parallel: str | int | None = 1, sets: Sequence[str] = (),
                   test: BenchmarkTestSet | dict | None = None, budget_clock: str = "wall") -> BenchmarkPlan:
    """Check every input and build the list of runs (nothing is trained or written).

    ``test`` is a :class:`BenchmarkTestSet` or the keyword arguments of :func:`resolve_test_set` (checked after the
    configs, budget and seeds). ``budget_clock`` is what a minutes budget counts: ``wall`` (elapsed time) or ``cpu``
    (each run's CPU time, which other work on the machine does not shrink)."""
    if budget_clock not in ("wall", "cpu"):
        raise BenchmarkError(f"--budget-clock: expected wall or cpu, got {budget_clock!r}.")
    if not configs:
        raise BenchmarkError("no training config given (expected one or more YAML files, e.g. "
                             "configs/drive/unet_cpu.yaml).")
    if not out:
        raise BenchmarkError("--out: an output folder is required.")
    minutes, n_steps = parse_budget(budget_minutes, steps)
    seed_list = parse_seeds(seeds)
    try:
        par = int(parallel or 1)
        thr = int(threads or 0)
    except (TypeError, ValueError):
        raise BenchmarkError(f"--parallel/--threads: expected integers, got {parallel!r}/{threads!r}.") from None
    if par < 1:
        raise BenchmarkError(f"--parallel: must be >= 1, got {parallel!r}.")
    if thr < 0:
        raise BenchmarkError(f"--threads: must be >= 1 (or 0 = CPU cores / --parallel), got {threads!r}.")
    thr = thr or max(1, (os.cpu_count() or 1) // par)
    model_names = parse_models(models) if models else []
    if model_names and len(configs) != 1:
        raise BenchmarkError(f"--models overrides the model of one config; got {len(configs)} configs.")
    if test is None:
        raise BenchmarkError("no test set: give --test DIR or both --test-images and --test-labels.")
    if isinstance(test, dict):
        test = resolve_test_set(**test)
    from ..models import list_models

    known = list_models()
    entries = []  # (model name, config path, extra overrides)
    for c in configs:
        path = Path(c)
        if not path.is_file():
            raise BenchmarkError(f"config file not found: {path}.")
        base = load_config(path, list(sets))
        if model_names:
            for m in model_names:
                extra = [] if m == base.model.name else [f"model.name={m}", "model.kwargs={}"]
                entries.append((m, path, extra))
        else:
            if base.model.name not in known:
                raise BenchmarkError(f"{path}: unknown model {base.model.name!r} (model.name); known: "
                                     f"{', '.join(known)}.")
            entries.append((base.model.name, path, []))
    names = [e[0] for e in entries]
    labels = [n if names.count(n) == 1 else f"{n}-{_safe(p.stem)}" for n, p, _ in entries]
    if len(set(labels)) != len(labels):
        raise BenchmarkError("two entries of the benchmark have the same model and config name; each (model, config) "
                             "may be given once.")
    out = Path(out)
    runs = []
    first_data = None
    warn = []
    for (_, path, extra), label in zip(entries, labels):
        for seed in seed_list:
            pre = load_config(path, extra + list(sets))
            over = [*extra, *sets, f"seed={seed}", *_budget_overrides(pre, minutes, n_steps),
                    f"train.num_threads={thr}", f"train.budget_clock={budget_clock}"]
            cfg = load_config(path, over)
            if cfg.data.layout == "synthetic_drive":
                raise BenchmarkError(f"{path}: data.layout 'synthetic_drive' generates its data inside each run; "
                                     f"write it once with the DRIVE layout so every run shares one test set.")
            data_key = (cfg.data.layout, str(Path(cfg.data.root).resolve()) if cfg.data.root else "",
                        cfg.data.split, cfg.data.val_fraction, cfg.data.val_root)
            if first_data is None:
                first_data = data_key
            elif data_key != first_data and not any("data split" in w for w in warn):
                warn.append(f"{path}: data (layout, root, split, val_fraction, val_root) differs from the first "
                            f"config, so the runs do not share one data split.")
            runs.append(RunSpec(label, seed, path, tuple(over), out / "runs" / f"{_safe(label)}_seed{seed}", cfg))
    # seed-major order: with --parallel 2 the runs of one seed (model A, model B) train side by side and share
    # whatever load the machine has, which is what makes a wall-clock budget equal between them
    runs.sort(key=lambda r: (seed_list.index(r.seed), labels.index(r.label)))
    return BenchmarkPlan(runs, labels, seed_list, minutes, n_steps, thr, par, out, test, warn)


def train_command(spec: RunSpec, resume: bool = False, python: str | None = None) -> list[str]:
    """The subprocess command line of one training (threads are in ``train.num_threads`` and the environment)."""
    cmd = [python or sys.executable, "-m", "mambaseg", "train", str(spec.config_path), "--out", str(spec.run_dir),
           "--no-progress"]
    if resume:
        cmd.append("--resume")
    return cmd + ["--set", *spec.overrides]


def train_env(threads: int, base: dict | None = None) -> dict:
    """The environment of a training subprocess: one OpenMP/MKL thread pool of ``threads``."""
    env = dict(os.environ if base is None else base)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env
