"""Foreground-biased N-D patch sampling (nnU-Net style oversampling).

With probability ``fg_prob`` the patch is centred on a random foreground voxel (clamped so that it stays inside the
image), otherwise its origin is uniform over all valid positions. Images smaller than the patch are padded first,
symmetrically (the extra voxel goes to the end): image with 0, label with 0, mask with False.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mambaseg.data.transforms import check_sample

__all__ = ["foreground_flat_indices", "pad_to_size", "sample_patch"]


def pad_to_size(sample: dict, size: Sequence[int]) -> dict:
    """Pad image/label/mask so that every spatial dim is at least ``size`` (no-op when already large enough).

    Returns:
        A new dict; ``meta`` and other keys pass through.
    """
    shape = np.asarray(sample["image"].shape[1:])
    need = np.maximum(np.asarray(size) - shape, 0)
    if not need.any():
        return sample
    before, after = need // 2, need - need // 2
    widths = [(int(b), int(a)) for b, a in zip(before, after)]
    out = dict(sample)
    out["image"] = np.pad(sample["image"], [(0, 0)] + widths, mode="constant", constant_values=0)
    for key, fill in (("label", 0), ("mask", False)):
        if sample.get(key) is not None:
            out[key] = np.pad(sample[key], widths, mode="constant", constant_values=fill)
    return out


def foreground_flat_indices(label: np.ndarray, fg_classes: Sequence[int] | None = None) -> np.ndarray:
    """Flat indices of foreground voxels: ``label > 0`` or ``label`` in ``fg_classes``."""
    fg = label > 0 if fg_classes is None else np.isin(label, np.asarray(list(fg_classes)))
    return np.flatnonzero(fg)


def sample_patch(sample: dict, patch_size: Sequence[int], rng: np.random.Generator, fg_prob: float = 0.33,
                 fg_classes: Sequence[int] | None = None, fg_indices: np.ndarray | None = None) -> dict:
    """Crop one patch from a sample, biased towards foreground.

    Args:
        sample: ``{'image': (C, *S), 'label': S (optional), 'mask': S (optional), ...}``.
        patch_size: spatial patch size, one entry per spatial dim of ``S``.
        rng: the generator driving every random choice.
        fg_prob: probability of centring on a foreground voxel (ignored when the sample has no label or no
            foreground; then the origin is uniform).
        fg_classes: label values counted as foreground (default: every value > 0).
        fg_indices: precomputed ``foreground_flat_indices(label)`` of the unpadded label (e.g. a memory-mapped
            array stored with a preprocessed case): used instead of scanning the label when ``fg_classes`` is None
            and no padding is needed; the patches drawn are the same.

    Returns:
        A new dict with ``image: (C, *patch_size)`` and label/mask cropped the same way (C-contiguous copies);
        other keys (e.g. ``meta``) pass through.

    Raises:
        ValueError: ``patch_size`` length differs from the spatial dims, non-positive sizes, or ``fg_prob``
            outside [0, 1].
    """
    ndim = check_sample(sample)
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != ndim or min(patch) < 1:
        raise ValueError(f"patch_size must have {ndim} positive entries (one per spatial dim of the image "
                         f"{tuple(sample['image'].shape[1:])}), got {tuple(patch_size)}")
    if not 0.0 <= fg_prob <= 1.0:
        raise ValueError(f"fg_prob must be in [0, 1], got {fg_prob}")
    padded = pad_to_size(sample, patch)
    if padded is not sample or fg_classes is not None:
        fg_indices = None  # indices of the unpadded label / of the default foreground only
    sample = padded
    shape = np.asarray(sample["image"].shape[1:])
    high = shape - np.asarray(patch)  # inclusive upper bound of the origin
    origin = None
    label = sample.get("label")
    if label is not None and rng.random() < fg_prob:
        flat = foreground_flat_indices(label, fg_classes) if fg_indices is None else fg_indices
        if flat.size:
            centre = np.asarray(np.unravel_index(flat[int(rng.integers(flat.size))], label.shape))
            origin = np.clip(centre - np.asarray(patch) // 2, 0, high)
    if origin is None:
        origin = np.asarray([int(rng.integers(0, h + 1)) for h in high])
    box = tuple(slice(int(o), int(o) + p) for o, p in zip(origin, patch))
    out = dict(sample)
    out["image"] = np.ascontiguousarray(sample["image"][(slice(None),) + box])
    for key in ("label", "mask"):
        if sample.get(key) is not None:
            out[key] = np.ascontiguousarray(sample[key][box])
    return out
