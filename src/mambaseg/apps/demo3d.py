"""The 3D part of ``mambaseg demo``: a synthetic phantom task, a short DM-SegNet training, NIfTI predictions in the
inputs' geometry, evaluation with HD95 in mm, and slice overlays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import config_from_dict

__all__ = ["DEMO_3D", "DEMO_3D_STEPS", "run_demo_3d", "step_overrides"]

DEMO_3D_STEPS = 300  # optimiser steps of the 3D demo (30 epochs of 10); see benchmarks/demo_calibration.py

DEMO_3D = {
    "seed": 0,
    "model": {"name": "dm_segnet_tiny"},
    "data": {"layout": "msd", "num_classes": 3, "patch_size": [32, 32, 32], "fg_prob": 0.5, "augment": "light",
             "val_fraction": 0.25, "modality": "MR"},
    "loss": {"name": "dice_ce"},
    "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-5, "schedule": "cosine"},
    "train": {"epochs": DEMO_3D_STEPS // 10, "iters_per_epoch": 10, "batch_size": 2, "val_every": 3},
    "infer": {"overlap": 0.25},
}


def _overlay_slices(image: np.ndarray, pred: np.ndarray, ref: np.ndarray, path: Path, affine: np.ndarray,
                    title: str = "") -> None:
    """Axial, coronal and sagittal slices through the reference's centre, foreground errors coloured (TP/FP/FN),
    labelled with orientation letters; panels enlarged (nearest neighbour) to 256 px on their longer side."""
    from ..data.io.png import write_png
    from .report_overlays import orthogonal_error_figure

    write_png(path, orthogonal_error_figure(image, pred, ref, affine, title, panel_px=256))


def step_overrides(cfg_dict: dict, steps: int, seed: int) -> list[str]:
    """``--set`` items that make a demo config train exactly ``steps`` optimiser steps (rounded up to whole epochs
    of its ``train.iters_per_epoch``) with no time limit, from ``seed``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    per_epoch = cfg_dict["train"]["iters_per_epoch"]
    epochs = -(-steps // per_epoch)
    val_every = min(cfg_dict["train"]["val_every"], epochs)
    return [f"train.epochs={epochs}", "train.time_limit_min=0", f"train.val_every={val_every}", f"seed={seed}"]


def run_demo_3d(root: Path, steps: int = DEMO_3D_STEPS, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Train DM-SegNet (tiny) for ``steps`` optimiser steps on a synthetic phantom under ``root``, predict and
    evaluate two held-out phantoms; returns ``{"steps", "train", "evaluation"}``."""
    from ..config import apply_overrides
    from ..data.io.volume import read_nifti, read_nifti_label
    from ..data.synthetic import write_phantom_msd
    from ..engine.evaluate import evaluate, format_table
    from ..engine.predict import predict
    from ..engine.train import train

    data = write_phantom_msd(root / "3d_phantom_task", n_cases=10, shape=(40, 48, 36))
    test = write_phantom_msd(root / "3d_phantom_test", n_cases=2, shape=(44, 40, 38), seed=7)
    cfg = apply_overrides(config_from_dict(DEMO_3D), [f"data.root={data}", *step_overrides(DEMO_3D, steps, seed)])
    run = root / "3d_run"
    log(f"[3D] training DM-SegNet (tiny) on a synthetic phantom for {steps} steps -> {run}")
    summary = train(cfg, run, progress=True)
    pred_dir = root / "3d_predictions"
    log("[3D] predicting NIfTI volumes (written in each input's geometry)")
    predict(run, test / "imagesTr", pred_dir, progress=False)
    result = evaluate(pred_dir, test / "labelsTr", root / "3d_evaluation")
    log(format_table(result))
    for f in sorted(pred_dir.glob("*.nii.gz")):
        image, meta = read_nifti(test / "imagesTr" / f.name)
        label, _ = read_nifti_label(f)
        ref, _ = read_nifti_label(test / "labelsTr" / f.name)
        _overlay_slices(image[0], label, ref, root / "3d_overlays" / f.name.replace(".nii.gz", ".png"),
                        meta["affine"], f"{f.name[:-7]}: green TP, red FP, blue FN (foreground)")
    log(f"[3D] slice overlays: {root / '3d_overlays'}")
    return {"steps": steps, "train": summary, "evaluation": result.get("foreground_mean", {})}
