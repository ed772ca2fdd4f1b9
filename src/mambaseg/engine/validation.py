"""Validation during training: full-image sliding-window Dice per case, and the threshold chosen on validation
(``infer.threshold: auto``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import Config
from .inference import logits_to_probs, probs_to_labels, sliding_window
from .threshold import choose_threshold, dice_curve

__all__ = ["case_dice", "predict_logits", "validate"]


def case_dice(pred: np.ndarray, label: np.ndarray, mask: np.ndarray | None, num_classes: int) -> float:
    """Mean foreground Dice over classes present in prediction or label (inside ``mask``); NaN if none."""
    if mask is not None:
        pred, label = pred[mask], label[mask]
    scores = []
    for c in range(1, max(num_classes, 2)):
        p, g = pred == c, label == c
        denom = p.sum() + g.sum()
        if denom:
            scores.append(2 * np.logical_and(p, g).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, image: np.ndarray, tile, overlap: float, device, tta: bool = False,
                   batch_size: int = 4, progress: bool = False, mode: str = "gaussian",
                   callback=None, stitch_device: str = "auto") -> torch.Tensor:
    """Sliding-window logits (K, *S) of one image (C, *S) on ``stitch_device`` (``infer.stitch_device``: tiles run on
    ``device``); ``callback(tiles_done, tiles)`` as in :func:`~mambaseg.engine.inference.sliding_window`."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    axes = tuple(range(x.dim() - 1)) if tta else ()
    return sliding_window(lambda b: model(b).float(), x, tile, overlap, mode, batch_size, axes, progress, callback,
                          device=device, stitch_device=stitch_device)


def validate(model, cases: list[dict], cfg: Config, device, progress=None) -> dict:
    """Full-image sliding-window validation: mean foreground Dice over cases (inside the mask when present).

    ``progress``, if given, is called as ``progress(cases_done, cases, tiles_done, tiles)`` during the tile loop.

    With ``infer.threshold: auto`` (binary) the threshold of :data:`~mambaseg.engine.threshold.THRESHOLD_GRID` with
    the best mean Dice is chosen: ``val_dice`` is the Dice at it, ``threshold`` the threshold and
    ``val_dice_at_0_5`` the Dice at 0.5."""
    model.eval()
    tile = cfg.infer.patch_size or cfg.data.patch_size
    auto = cfg.infer.threshold == "auto"
    threshold = 0.5 if auto else cfg.infer.threshold
    dices, curves = [], []
    for i, case in enumerate(cases):
        tiles_cb = None if progress is None else (lambda d, t, i=i: progress(i, len(cases), d, t))
        probs = logits_to_probs(predict_logits(model, case["image"], tile, cfg.infer.overlap, device,
                                               batch_size=cfg.infer.batch_size, callback=tiles_cb,
                                               stitch_device=cfg.infer.stitch_device))
        if auto and probs.shape[0] == 1:
            curves.append(dice_curve(probs[0].cpu().numpy(), case["label"], case.get("mask")))
        pred = probs_to_labels(probs, threshold).cpu().numpy()
        d = case_dice(pred, case["label"], case.get("mask"), cfg.data.num_classes)
        if not math.isnan(d):
            dices.append(d)
    out = {"val_dice": float(np.mean(dices)) if dices else float("nan"), "val_cases": len(cases)}
    if curves:
        t, d = choose_threshold(curves)
        if not math.isnan(d):
            out.update(val_dice=d, val_dice_at_0_5=out["val_dice"], threshold=t)
    return out
