"""What 2D and 3D evaluation share: per-case scoring in a process pool (``--workers``) with results in case order,
and the rule for references without a prediction (an error, or a warning with ``--allow-missing``)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..data.errors import DataError

__all__ = ["check_workers", "missing_references", "ordered_map"]

logger = logging.getLogger("mambaseg.engine.evaluate")


def check_workers(workers: Any) -> int:
    """``--workers``: an integer >= 1 (1 = score in this process).

    Raises:
        DataError: naming the option and the value.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"--workers must be an integer >= 1 (1 = score in this process), got {workers!r}.")
    return workers


def _worker_init() -> None:
    """A pool worker computes with one thread: the pool is the parallelism."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def ordered_map(fn: Callable, tasks: Sequence, workers: int = 1,
                describe: Callable[[Any], str] = str) -> Iterator:
    """``fn(task)`` for every task, yielded in task order.

    ``workers == 1`` (or a single task): in this process, one task at a time. Otherwise a
    ``ProcessPoolExecutor`` of ``min(workers, len(tasks))`` *spawned* processes (safe with torch and threads), each
    with one thread; a task carries only file names, so a worker holds one case in memory at a time. The first
    error (in task order) is raised unchanged (a :class:`DataError` keeps its one-line message naming the file);
    queued tasks are cancelled. A worker that dies (killed, out of memory) is a :class:`DataError` naming
    ``describe(task)`` of the task it was running.
    """
    workers = check_workers(workers)
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(task)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_worker_init)
    try:
        futures = [pool.submit(fn, task) for task in tasks]
        for task, fut in zip(tasks, futures):
            try:
                result = fut.result()
            except BrokenProcessPool:
                raise DataError(f"{describe(task)}: an evaluation worker process died while scoring it (killed or "
                                f"out of memory?); try fewer --workers.") from None
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def missing_references(refs: list[Path], paired: list[Path], pred_dir: Path, allow_missing: bool) -> list[str]:
    """References without a prediction: an error naming how many and one of them, or (``allow_missing``) a warning
    and their list."""
    seen = set(paired)
    missing = [str(r) for r in refs if r not in seen]
    if missing and not allow_missing:
        raise DataError(f"{pred_dir}: {len(missing)} of {len(refs)} references have no prediction (e.g. "
                        f"{missing[0]}); predict them, or score only the predicted cases with --allow-missing.")
    if missing:
        logger.warning("%d of %d references have no prediction in %s and are not scored (--allow-missing), e.g. %s",
                       len(missing), len(refs), pred_dir, missing[0])
    return missing
