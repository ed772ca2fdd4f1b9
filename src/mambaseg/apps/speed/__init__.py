"""Speed and memory measurements: ``mambaseg bench scan | models2d | models3d | amp | infer`` (not to be confused
with :mod:`mambaseg.apps.benchmark`, which compares the accuracy of trained models).

- :mod:`.scan`: the selective scan's backends (``bench scan``);
- :mod:`.models`: each Mamba network's training step and inference against its CNN baseline (``bench models2d``,
  ``bench models3d``);
- :mod:`.precision`: fp32 against bf16 autocast, training steps (``bench amp``) and inference at real size
  (``bench infer``);
- :mod:`.common`: timing by alternation, the training step, profiles, provenance, fresh-process workers.

Variants compared with each other are alternated in one process and each keeps its best time, so that the machine's
noise spreads over all of them; peak memory is measured in a fresh process per variant (``python -m
mambaseg.apps.speed --worker | --peak | --infer-peak SPEC``), so that it is its own. Ratios are computed only between
numbers measured in the same invocation, and every result file records the exact command.
"""

from __future__ import annotations

from .models import run_models2d_bench, run_models3d_bench
from .precision import AMP_PAIRS, INFER_CASES, PRECISIONS, QUICK_TILE, run_amp_bench, run_infer_bench
from .scan import SCAN_CASES, format_scan_table, run_scan_bench

__all__ = ["SCAN_CASES", "AMP_PAIRS", "INFER_CASES", "PRECISIONS", "QUICK_TILE", "run_scan_bench",
           "format_scan_table", "run_models2d_bench", "run_models3d_bench", "run_amp_bench", "run_infer_bench"]
