"""What ``mambaseg benchmark`` will run (:mod:`mambaseg.apps.benchmark`), from the inputs :mod:`.options` checked:
the test set or cross-validation folds, one :class:`RunSpec` per (model, seed[, fold]) with its
config overrides and run folder, and each training's subprocess command line and environment. Nothing is run here.

Cross-validation (``--folds K``, nnU-Net's protocol, 3D datasets): every arm trains once per fold with ``data.folds
K`` and ``data.fold k`` (:mod:`mambaseg.data.splits`: fold ``k``'s cases held out of training and validation, the
folds the same for every arm and seed) and predicts the cases it never saw; the arm's table holds every case of the
folds run, each predicted once per seed. ``--fold-ids`` runs some folds only (a seeded split when compute forces it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...config import Config, load_config
from .options import (
    MAX_PARALLEL,
    BenchmarkError,
    Budget,
    check_model_size,
    parse_arm_seeds,
    parse_budget,
    parse_budget_spec,
    parse_models,
    parse_seeds,
)

__all__ = [
    "FOREVER_EPOCHS",
    "BenchmarkPlan",
    "BenchmarkTestSet",
    "RunSpec",
    "parse_folds",
    "plan_benchmark",
    "plan_budgets",
    "resolve_test_set",
    "train_command",
    "train_env",
]

FOREVER_EPOCHS = 1_000_000  # with a time budget only, the clock (not the epoch count) ends training


# --------------------------------------------------------------------------------------------------------- test set
@dataclass(frozen=True)
class BenchmarkTestSet:
    """Images (files or folder), labels folder and optional 2D field-of-view mask folder; or, with ``folds`` (k-fold
    cross-validation), the training data root (``images``) whose held-out cases each run predicts."""

    images: Path
    labels: Path
    mask: Path | None = None
    folds: int = 0
    fold_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        d = {"images": str(self.images), "labels": str(self.labels), "mask": str(self.mask) if self.mask else None}
        if self.folds:
            d.update(cross_validation=f"{self.folds}-fold", folds=self.folds, fold_ids=list(self.fold_ids))
        return d


def parse_folds(folds, fold_ids: str | Sequence[int] = "") -> tuple[int, tuple[int, ...]]:
    """``(K, folds to run)`` from ``--folds K`` and ``--fold-ids 0,1`` (default: all K); ``(0, ())`` without
    ``--folds``."""
    text = str(folds if folds is not None else "").strip()
    if not text or text == "0":
        if str(fold_ids or "").strip():
            raise BenchmarkError("--fold-ids needs --folds K (k-fold cross-validation).")
        return 0, ()
    if not re.fullmatch(r"\d+", text) or not 2 <= int(text) <= 1000:
        raise BenchmarkError(f"--folds: expected a number of cross-validation folds, 2 ... 1000, got {folds!r}.")
    k = int(text)
    if isinstance(fold_ids, str):
        items = [x.strip() for x in fold_ids.split(",")] if fold_ids.strip() else []
        if any(not re.fullmatch(r"\d+", x) for x in items):
            raise BenchmarkError(f"--fold-ids: expected comma-separated fold numbers, e.g. 0,1, got {fold_ids!r}.")
        ids = [int(x) for x in items]
    else:
        ids = [int(x) for x in fold_ids]
    ids = ids or list(range(k))
    bad = [i for i in ids if not 0 <= i < k]
    if bad:
        raise BenchmarkError(f"--fold-ids: fold {bad[0]} does not exist; {k} folds are numbered 0 ... {k - 1}.")
    if len(set(ids)) != len(ids):
        raise BenchmarkError(f"--fold-ids: a fold is given twice ({fold_ids!r}).")
    return k, tuple(ids)


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
    """One (model, seed) training of the benchmark, or one (model, seed, fold) under cross-validation."""

    label: str  # model label (the model name, or model-configstem when two entries share a model)
    seed: int
    config_path: Path
    overrides: tuple[str, ...]  # --set overrides applied on top of the config file
    run_dir: Path
    cfg: Config = field(compare=False, repr=False)
    fold: int | None = None  # the cross-validation fold held out of this run's training (None: no folds)

    @property
    def name(self) -> str:
        return f"{self.label}_seed{self.seed}" + (f"_fold{self.fold}" if self.fold is not None else "")


@dataclass(frozen=True)
class BenchmarkPlan:
    runs: list[RunSpec]
    labels: list[str]
    seeds: list[int]  # every seed of the benchmark, in order (an arm may have fewer: seeds_by_label)
    budget_minutes: float
    steps: int
    threads: int
    parallel: int
    out: Path
    test: BenchmarkTestSet
    warnings: list[str]
    seeds_by_label: dict[str, list[int]] = field(default_factory=dict)
    reference: str = ""  # the arm the paired comparisons of the budgets' table are made against
    budget: Budget | None = None  # set when the plan is one budget of several (plan_budgets)

    @property
    def budget_clock(self) -> str:
        return self.runs[0].cfg.train.budget_clock if self.runs else "wall"


def _int_option(option: str, value, default: int) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not re.fullmatch(r"\s*-?\d+\s*", str(value)):
        raise BenchmarkError(f"{option}: expected an integer, got {value!r}.")
    return int(value)


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
                   test: BenchmarkTestSet | dict | None = None, budget_clock: str = "wall",
                   arm_seeds: Sequence[str] = (), reference: str = "", budget: Budget | None = None,
                   check_sizes: bool = True, folds: int | str | None = 0,
                   fold_ids: str | Sequence[int] = "") -> BenchmarkPlan:
    """Check every input and build the list of runs (nothing is trained or written).

    ``test`` is a :class:`BenchmarkTestSet` or the keyword arguments of :func:`resolve_test_set` (checked after the
    configs, budget and seeds). ``budget_clock`` is what a minutes budget counts: ``wall`` (elapsed time) or ``cpu``
    (each run's CPU time, which other work on the machine does not shrink). ``arm_seeds`` gives some arms their own
    seeds (:func:`parse_arm_seeds`); ``reference`` is the arm paired comparisons are made against (default: the first).
    ``budget`` (one of several, see :func:`plan_budgets`) replaces ``budget_minutes``/``steps``/``budget_clock``.
    ``check_sizes`` refuses a model too large for this machine (:func:`check_model_size`) before anything is built.
    ``folds``/``fold_ids``: k-fold cross-validation instead of a test set (:func:`parse_folds`; 3D datasets, one data
    root for every arm): each run predicts the cases of its held-out fold."""
    if budget is not None:
        budget_minutes, steps, budget_clock = budget.minutes or None, budget.steps or None, budget.clock
    if budget_clock not in ("wall", "cpu"):
        raise BenchmarkError(f"--budget-clock: expected wall or cpu, got {budget_clock!r}.")
    if not configs:
        raise BenchmarkError("no training config given (expected one or more YAML files, e.g. "
                             "configs/drive/unet_cpu.yaml).")
    if not out:
        raise BenchmarkError("--out: an output folder is required.")
    minutes, n_steps = parse_budget(budget_minutes, steps)
    seed_list = parse_seeds(seeds)
    cores = os.cpu_count() or 1
    par = _int_option("--parallel", parallel, 1)
    thr = _int_option("--threads", threads, 0)
    if par < 1 or par > MAX_PARALLEL:
        raise BenchmarkError(f"--parallel: expected 1 ... {MAX_PARALLEL} trainings side by side, got {parallel!r}.")
    if thr < 0:
        raise BenchmarkError(f"--threads: must be >= 1 (or 0 = CPU cores / --parallel), got {threads!r}.")
    if thr > cores:
        raise BenchmarkError(f"--threads: {thr} threads per run is more than this machine's {cores} CPU cores.")
    thr = thr or max(1, cores // par)
    model_names = parse_models(models) if models else []
    if model_names and len(configs) != 1:
        raise BenchmarkError(f"--models overrides the model of one config; got {len(configs)} configs.")
    n_folds, run_folds = parse_folds(folds, fold_ids)
    if n_folds:
        given = test if isinstance(test, dict) else {"test": test}
        if any(v for v in given.values()):
            raise BenchmarkError("--folds: cross-validation predicts the held-out cases of data.root; give no --test, "
                                 "--test-images or --test-labels with it.")
        test = None  # the data root, found from the configs below
    elif test is None:
        raise BenchmarkError("no test set: give --test DIR or both --test-images and --test-labels.")
    elif isinstance(test, dict):
        test = resolve_test_set(**test)
    from ...models import list_models

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
    by_label = parse_arm_seeds(arm_seeds, labels, seed_list)
    if reference and reference not in labels:
        raise BenchmarkError(f"--reference: {reference!r} is not an arm of this benchmark (arms: {', '.join(labels)}).")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchmarkError(f"--out: {out} exists and is not a folder.")
    all_seeds = list(seed_list) + [x for label in labels for x in by_label[label] if x not in seed_list]
    all_seeds = list(dict.fromkeys(all_seeds))
    runs = []
    first_data = None
    warn = []
    sized: set[str] = set()
    for (_, path, extra), label in zip(entries, labels):
        for seed in by_label[label]:
            pre = load_config(path, extra + list(sets))
            over = [*extra, *sets, f"seed={seed}", *_budget_overrides(pre, minutes, n_steps),
                    f"train.num_threads={thr}", f"train.budget_clock={budget_clock}"]
            cfg = load_config(path, over)
            key = f"{cfg.model.name} {sorted((cfg.model.kwargs or {}).items(), key=str)}"
            if check_sizes and key not in sized:
                sized.add(key)
                check_model_size(cfg, str(path))
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
            if n_folds:
                test = _cv_test_set(cfg, path, n_folds, run_folds, test)
                for k in run_folds:
                    fold_over = (*over, f"data.folds={n_folds}", f"data.fold={k}")
                    runs.append(RunSpec(label, seed, path, fold_over,
                                        out / "runs" / f"{_safe(label)}_seed{seed}_fold{k}",
                                        load_config(path, list(fold_over)), fold=k))
            else:
                runs.append(RunSpec(label, seed, path, tuple(over), out / "runs" / f"{_safe(label)}_seed{seed}", cfg))
    # seed-major order: with --parallel 2 the runs of one seed (model A, model B) train side by side and share
    # whatever load the machine has, which is what makes a wall-clock budget equal between them
    runs.sort(key=lambda r: (all_seeds.index(r.seed), r.fold or 0, labels.index(r.label)))
    return BenchmarkPlan(runs, labels, all_seeds, minutes, n_steps, thr, par, out, test, warn, by_label,
                         reference or labels[0], budget)


def _cv_test_set(cfg: Config, path: Path, n_folds: int, run_folds: tuple[int, ...],
                 first: BenchmarkTestSet | None) -> BenchmarkTestSet:
    """The cross-validation "test set" of one run's config: its data root; every arm must share it (and its
    layout), and the dataset must be 3D with at least ``n_folds`` labelled cases."""
    from ...config import LAYOUTS_3D

    if cfg.data.layout not in LAYOUTS_3D:
        raise BenchmarkError(f"{path}: --folds needs a 3D dataset (data.layout one of {', '.join(LAYOUTS_3D)}), got "
                             f"{cfg.data.layout!r}; for 2D data give a --test set.")
    if cfg.data.val_root:
        raise BenchmarkError(f"{path}: --folds holds cases out of data.root; data.val_root must be empty.")
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise BenchmarkError(f"{path}: data.root {root} is not a folder.")
    from ...data.errors import DataError
    from ...engine.data import held_out_cases

    try:  # the case count (and the case folders' patterns) checked before anything trains
        held_out_cases(dataclasses.replace(cfg.data, folds=n_folds, fold=run_folds[0]))
    except (DataError, ValueError) as e:
        raise BenchmarkError(f"{path}: {e}") from None
    ts = BenchmarkTestSet(root, root, None, n_folds, run_folds)
    if first is not None and (first.images.resolve() != root.resolve()):
        raise BenchmarkError(f"{path}: data.root {root} differs from the first config's {first.images}; "
                             f"cross-validation folds need one dataset for every arm.")
    return first or ts


def plan_budgets(budgets: Sequence[str], out: str | Path = "", **kwargs) -> list[BenchmarkPlan]:
    """One plan per ``--budget`` (``steps:N``, ``cpu:MINUTES``, ``wall:MINUTES``; see :func:`parse_budget_spec`), the
    same arms and seeds in each. With two or more budgets each has its own folder ``OUT/<tag>/`` (``steps600``,
    ``cpu30min``, ``wall60min``) laid out as a single-budget benchmark; with one, ``OUT`` itself is that folder.
    ``kwargs`` are those of :func:`plan_benchmark` other than the budget."""
    parsed = [parse_budget_spec(b) for b in budgets]
    if not parsed:
        raise BenchmarkError("--budget: no budget given (expected e.g. --budget steps:600 --budget cpu:30).")
    tags = [b.tag for b in parsed]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise BenchmarkError(f"--budget: the same budget is given twice ({', '.join(dup)}).")
    if not out:
        raise BenchmarkError("--out: an output folder is required.")
    if Path(out).exists() and not Path(out).is_dir():
        raise BenchmarkError(f"--out: {out} exists and is not a folder.")
    plans = []
    for i, b in enumerate(parsed):
        folder = Path(out) / b.tag if len(parsed) > 1 else Path(out)
        plans.append(plan_benchmark(out=folder, budget=b, check_sizes=i == 0, **kwargs))
    return plans


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
