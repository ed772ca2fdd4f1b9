"""``mambaseg demo``: the whole pipeline on built-in synthetic data, no downloads, a few minutes on a CPU.

2D: synthetic fundus-like images with branching vessel trees (DRIVE layout) -> train Akmamba-Net for
:data:`DEMO_2D_STEPS` optimiser steps -> predict the held-out synthetic test images -> evaluate -> overlays, curves and
metrics. 3D (optional): a synthetic MRI-like phantom in the MSD layout -> DM-SegNet for :data:`DEMO_3D_STEPS` steps
-> NIfTI predictions. Real data (optional, :mod:`mambaseg.apps.demo_real`): the shipped models applied to a few
DRIVE and MSD Hippocampus cases when a data folder holds them.

The budgets are counted in steps, not minutes, so every machine trains the same model: a slower or busier one takes
longer but prints the same Dice (the step counts are sized so that it is well above 0.7 for several seeds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..config import apply_overrides, config_from_dict
from .demo3d import step_overrides

__all__ = ["DEMO_2D", "DEMO_2D_STEPS", "run_demo", "step_overrides"]

DEMO_2D_STEPS = 600  # optimiser steps of the 2D demo (60 epochs of 10); see benchmarks/demo_calibration.py
DEMO_2D = {
    "seed": 0,
    "model": {"name": "akmamba_net_tiny", "kwargs": {"widths": [8, 16, 16, 32, 32]}},
    "data": {"layout": "synthetic_drive", "synthetic_cases": 16, "synthetic_size": 192, "val_fraction": 0.2,
             "patch_size": [64, 64], "fg_prob": 0.5, "augment": "light", "fov": True},
    "loss": {"name": "dice_ce"},
    "optim": {"name": "adam", "lr": 5e-3, "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 10},
    "train": {"epochs": DEMO_2D_STEPS // 10, "iters_per_epoch": 10, "batch_size": 4, "val_every": 5},
    "infer": {"patch_size": [192, 192], "overlap": 0.25},
}


def run_demo(out: Path, steps_2d: int = DEMO_2D_STEPS, steps_3d: int | None = None, with_3d: bool = True,
             with_real: bool = True, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Run the demo into ``out`` (a fresh time-stamped subfolder); returns that folder.

    Args:
        steps_2d: optimiser steps of the 2D training.
        steps_3d: optimiser steps of the 3D training (default :data:`~mambaseg.apps.demo3d.DEMO_3D_STEPS`).
        with_3d: run the 3D part.
        with_real: apply the shipped models to a few real cases when the data is found (see
            :func:`mambaseg.apps.demo_real.find_data_root`).
        seed: seed of both trainings (data, initialisation, sampling).
    """
    from ..engine.evaluate import evaluate, format_table
    from ..engine.predict import predict
    from ..engine.train import train

    started = time.perf_counter()
    root = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=False)
    cfg = apply_overrides(config_from_dict(DEMO_2D), step_overrides(DEMO_2D, steps_2d, seed))
    run = root / "2d_run"
    log(f"[2D] training Akmamba-Net (tiny) on synthetic vessel images for {steps_2d} steps -> {run}")
    summary = train(cfg, run, progress=True)
    test = run / "synthetic_data" / "test"
    pred_dir = root / "2d_predictions"
    log("[2D] predicting the synthetic test images")
    predict(run, test / "images", pred_dir, overlay=True, probs=True, mask=test / "mask", progress=False)
    log("[2D] evaluating")
    result = evaluate(pred_dir, test, root / "2d_evaluation")
    log(format_table(result))
    report = {"2d": {"steps": steps_2d, "train": summary, "evaluation": result.get("mean_2d", {})}}
    if with_3d:
        from .demo3d import DEMO_3D_STEPS, run_demo_3d

        report["3d"] = run_demo_3d(root, steps=steps_3d or DEMO_3D_STEPS, seed=seed, log=log)
    if with_real:
        from .demo_real import run_demo_real

        report["real"] = run_demo_real(root, log=log)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (root / "demo_summary.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"overlays: {pred_dir / 'overlays'}; curves: {run / 'progress.png'}; metrics: {root / '2d_evaluation'}")
    for line in summary_lines(report):
        log(line)
    return root


def summary_lines(report: dict) -> list[str]:
    """The demo's closing lines: the Dice of each part that ran."""
    lines = [f"[2D] synthetic vessels, {report['2d']['steps']} steps: test Dice "
             f"{report['2d']['evaluation'].get('dice', float('nan')):.3f}"]
    if "3d" in report:
        lines.append(f"[3D] synthetic phantom, {report['3d']['steps']} steps: test Dice (foreground mean) "
                     f"{report['3d']['evaluation'].get('Dice', float('nan')):.3f}")
    for name, part in report.get("real", {}).items():
        lines.append(f"[real] {name}: Dice {part['dice']:.3f} over {part['cases']} case(s) vs the manual labels")
    return lines
