"""``mambaseg demo``: the whole pipeline on built-in synthetic data, no downloads, a few minutes on a CPU.

2D: synthetic fundus-like images with branching vessel trees (DRIVE layout) -> train Akmamba-Net for about
``minutes`` -> predict the held-out synthetic test images -> evaluate -> overlays, curves and metrics.
3D (optional): a synthetic MRI-like phantom in the MSD layout -> short DM-SegNet training -> NIfTI predictions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..config import apply_overrides, config_from_dict

__all__ = ["run_demo", "DEMO_2D"]

DEMO_2D = {
    "seed": 0,
    "model": {"name": "akmamba_net_tiny", "kwargs": {"widths": [8, 16, 16, 32, 32]}},
    "data": {"layout": "synthetic_drive", "synthetic_cases": 16, "synthetic_size": 192, "val_fraction": 0.2,
             "patch_size": [64, 64], "fg_prob": 0.5, "augment": "light", "fov": True},
    "loss": {"name": "dice_ce"},
    "optim": {"name": "adam", "lr": 5e-3, "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 10},
    "train": {"epochs": 1000, "iters_per_epoch": 10, "batch_size": 4, "val_every": 5},
    "infer": {"patch_size": [192, 192], "overlap": 0.25},
}


def run_demo(out: Path, minutes: float = 2.0, with_3d: bool = True, log: Callable[[str], None] = print) -> Path:
    """Run the demo into ``out`` (a fresh time-stamped subfolder); returns that folder."""
    from ..engine.evaluate import evaluate, format_table
    from ..engine.predict import predict
    from ..engine.train import train

    root = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=False)
    cfg = apply_overrides(config_from_dict(DEMO_2D), [f"train.time_limit_min={minutes}"])
    run = root / "2d_run"
    log(f"[2D] training Akmamba-Net (tiny) on synthetic vessel images for about {minutes:g} min -> {run}")
    summary = train(cfg, run, progress=True)
    test = run / "synthetic_data" / "test"
    pred_dir = root / "2d_predictions"
    log("[2D] predicting the synthetic test images")
    predict(run, test / "images", pred_dir, overlay=True, probs=True, mask=test / "mask", progress=False)
    log("[2D] evaluating")
    result = evaluate(pred_dir, test, root / "2d_evaluation")
    log(format_table(result))
    report = {"2d": {"train": summary, "evaluation": result.get("mean_2d", {})}}
    if with_3d:
        from .demo3d import run_demo_3d

        report["3d"] = run_demo_3d(root, minutes=min(1.5, minutes), log=log)
    (root / "demo_summary.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"overlays: {pred_dir / 'overlays'}; curves: {run / 'progress.png'}; metrics: {root / '2d_evaluation'}")
    return root
