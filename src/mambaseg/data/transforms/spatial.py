"""Geometric augmentation (:mod:`mambaseg.data.transforms`): the same change applied to image (linear
interpolation), label and mask (nearest neighbour)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .base import check_p, check_range, check_sample, resolve_axes, spatial_apply

__all__ = ["RandomAffine", "RandomFlip", "RandomRot90", "rotation_matrix"]


class RandomFlip:
    """Mirror each listed spatial axis independently with probability ``p``.

    Args:
        axes: spatial axes to consider; None = all.
        p: flip probability per axis.
    """

    def __init__(self, axes: Sequence[int] | None = None, p: float = 0.5) -> None:
        self.axes = None if axes is None else tuple(axes)
        self.p = check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ndim = check_sample(sample)
        axes = range(ndim) if self.axes is None else resolve_axes(self.axes, ndim, "axes")
        chosen = tuple(a for a in axes if rng.random() < self.p)
        if not chosen:
            return sample
        return spatial_apply(sample, lambda a, kind: np.flip(a, axis=chosen))

    def __repr__(self) -> str:
        return f"RandomFlip(axes={self.axes}, p={self.p})"


class RandomRot90:
    """With probability ``p`` rotate by k·90° (k uniform in {1, 2, 3}) in the plane of two spatial axes.

    Note: k = 1 or 3 swaps the two axes' sizes; use square planes when samples are batched.

    Args:
        axes: the two spatial axes spanning the rotation plane (default: the last two).
        p: probability of rotating.
    """

    def __init__(self, axes: Sequence[int] = (-2, -1), p: float = 0.5) -> None:
        if len(axes) != 2:
            raise ValueError(f"axes must name exactly two spatial axes, got {tuple(axes)}")
        self.axes = tuple(axes)
        self.p = check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ndim = check_sample(sample)
        axes = resolve_axes(self.axes, ndim, "axes")
        if axes[0] == axes[1]:
            raise ValueError(f"axes must be two different spatial axes, got {self.axes}")
        if rng.random() >= self.p:
            return sample
        k = int(rng.integers(1, 4))
        return spatial_apply(sample, lambda a, kind: np.rot90(a, k=k, axes=axes))

    def __repr__(self) -> str:
        return f"RandomRot90(axes={self.axes}, p={self.p})"


def rotation_matrix(ndim: int, angles: dict[tuple[int, int], float]) -> np.ndarray:
    """Product of plane (Givens) rotations; ``angles`` maps an axis pair (i, j) to an angle in radians."""
    rot = np.eye(ndim)
    for (i, j), theta in angles.items():
        g = np.eye(ndim)
        c, s = np.cos(theta), np.sin(theta)
        g[i, i], g[i, j], g[j, i], g[j, j] = c, -s, s, c
        rot = g @ rot
    return rot


class RandomAffine:
    """Random rotation and isotropic scaling about the centre (one resampling for both).

    Args:
        rotate_deg: maximum absolute angle in degrees; angles are uniform in ``[-rotate_deg, rotate_deg]``.
        scale: ``(low, high)`` range of the isotropic magnification (> 1 enlarges the content).
        p: probability of rotating.
        p_scale: probability of scaling (default: ``p``); both are drawn independently.
        planes: for 3D, ``"all"`` rotates in each of the 3 axis planes with its own angle (nnU-Net style),
            ``"random"`` in one randomly chosen plane. 2D always rotates in its single plane.

    Out-of-image samples are filled with 0 (image), 0 (label) and False (mask).
    """

    def __init__(self, rotate_deg: float = 30.0, scale: Sequence[float] = (0.7, 1.4), p: float = 0.2,
                 p_scale: float | None = None, planes: str = "all") -> None:
        if rotate_deg < 0:
            raise ValueError(f"rotate_deg must be >= 0, got {rotate_deg}")
        if planes not in ("all", "random"):
            raise ValueError(f"planes must be 'all' or 'random', got {planes!r}")
        self.rotate_deg = float(rotate_deg)
        self.scale = check_range("scale", scale, positive=True)
        self.p = check_p("p", p)
        self.p_scale = self.p if p_scale is None else check_p("p_scale", p_scale)
        self.planes = planes

    def sample_matrix(self, ndim: int, rng: np.random.Generator) -> np.ndarray | None:
        """Draw the forward (output = A @ input about the centre) matrix, or None when nothing was drawn."""
        do_rot = self.rotate_deg > 0 and rng.random() < self.p
        do_scale = self.scale != (1.0, 1.0) and rng.random() < self.p_scale
        if not (do_rot or do_scale):
            return None
        forward = np.eye(ndim)
        if do_rot:
            pairs = list(itertools.combinations(range(ndim), 2))
            if self.planes == "random":
                pairs = [pairs[int(rng.integers(len(pairs)))]]
            angles = {pr: np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg)) for pr in pairs}
            forward = rotation_matrix(ndim, angles)
        if do_scale:
            forward = forward * rng.uniform(*self.scale)
        return forward

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ndim = check_sample(sample)
        forward = self.sample_matrix(ndim, rng)
        if forward is None:
            return sample
        inverse = np.linalg.inv(forward)  # output coordinate -> input coordinate
        centre = (np.asarray(sample["image"].shape[1:], dtype=np.float64) - 1.0) / 2.0
        offset = centre - inverse @ centre

        def warp(a: np.ndarray, kind: str) -> np.ndarray:
            if kind == "image":
                return ndi.affine_transform(a.astype(np.float32), inverse, offset, order=1, mode="constant", cval=0.0)
            src = a.astype(np.uint8) if kind == "mask" else a
            res = ndi.affine_transform(src, inverse, offset, order=0, mode="constant", cval=0)
            return res.astype(bool) if kind == "mask" else res.astype(np.int64)

        return spatial_apply(sample, warp)

    def __repr__(self) -> str:
        return (f"RandomAffine(rotate_deg={self.rotate_deg}, scale={self.scale}, p={self.p}, p_scale={self.p_scale}, "
                f"planes={self.planes!r})")
