"""Tiled / sliding-window inference for 2D and 3D, as small pure functions (nnU-Net style).

``sliding_window(predict, image, tile, overlap, mode, batch_size, mirror_axes, progress, callback)`` tiles an image
``(C, *S)`` with overlapping windows, runs ``predict`` on batches of tiles and blends the logits with a Gaussian
(or constant) weight map; images smaller than the tile are padded and cropped back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["compute_steps", "gaussian_weight", "logits_to_probs", "probs_to_labels", "sliding_window"]


def compute_steps(image_size: Sequence[int], tile: Sequence[int], overlap: float) -> list[list[int]]:
    """Start positions of the tiles along each axis, evenly spread so the first and last tiles touch the borders.

    Args:
        image_size: spatial size, each >= the tile size.
        tile: tile size per axis.
        overlap: fraction in [0, 1) by which neighbouring tiles overlap (at least).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
    steps = []
    for size, t in zip(image_size, tile):
        if size < t:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the tile {tuple(tile)}.")
        stride = max(1, int(t * (1 - overlap)))
        n = math.ceil((size - t) / stride) + 1
        if n == 1:
            steps.append([0])
        else:
            actual = (size - t) / (n - 1)
            steps.append([round(actual * i) for i in range(n)])
    return steps


@lru_cache(maxsize=8)
def gaussian_weight(tile: tuple, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Gaussian importance map over a tile (max 1, strictly positive)."""
    grids = np.meshgrid(*[np.arange(t) - (t - 1) / 2 for t in tile], indexing="ij")
    sq = sum((g / max(t * sigma_scale, 1e-6)) ** 2 for g, t in zip(grids, tile))
    w = np.exp(-0.5 * sq)
    w = w / w.max()
    w = np.maximum(w, w[w > 0].min() if (w > 0).any() else 1.0)
    w = np.maximum(w, 1e-3)
    return torch.from_numpy(w.astype(np.float32))


@torch.no_grad()
def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    batch_size: int = 4,
    mirror_axes: Sequence[int] = (),
    progress: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Blend ``predict`` over overlapping tiles.

    Args:
        predict: maps a batch ``(n, C, *tile)`` to logits ``(n, K, *tile)``.
        image: ``(C, *S)`` tensor.
        tile: tile size (one entry per spatial axis).
        overlap: tile overlap fraction in [0, 1).
        mode: ``gaussian`` or ``constant`` blending.
        batch_size: tiles per ``predict`` call.
        mirror_axes: spatial axes (0-based) to mirror for test-time augmentation (all combinations averaged).
        progress: show a tqdm bar.
        callback: called as ``callback(tiles_done, tiles_total)`` before the first batch and after each one.

    Returns:
        ``(K, *S)`` blended logits.
    """
    if mode not in ("gaussian", "constant"):
        raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}.")
    spatial = tuple(image.shape[1:])
    tile = tuple(int(t) for t in tile)
    if len(tile) != len(spatial):
        raise ValueError(f"tile {tile} has {len(tile)} axes but the image has {len(spatial)} spatial axes.")
    padded = tuple(max(s, t) for s, t in zip(spatial, tile))
    if padded != spatial:
        pad = []
        for s, p in reversed(list(zip(spatial, padded))):
            pad += [(p - s) // 2, p - s - (p - s) // 2]
        image = torch.nn.functional.pad(image[None], pad)[0]
    starts = list(itertools.product(*compute_steps(padded, tile, overlap)))
    weight = gaussian_weight(tile) if mode == "gaussian" else torch.ones(tile)
    weight = weight.to(image.device)
    out = None
    norm = torch.zeros(padded, device=image.device)
    flips = [()] + [c for r in range(1, len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    bar = tqdm(total=len(starts), desc="tiles", disable=not progress, leave=False)
    if callback is not None:
        callback(0, len(starts))
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        slices = [tuple(slice(s, s + t) for s, t in zip(st, tile)) for st in group]
        batch = torch.stack([image[(slice(None),) + sl] for sl in slices])
        logits = 0
        for f in flips:
            dims = [a + 2 for a in f]
            pred = predict(batch.flip(dims) if dims else batch)
            logits = logits + (pred.flip(dims) if dims else pred)
        logits = logits / len(flips)
        if out is None:
            out = torch.zeros((logits.shape[1],) + padded, device=image.device)
        for sl, lg in zip(slices, logits):
            out[(slice(None),) + sl] += lg.float() * weight
            norm[sl] += weight
        bar.update(len(group))
        if callback is not None:
            callback(min(i + batch_size, len(starts)), len(starts))
    bar.close()
    out = out / norm
    if padded != spatial:
        crop = tuple(slice((p - s) // 2, (p - s) // 2 + s) for s, p in zip(spatial, padded))
        out = out[(slice(None),) + crop]
    return out


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(K, *S) logits -> probabilities: sigmoid for one output channel, softmax over channels otherwise."""
    return torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)


def probs_to_labels(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(K, *S) probabilities -> (*S) int64 labels (threshold for one channel, argmax otherwise)."""
    if probs.shape[0] == 1:
        return (probs[0] >= threshold).long()
    return probs.argmax(0)
