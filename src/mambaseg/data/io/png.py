"""PNG output: :func:`write_png`, and colour overlays of a prediction (and its errors) on an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mambaseg.data.io.suffixes import suffix_of

__all__ = ["OVERLAY_COLOURS", "overlay_rgb", "to_rgb_uint8", "write_overlay", "write_png"]

#: RGB colours used by :func:`write_overlay`.
OVERLAY_COLOURS = {"pred": (255, 255, 0), "tp": (0, 200, 0), "fp": (255, 0, 0), "fn": (0, 96, 255)}


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as PNG (parent folders are created).

    Args:
        path: destination file; must end in ``.png``.
        array: uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``; a bool array is written as 0/255.

    Returns:
        The written path.
    """
    path = Path(path)
    if suffix_of(path) != ".png":
        raise ValueError(f"path must end in '.png', got {str(path)!r}")
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        raise ValueError(f"array must be uint8 (or bool), got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"array must have shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float / (H, W) / (H, W, 3) -> (H, W, 3) uint8, robustly min-max scaled for non-uint8 input."""
    image = np.asarray(image)
    channels_last = image.ndim == 3 and image.shape[-1] in (1, 3) and (image.dtype == np.uint8
                                                                      or image.shape[0] not in (1, 3))
    if image.ndim == 3 and image.shape[0] in (1, 3) and not channels_last:
        image = np.moveaxis(image, 0, -1)  # (C, H, W) -> (H, W, C); uint8 (H, W, 3) is taken as channels-last
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (C, H, W) or (H, W[, 3]) with C in (1, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        img = image.astype(np.float64)
        lo, hi = np.percentile(img, [0.5, 99.5])
        hi = hi if hi > lo else lo + 1.0
        image = (np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def overlay_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                  alpha: float = 0.6) -> np.ndarray:
    """Colour overlay of a binary prediction (and its errors) on the image.

    Without ``gt`` the predicted foreground is tinted yellow. With ``gt`` the pixels are coloured by outcome:
    true positive green, false positive red, false negative blue (see :data:`OVERLAY_COLOURS`).

    Args:
        image: ``(C, H, W)`` with C in (1, 3), ``(H, W)`` or ``(H, W, 3)``; non-uint8 input is min-max scaled
            (0.5/99.5 percentiles).
        pred: ``(H, W)`` prediction; values > 0 are foreground.
        gt: optional ``(H, W)`` ground truth; values > 0 are foreground.
        alpha: opacity of the colours, in [0, 1].

    Returns:
        The ``(H, W, 3)`` uint8 RGB array.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_uint8(image).astype(np.float32)
    pred = np.asarray(pred) > 0
    if pred.shape != rgb.shape[:2]:
        raise ValueError(f"pred shape {pred.shape} does not match image shape {rgb.shape[:2]}")
    if gt is None:
        regions = {"pred": pred}
    else:
        gt = np.asarray(gt) > 0
        if gt.shape != pred.shape:
            raise ValueError(f"gt shape {gt.shape} does not match pred shape {pred.shape}")
        regions = {"tp": pred & gt, "fp": pred & ~gt, "fn": ~pred & gt}
    for name, region in regions.items():
        colour = np.asarray(OVERLAY_COLOURS[name], dtype=np.float32)
        rgb[region] = (1.0 - alpha) * rgb[region] + alpha * colour
    out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return out


def write_overlay(path: str | Path, image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                  alpha: float = 0.6) -> np.ndarray:
    """Write :func:`overlay_rgb` of the arguments to ``path`` (PNG) and return the RGB array."""
    out = overlay_rgb(image, pred, gt, alpha)
    write_png(path, out)
    return out
