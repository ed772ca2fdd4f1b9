"""The building blocks of the augmentation transforms (:mod:`mambaseg.data.transforms`): the sample dict check, the
argument checks, applying a function to image, label and mask alike, and :class:`Compose`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Compose", "Transform", "check_p", "check_range", "check_sample", "resolve_axes", "spatial_apply"]

Transform = Callable[[dict, np.random.Generator], dict]


def check_sample(sample: dict) -> int:
    """Validate a sample dict and return its number of spatial dimensions.

    Raises:
        ValueError: missing image, image with fewer than 3 dims, or label/mask shape different from ``image.shape[1:]``.
    """
    if "image" not in sample:
        raise ValueError(f"sample must have an 'image' entry, got keys {sorted(sample)}")
    image = sample["image"]
    if np.ndim(image) < 3:
        raise ValueError(f"sample['image'] must be (C, *S) with 2 or 3 spatial dims, got shape {np.shape(image)}")
    for key in ("label", "mask"):
        value = sample.get(key)
        if value is not None and np.shape(value) != np.shape(image)[1:]:
            raise ValueError(f"sample[{key!r}] shape {np.shape(value)} must equal image spatial shape "
                             f"{np.shape(image)[1:]}")
    return np.ndim(image) - 1


def check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)


def check_range(name: str, value: Sequence[float], positive: bool = False) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi or (positive and lo <= 0):
        raise ValueError(f"{name} must be a (low, high) pair with low <= high{' and low > 0' if positive else ''}, "
                         f"got {tuple(value)}")
    return lo, hi


def resolve_axes(axes: Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} entry {a} is out of range for a sample with {ndim} spatial dims")
        out.append(a % ndim)
    return tuple(out)


def spatial_apply(sample: dict, fn: Callable[[np.ndarray, str], np.ndarray]) -> dict:
    """Apply ``fn(array_with_spatial_axes_first, kind)`` to each channel of image and to label/mask."""
    out = dict(sample)
    out["image"] = np.ascontiguousarray(np.stack([fn(ch, "image") for ch in sample["image"]]), dtype=np.float32)
    for key in ("label", "mask"):
        if sample.get(key) is not None:
            out[key] = np.ascontiguousarray(fn(sample[key], key))
    return out


class Compose:
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"
