"""Tiled / sliding-window inference for 2D and 3D, as small pure functions (nnU-Net style).

``sliding_window(predict, image, tile, overlap, mode, batch_size, mirror_axes, progress, callback, device,
stitch_device)`` tiles an image ``(C, *S)`` with overlapping windows, runs ``predict`` on batches of tiles and blends
the logits with a Gaussian (or constant) weight map; images smaller than the tile are padded and cropped back.

Where the work happens: tiles are cut from ``image`` (on its device) and moved to ``device``, the network's device;
the network's outputs are moved to ``stitch_device``, where the two accumulation buffers live (the logits sum,
``K x S`` float32, and the weight map, ``S`` float32) and where the result is returned. ``stitch_device`` is ``same``
(the network's device), ``cpu``, ``auto`` or a :class:`torch.device`; ``auto`` (the default, config key
``infer.stitch_device``) stitches on the CPU when the network runs on another device (a GPU) and the two buffers
would exceed :data:`STITCH_CPU_BYTES` (1 GiB): a large volume's logits then take host RAM instead of GPU memory,
at the cost of one device-to-host copy of every tile's output. See :func:`resolve_stitch_device`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["STITCH_CPU_BYTES", "STITCH_DEVICES", "compute_steps", "gaussian_weight", "logits_to_probs",
           "probs_to_labels", "resolve_stitch_device", "sliding_window"]

STITCH_DEVICES = ("auto", "cpu", "same")  # infer.stitch_device
STITCH_CPU_BYTES = 1 << 30  # auto: buffers above this size (logits sum + weight map) go to the CPU


def resolve_stitch_device(setting: str | torch.device, net_device: str | torch.device, channels: int,
                          spatial: Sequence[int], threshold: int = STITCH_CPU_BYTES) -> torch.device:
    """The device of the sliding-window accumulation buffers.

    Args:
        setting: ``same`` (the network's device), ``cpu``, ``auto`` or a :class:`torch.device` (used as is).
        net_device: the device the network runs on (``"cpu"``, ``"cuda:0"``, ...).
        channels: output channels ``K``.
        spatial: the (padded) spatial size ``S`` of the buffers.
        threshold: ``auto`` stitches on the CPU above this many bytes of buffers.

    Returns:
        ``auto``: the CPU when ``net_device`` is not the CPU and the buffers, ``4 * (K + 1) * prod(S)`` bytes (float32
        logits sum and weight map), exceed ``threshold``; otherwise ``net_device``.

    Raises:
        ValueError: ``setting`` is none of these.
    """
    if isinstance(setting, torch.device):
        return setting
    net = torch.device(net_device)
    if setting == "same":
        return net
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        nbytes = 4 * (int(channels) + 1) * math.prod(int(s) for s in spatial)
        return torch.device("cpu") if net.type != "cpu" and nbytes > threshold else net
    raise ValueError(f"infer.stitch_device must be one of {', '.join(STITCH_DEVICES)}, got {setting!r}.")


def _buffers(channels: int, spatial: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The zeroed accumulation buffers: logits sum ``(K, *S)`` and weight map ``S`` (float32) on ``device``."""
    return torch.zeros((channels,) + spatial, device=device), torch.zeros(spatial, device=device)


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
    device: str | torch.device | None = None,
    stitch_device: str | torch.device = "auto",
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
        device: the network's device, where tiles are moved before ``predict`` (None: ``image``'s device).
        stitch_device: where the logits are accumulated and returned: ``auto`` | ``cpu`` | ``same`` (``device``) or
            a :class:`torch.device`; see :func:`resolve_stitch_device`.

    Returns:
        ``(K, *S)`` blended logits (float32) on the stitch device.
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
    net_device = image.device if device is None else torch.device(device)
    if not isinstance(stitch_device, torch.device):
        resolve_stitch_device(stitch_device, net_device, 1, padded)  # a bad setting fails before the first tile
    starts = list(itertools.product(*compute_steps(padded, tile, overlap)))
    weight = gaussian_weight(tile) if mode == "gaussian" else torch.ones(tile)
    out = norm = None
    flips = [()] + [c for r in range(1, len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    bar = tqdm(total=len(starts), desc="tiles", disable=not progress, leave=False)
    if callback is not None:
        callback(0, len(starts))
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        slices = [tuple(slice(s, s + t) for s, t in zip(st, tile)) for st in group]
        batch = torch.stack([image[(slice(None),) + sl] for sl in slices]).to(net_device)
        logits = 0
        for f in flips:
            dims = [a + 2 for a in f]
            pred = predict(batch.flip(dims) if dims else batch)
            logits = logits + (pred.flip(dims) if dims else pred)
        logits = logits / len(flips)
        if out is None:  # the output channels are known now
            stitch = resolve_stitch_device(stitch_device, net_device, logits.shape[1], padded)
            out, norm = _buffers(logits.shape[1], padded, stitch)
            weight = weight.to(stitch)
        logits = logits.to(out.device)
        for sl, lg in zip(slices, logits):
            out[(slice(None),) + sl] += lg.float() * weight
            norm[sl] += weight
        bar.update(len(group))
        if callback is not None:
            callback(min(i + batch_size, len(starts)), len(starts))
    bar.close()
    out = out.div_(norm)  # in place: a large volume's logits are not held twice
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
