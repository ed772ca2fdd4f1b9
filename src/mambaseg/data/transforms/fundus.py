"""Augmentation for fundus photos from other cameras (``data.augment: strong_fundus``, :func:`fundus_augmentation`):
colour mixing, smooth uneven illumination and field-of-view rim darkening, applied to the raw intensities the
z-scored image stands for."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .base import Compose, check_p, check_range, check_sample
from .intensity import RandomBlur, RandomIntensity
from .spatial import RandomAffine, RandomFlip

__all__ = ["RandomColorShift", "RandomIllumination", "RandomRimDarkening", "ZeroOutsideMask", "fundus_augmentation"]


def _raw_space_gain(x: np.ndarray, gain: np.ndarray, offset_ratio: float) -> np.ndarray:
    """Multiply the *raw* intensities of a z-scored channel ``x`` by ``gain``: with raw = mean + std * x and
    ``offset_ratio`` = mean / std of the raw channel, the new z-scored value is ``gain * x + (gain - 1) * ratio``."""
    return gain * x + (gain - 1.0) * offset_ratio


class RandomColorShift:
    """Camera colour differences on z-scored channels: with probability ``p`` mix the channels (matrix identity +
    uniform off-diagonal terms in ``[-mix, mix]``, rows renormalised) and add a per-channel offset uniform in
    ``[-shift, shift]`` (z units). Single-channel images only get the offset. Image only."""

    def __init__(self, mix: float = 0.15, shift: float = 0.3, p: float = 0.5) -> None:
        if mix < 0 or shift < 0:
            raise ValueError(f"mix and shift must be >= 0, got {mix}, {shift}")
        self.mix, self.shift = float(mix), float(shift)
        self.p = check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        if rng.random() >= self.p:
            return sample
        image = np.asarray(sample["image"], dtype=np.float64)
        c = image.shape[0]
        mat = np.eye(c)
        if c > 1:
            mat = mat + rng.uniform(-self.mix, self.mix, size=(c, c)) * (1.0 - np.eye(c))
            mat = mat / mat.sum(axis=1, keepdims=True)
        offset = rng.uniform(-self.shift, self.shift, size=c)
        mixed = np.tensordot(mat, image, axes=(1, 0)) + offset.reshape((c,) + (1,) * (image.ndim - 1))
        out = dict(sample)
        out["image"] = np.ascontiguousarray(mixed, dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomColorShift(mix={self.mix}, shift={self.shift}, p={self.p})"


class RandomIllumination:
    """Uneven illumination (dark regions) of another camera: with probability ``p`` a smooth multiplicative field,
    ``exp(strength * n)`` with ``n`` a random linear ramp plus a cubic upsampling of a ``grid``-per-axis random
    lattice (scaled to max |n| = 1, strength uniform in ``strength``), applied to the raw intensities that the
    z-scored image stands for (see :func:`_raw_space_gain`; mean/std ratio of the raw channel uniform in
    ``offset_ratio``; fundus green channels are around 2-4). Same field for every channel. Image only."""

    def __init__(self, strength: Sequence[float] = (0.1, 0.5), grid: int = 3,
                 offset_ratio: Sequence[float] = (1.5, 3.5), p: float = 0.3) -> None:
        self.strength = check_range("strength", strength)
        self.offset_ratio = check_range("offset_ratio", offset_ratio)
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        self.grid = int(grid)
        self.p = check_p("p", p)

    def field(self, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """A log-gain field ``n`` of ``shape`` with max |n| = 1."""
        lattice = rng.normal(size=(self.grid,) * len(shape))
        coords = np.meshgrid(*[np.linspace(0, self.grid - 1, s) for s in shape], indexing="ij")
        n = ndi.map_coordinates(lattice, coords, order=3, mode="nearest")
        ramp = sum(rng.normal() * (g / max(self.grid - 1, 1) - 0.5) for g in coords)
        n = n + 2.0 * ramp
        peak = np.abs(n).max()
        return n / peak if peak > 0 else n

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        if rng.random() >= self.p:
            return sample
        image = np.asarray(sample["image"], dtype=np.float64)
        gain = np.exp(rng.uniform(*self.strength) * self.field(image.shape[1:], rng))
        ratio = rng.uniform(*self.offset_ratio)
        out = dict(sample)
        out["image"] = np.ascontiguousarray(_raw_space_gain(image, gain[None], ratio), dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return (f"RandomIllumination(strength={self.strength}, grid={self.grid}, offset_ratio={self.offset_ratio}, "
                f"p={self.p})")


class RandomRimDarkening:
    """Darkening along the field-of-view rim (vignetting of other fundus cameras): with probability ``p`` the raw
    intensities are multiplied by ``1 - depth * exp(-d / width)``, ``d`` = distance (pixels) to the nearest pixel
    outside ``sample['mask']`` (depth uniform in ``depth``, width in ``width``; see :func:`_raw_space_gain`).
    Does nothing without a mask or when the patch holds no FOV edge. Image only."""

    def __init__(self, depth: Sequence[float] = (0.2, 0.6), width: Sequence[float] = (4.0, 25.0),
                 offset_ratio: Sequence[float] = (1.5, 3.5), p: float = 0.3) -> None:
        self.depth = check_range("depth", depth)
        self.width = check_range("width", width, positive=True)
        self.offset_ratio = check_range("offset_ratio", offset_ratio)
        if not (0 <= self.depth[0] and self.depth[1] < 1):
            raise ValueError(f"depth must lie in [0, 1), got {tuple(depth)}")
        self.p = check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        if rng.random() >= self.p:
            return sample
        mask = sample.get("mask")
        if mask is None or mask.all() or not mask.any():
            return sample
        depth, width = rng.uniform(*self.depth), rng.uniform(*self.width)
        ratio = rng.uniform(*self.offset_ratio)
        dist = ndi.distance_transform_edt(mask)
        gain = 1.0 - depth * np.exp(-dist / width)
        out = dict(sample)
        image = np.asarray(sample["image"], dtype=np.float64)
        out["image"] = np.ascontiguousarray(_raw_space_gain(image, gain[None], ratio), dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomRimDarkening(depth={self.depth}, width={self.width}, p={self.p})"


class ZeroOutsideMask:
    """Set the image to 0 outside ``sample['mask']`` (where fundus normalisation puts it), e.g. after intensity
    changes; no-op without a mask."""

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        mask = sample.get("mask")
        if mask is None or mask.all():
            return sample
        out = dict(sample)
        image = np.array(sample["image"], dtype=np.float32)
        image[:, ~np.asarray(mask, dtype=bool)] = 0.0
        out["image"] = image
        return out

    def __repr__(self) -> str:
        return "ZeroOutsideMask()"


def fundus_augmentation(spatial_dims: int = 2) -> Compose:
    """``strong_fundus``: augmentation for fundus photos from other cameras (on z-scored images).

    Geometry (image, label and mask alike): rotation ±180° (p 0.5), isotropic scale 0.8-1.25 (p 0.5), mirroring
    (p 0.5 per axis). Intensity (image only): colour mixing/offset (p 0.5), smooth uneven illumination (p 0.3),
    FOV-rim darkening (p 0.3), brightness ×0.7-1.3 and contrast 0.65-1.5 (p 0.3 each), gamma 0.6-1.6 (p 0.3),
    Gaussian blur σ 0.5-1.5 on all channels (p 0.25), Gaussian noise (variance 0-0.05, p 0.15); finally the image
    is set to 0 outside the FOV mask again. All randomness comes from the generator passed to the call.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return Compose([
        RandomAffine(rotate_deg=180.0 if spatial_dims == 2 else 30.0, scale=(0.8, 1.25), p=0.5),
        RandomFlip(p=0.5),
        RandomColorShift(p=0.5),
        RandomIllumination(p=0.3),
        RandomRimDarkening(p=0.3),
        RandomIntensity(brightness=(0.7, 1.3), p_brightness=0.3, contrast=(0.65, 1.5), p_contrast=0.3,
                        gamma=(0.6, 1.6), p_gamma=0.3, p_invert_gamma=0.0, noise_var=(0.0, 0.05), p_noise=0.15),
        RandomBlur(sigma=(0.5, 1.5), p=0.25, p_channel=1.0),
        ZeroOutsideMask(),
    ])
