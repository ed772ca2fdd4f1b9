"""The command-line inputs of ``mambaseg benchmark`` parsed and checked, each with a one-line error naming the option:
models, seeds (per arm too), budgets (steps, CPU or wall-clock minutes), bootstrap resamples, and a model size
that this machine can train (checked on the meta device before anything is allocated)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...config import Config

__all__ = ["BenchmarkError", "Budget", "check_model_size", "parse_arm_seeds", "parse_budget", "parse_budget_spec",
           "parse_models", "parse_n_boot", "parse_seeds"]

MAX_STEPS = 1_000_000_000  # a step budget above this is a typo, not a plan
MAX_MINUTES = 525_600.0  # one year per run
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_PARALLEL = 64
MAX_N_BOOT = 1_000_000  # bootstrap resamples: more only costs memory (n_boot x cases floats) and time
BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two Adam moments


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
        if int(s) > MAX_SEED:
            raise BenchmarkError(f"--seeds: {s} is out of range (seeds are 0 ... {MAX_SEED}).")
        seeds.append(int(s))
    if len(set(seeds)) != len(seeds):
        raise BenchmarkError(f"--seeds: repeated seed in {text!r}.")
    return seeds


def parse_models(text: str) -> list[str]:
    """``"unet_tiny,akmamba_net_tiny"`` -> names, each checked against the model registry."""
    from ...models import list_models

    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if not names:
        raise BenchmarkError(f"--models: expected comma-separated model names (see mambaseg models), got {text!r}.")
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
        if m > MAX_MINUTES:
            raise BenchmarkError(f"--budget-minutes: {minutes!r} is more than a year per run (at most "
                                 f"{MAX_MINUTES:g}).")
    if steps not in (None, ""):
        if not re.fullmatch(r"\s*\d+\s*", str(steps)) or int(steps) <= 0:
            raise BenchmarkError(f"--steps: expected an integer number of training steps > 0, got {steps!r}.")
        s = int(steps)
        if s > MAX_STEPS:
            raise BenchmarkError(f"--steps: {steps!r} is more than {MAX_STEPS} training steps per run.")
    if not m and not s:
        raise BenchmarkError("no budget: give --budget-minutes (wall-clock per run) and/or --steps.")
    return m, s


@dataclass(frozen=True)
class Budget:
    """One training budget of a multi-budget benchmark: ``steps`` (training steps), ``cpu`` (CPU minutes per run) or
    ``wall`` (wall-clock minutes per run)."""

    kind: str
    value: float

    @property
    def tag(self) -> str:
        """The sub-folder name: ``steps600``, ``cpu30min``, ``wall60min``."""
        return f"steps{int(self.value)}" if self.kind == "steps" else f"{self.kind}{self.value:g}min"

    @property
    def minutes(self) -> float:
        return 0.0 if self.kind == "steps" else float(self.value)

    @property
    def steps(self) -> int:
        return int(self.value) if self.kind == "steps" else 0

    @property
    def clock(self) -> str:
        return "cpu" if self.kind == "cpu" else "wall"

    def describe(self) -> str:
        return f"{self.steps} steps" if self.kind == "steps" else f"{self.value:g} {self.kind} minutes"


def parse_budget_spec(text: str) -> Budget:
    """``"steps:600"`` / ``"cpu:30"`` / ``"wall:60"`` (minutes; a trailing ``min`` is accepted) -> :class:`Budget`."""
    kind, sep, value = str(text).strip().partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or kind not in ("steps", "cpu", "wall") or not value:
        raise BenchmarkError(f"--budget: expected steps:N, cpu:MINUTES or wall:MINUTES, got {text!r}.")
    if kind == "steps":
        try:
            _, n = parse_budget(None, value)
        except BenchmarkError as e:
            raise BenchmarkError(f"--budget {text!r}: {str(e).removeprefix('--steps: ')}") from None
        return Budget("steps", n)
    try:
        m, _ = parse_budget(value.removesuffix("min").strip(), None)
    except BenchmarkError as e:
        raise BenchmarkError(f"--budget {text!r}: {str(e).removeprefix('--budget-minutes: ')}") from None
    return Budget(kind, m)


def parse_arm_seeds(items: Sequence[str], labels: Sequence[str], default: Sequence[int]) -> dict[str, list[int]]:
    """The seeds of each arm: ``--seeds`` for every arm, replaced for the arms named in ``--arm-seeds ARM[,ARM]=SEEDS``
    (repeatable), e.g. ``akmamba_net_cpu_base,akmamba_net_cpu=0,1,2``. An arm may be named once."""
    out = {label: list(default) for label in labels}
    named: set[str] = set()
    for item in items or ():
        arms_text, sep, seeds_text = str(item).partition("=")
        arms = [a.strip() for a in arms_text.split(",") if a.strip()]
        if not sep or not arms:
            raise BenchmarkError(f"--arm-seeds: expected ARM[,ARM...]=SEEDS such as unet_cpu,akmamba_net_cpu=0,1,2, "
                                 f"got {item!r}.")
        try:
            seeds = parse_seeds(seeds_text)
        except BenchmarkError as e:
            raise BenchmarkError(f"--arm-seeds {item!r}: {str(e).removeprefix('--seeds: ')}") from None
        for arm in arms:
            if arm not in out:
                raise BenchmarkError(f"--arm-seeds: {arm!r} is not an arm of this benchmark (arms: "
                                     f"{', '.join(labels)}).")
            if arm in named:
                raise BenchmarkError(f"--arm-seeds: arm {arm!r} is given seeds twice.")
            named.add(arm)
            out[arm] = seeds
    return out


def _total_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def _meta_parameters(name: str, kwargs: dict) -> int | None:
    """Parameter count of ``build_model(name, **kwargs)`` built on the meta device (nothing allocated); None when the
    model cannot be built there (it computes from tensor values while it is built)."""
    import torch

    from ...models import build_model

    try:
        with torch.device("meta"):
            model = build_model(name, **kwargs)
    except (NotImplementedError, RuntimeError) as e:
        if "meta" in str(e):
            return None
        raise
    return int(sum(p.numel() for p in model.parameters()))


def check_model_size(cfg: Config, where: str, limit_bytes: int | None = None) -> int | None:
    """Refuse, before anything is allocated, a model whose ``model.kwargs`` make it larger than this machine's memory
    (weights, gradients and Adam state: :data:`BYTES_PER_PARAMETER` per parameter): the model is built on the meta
    device, and the key that makes it too large is named. Returns the parameter count (None: not estimable)."""
    from ...utils.limits import format_bytes

    name, kwargs = cfg.model.name, dict(cfg.model.kwargs or {})
    limit = limit_bytes if limit_bytes is not None else _total_memory()
    try:
        n = _meta_parameters(name, kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
        msg = " ".join(str(e).split())[:200]
        raise BenchmarkError(f"{where}: model {name!r} cannot be built with model.kwargs {kwargs} ({msg}).") from None
    if n is None or limit is None or n * BYTES_PER_PARAMETER <= limit:
        return n
    culprits = []
    for key in kwargs:
        try:
            m = _meta_parameters(name, {k: v for k, v in kwargs.items() if k != key})
        except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError):
            continue
        if m is not None and m * BYTES_PER_PARAMETER <= limit:
            culprits.append(key)
    keys = ", ".join(f"model.kwargs.{k}={kwargs[k]!r}" for k in (culprits or kwargs)) or "its defaults"
    raise BenchmarkError(f"{where}: model {name!r} with {keys} would have {n:.3g} parameters "
                         f"({format_bytes(n * BYTES_PER_PARAMETER)} to train), more than this machine's "
                         f"{format_bytes(limit)} of memory; check {'that key' if len(culprits) == 1 else 'them'}.")


def parse_n_boot(value) -> int:
    """``--n-boot``: the number of bootstrap resamples, an integer 1 ... :data:`MAX_N_BOOT`."""
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or not 1 <= int(text) <= MAX_N_BOOT:
        raise BenchmarkError(f"--n-boot: expected an integer number of bootstrap resamples, 1 ... {MAX_N_BOOT} "
                             f"(default 10000), got {value!r}.")
    return int(text)
