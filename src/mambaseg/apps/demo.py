"""``mambaseg demo``: the whole pipeline on built-in synthetic data, no downloads, a few minutes on a CPU.

One demo where the dimension is only a parameter (:func:`run_part`, :data:`PARTS`): synthetic data -> a short
training for a fixed number of optimiser steps -> predictions on held-out synthetic cases -> evaluation -> overlays.

- 2D: fundus-like images with branching vessel trees (DRIVE layout) -> Akmamba-Net for :data:`DEMO_2D_STEPS` steps
  -> PNG masks, probabilities and overlays, curves and metrics.
- 3D (optional): an MRI-like phantom in the MSD layout -> DM-SegNet for :data:`DEMO_3D_STEPS` steps -> NIfTI
  predictions in the inputs' geometry, evaluation with HD95 in mm, orthogonal slice overlays of the errors.

Real data (optional, :mod:`mambaseg.apps.demo_real`): the shipped models applied to a few DRIVE and MSD Hippocampus
cases when a data folder holds them.

The budgets are counted in steps, not minutes, so every machine trains the same model: a slower or busier one takes
longer but prints the same Dice (the step counts are sized so that it is well above 0.7 for several seeds).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import apply_overrides, config_from_dict

__all__ = ["DEMO_2D", "DEMO_2D_STEPS", "DEMO_3D", "DEMO_3D_STEPS", "PARTS", "DemoPart", "run_demo", "run_part",
           "step_overrides", "summary_lines"]

DEMO_2D_STEPS = 600  # optimiser steps of the 2D demo (60 epochs of 10); see benchmarks/demo_calibration.py
DEMO_3D_STEPS = 300  # optimiser steps of the 3D demo (30 epochs of 10); see benchmarks/demo_calibration.py

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


@dataclass(frozen=True)
class DemoPart:
    """What one dimension of the demo trains, on what, and how its test cases are laid out."""

    config: dict  #: the training config (its ``train.epochs`` x ``train.iters_per_epoch`` = ``steps``)
    steps: int  #: default optimiser steps
    model: str  #: the model, as the log names it
    data: str  #: the synthetic data, as the log names it
    predicting: str  #: the log line of the prediction step
    images: str  #: test images, relative to the test folder
    labels: str  #: test labels, relative to the test folder
    mean: str  #: the key of the evaluation's mean over cases


PARTS = {
    2: DemoPart(DEMO_2D, DEMO_2D_STEPS, "Akmamba-Net (tiny)", "synthetic vessel images",
                "predicting the synthetic test images", "images", "", "mean_2d"),
    3: DemoPart(DEMO_3D, DEMO_3D_STEPS, "DM-SegNet (tiny)", "a synthetic phantom",
                "predicting NIfTI volumes (written in each input's geometry)", "imagesTr", "labelsTr",
                "foreground_mean"),
}


def step_overrides(cfg_dict: dict, steps: int, seed: int) -> list[str]:
    """``--set`` items that make a demo config train exactly ``steps`` optimiser steps (rounded up to whole epochs
    of its ``train.iters_per_epoch``) with no time limit, from ``seed``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    per_epoch = cfg_dict["train"]["iters_per_epoch"]
    epochs = -(-steps // per_epoch)
    val_every = min(cfg_dict["train"]["val_every"], epochs)
    return [f"train.epochs={epochs}", "train.time_limit_min=0", f"train.val_every={val_every}", f"seed={seed}"]


def _synthetic_data(dim: int, root: Path, run: Path) -> tuple[list[str], Path]:
    """(config overrides, test folder) of the synthetic data of one dimension: 2D images are written by the
    training itself (``synthetic_drive`` layout, under the run), 3D phantoms here before it."""
    if dim == 2:
        return [], run / "synthetic_data" / "test"
    from ..data.synthetic import write_phantom_msd

    data = write_phantom_msd(root / "3d_phantom_task", n_cases=10, shape=(40, 48, 36))
    test = write_phantom_msd(root / "3d_phantom_test", n_cases=2, shape=(44, 40, 38), seed=7)
    return [f"data.root={data}"], test


def _overlay_slices(image: np.ndarray, pred: np.ndarray, ref: np.ndarray, path: Path, affine: np.ndarray,
                    title: str = "") -> None:
    """Axial, coronal and sagittal slices through the reference's centre, foreground errors coloured (TP/FP/FN),
    labelled with orientation letters; panels enlarged (nearest neighbour) to 256 px on their longer side."""
    from ..data.io.png import write_png
    from ..engine.predict.overlay import overlay_figure, overlay_panels, ras_note

    panels = overlay_panels(image, pred, affine, ref, colouring="errors")
    write_png(path, overlay_figure(panels, title, note=ras_note(panels[0]["orientation"]), panel_px=256))


def _error_overlays(test: Path, pred_dir: Path, out: Path) -> None:
    """3D: one :func:`_overlay_slices` figure per predicted volume, ``out/<case>.png`` (2D predictions carry their
    overlays already, ``predict --overlay``)."""
    from ..data.io.volume import read_nifti, read_nifti_label

    for f in sorted(pred_dir.glob("*.nii.gz")):
        image, meta = read_nifti(test / "imagesTr" / f.name)
        label, _ = read_nifti_label(f)
        ref, _ = read_nifti_label(test / "labelsTr" / f.name)
        _overlay_slices(image[0], label, ref, out / f.name.replace(".nii.gz", ".png"), meta["affine"],
                        f"{f.name[:-7]}: green TP, red FP, blue FN (foreground)")


def run_part(root: Path, dim: int, steps: int | None = None, seed: int = 0,
             log: Callable[[str], None] = print) -> dict:
    """Train the ``dim``-D model of :data:`PARTS` for ``steps`` optimiser steps (default its own) on synthetic data
    under ``root`` (``<dim>d_run``), predict the held-out synthetic cases (``<dim>d_predictions``; 2D with
    probabilities and overlays, 3D with error overlays in ``3d_overlays``) and evaluate them
    (``<dim>d_evaluation``); returns ``{"steps", "train", "evaluation"}``."""
    from ..engine.evaluate import evaluate, format_table
    from ..engine.predict import predict
    from ..engine.train import train

    part, tag = PARTS[dim], f"[{dim}D]"
    steps = steps or part.steps
    run = root / f"{dim}d_run"
    data_overrides, test = _synthetic_data(dim, root, run)
    cfg = apply_overrides(config_from_dict(part.config), [*data_overrides, *step_overrides(part.config, steps, seed)])
    log(f"{tag} training {part.model} on {part.data} for {steps} steps -> {run}")
    summary = train(cfg, run, progress=True)
    pred_dir = root / f"{dim}d_predictions"
    log(f"{tag} {part.predicting}")
    extra = {"overlay": True, "probs": True, "mask": test / "mask"} if dim == 2 else {}
    predict(run, test / part.images, pred_dir, progress=False, **extra)
    log(f"{tag} evaluating")
    result = evaluate(pred_dir, test / part.labels, root / f"{dim}d_evaluation")
    log(format_table(result))
    if dim == 3:
        _error_overlays(test, pred_dir, root / "3d_overlays")
        log(f"[3D] slice overlays: {root / '3d_overlays'}")
    return {"steps": steps, "train": summary, "evaluation": result.get(part.mean, {})}


def run_demo(out: Path, steps_2d: int = DEMO_2D_STEPS, steps_3d: int | None = None, with_3d: bool = True,
             with_real: bool = True, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Run the demo into ``out`` (a fresh time-stamped subfolder); returns that folder.

    Args:
        steps_2d: optimiser steps of the 2D training.
        steps_3d: optimiser steps of the 3D training (default :data:`DEMO_3D_STEPS`).
        with_3d: run the 3D part.
        with_real: apply the shipped models to a few real cases when the data is found (see
            :func:`mambaseg.apps.demo_real.find_data_root`).
        seed: seed of both trainings (data, initialisation, sampling).
    """
    started = time.perf_counter()
    root = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=False)
    report = {"2d": run_part(root, 2, steps_2d, seed, log)}
    if with_3d:
        report["3d"] = run_part(root, 3, steps_3d, seed, log)
    if with_real:
        from .demo_real import run_demo_real

        report["real"] = run_demo_real(root, log=log)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (root / "demo_summary.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"overlays: {root / '2d_predictions' / 'overlays'}; curves: {root / '2d_run' / 'progress.png'}; "
        f"metrics: {root / '2d_evaluation'}")
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
