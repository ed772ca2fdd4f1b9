"""N-D data augmentation on sample dicts (2D ``[C, H, W]`` and 3D ``[C, D, H, W]``).

A sample is ``{'image': float32 (C, *S), 'label': int64 S (optional), 'mask': bool S (optional), ...}``; other keys
(e.g. ``meta``) pass through untouched. Every transform is a callable ``t(sample, rng) -> sample`` taking an explicit
``numpy.random.Generator``, never mutates its input, and applies the same geometric change to image, label and
mask (image: linear interpolation, label/mask: nearest neighbour). Spatial ``axes`` arguments index the spatial
dimensions ``S`` (0 = first spatial axis; negative values count from the end), not the channel axis.

Returned arrays are C-contiguous (so ``torch.from_numpy`` works after flips).

:func:`default_augmentation` builds a pipeline modelled on nnU-Net's defaults (the batchgenerators settings used
by SegMamba, spec §1.4): rotation (±180° in 2D, ±30° per plane in 3D, p 0.2), isotropic scaling 0.7-1.4 (p 0.2),
Gaussian noise (variance 0-0.1, p 0.1), Gaussian blur (σ 0.5-1, p 0.2), brightness ×0.75-1.25 (p 0.15), contrast
(p 0.15), gamma 0.7-1.5 (p 0.3, inverted p 0.1) and mirroring of every axis (p 0.5 each). Not included:
nnU-Net's low-resolution simulation and elastic deformation.

:func:`fundus_augmentation` (``data.augment: strong_fundus``) targets fundus photos from other cameras: colour
mixing, smooth uneven illumination and field-of-view rim darkening (applied to the raw intensities the z-scored image
stands for), brightness/contrast/gamma, blur, noise, scale 0.8-1.25 and rotation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "Compose",
    "RandomAffine",
    "RandomBlur",
    "RandomColorShift",
    "RandomFlip",
    "RandomIllumination",
    "RandomIntensity",
    "RandomRimDarkening",
    "RandomRot90",
    "ZeroOutsideMask",
    "check_sample",
    "default_augmentation",
    "fundus_augmentation",
]

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


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")
    return float(p)


def _check_range(name: str, value: Sequence[float], positive: bool = False) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi or (positive and lo <= 0):
        raise ValueError(f"{name} must be a (low, high) pair with low <= high{' and low > 0' if positive else ''}, "
                         f"got {tuple(value)}")
    return lo, hi


def _resolve_axes(axes: Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} entry {a} is out of range for a sample with {ndim} spatial dims")
        out.append(a % ndim)
    return tuple(out)


def _spatial_apply(sample: dict, fn: Callable[[np.ndarray, str], np.ndarray]) -> dict:
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


class RandomFlip:
    """Mirror each listed spatial axis independently with probability ``p``.

    Args:
        axes: spatial axes to consider; None = all.
        p: flip probability per axis.
    """

    def __init__(self, axes: Sequence[int] | None = None, p: float = 0.5) -> None:
        self.axes = None if axes is None else tuple(axes)
        self.p = _check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ndim = check_sample(sample)
        axes = range(ndim) if self.axes is None else _resolve_axes(self.axes, ndim, "axes")
        chosen = tuple(a for a in axes if rng.random() < self.p)
        if not chosen:
            return sample
        return _spatial_apply(sample, lambda a, kind: np.flip(a, axis=chosen))

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
        self.p = _check_p("p", p)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ndim = check_sample(sample)
        axes = _resolve_axes(self.axes, ndim, "axes")
        if axes[0] == axes[1]:
            raise ValueError(f"axes must be two different spatial axes, got {self.axes}")
        if rng.random() >= self.p:
            return sample
        k = int(rng.integers(1, 4))
        return _spatial_apply(sample, lambda a, kind: np.rot90(a, k=k, axes=axes))

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
        self.scale = _check_range("scale", scale, positive=True)
        self.p = _check_p("p", p)
        self.p_scale = self.p if p_scale is None else _check_p("p_scale", p_scale)
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

        return _spatial_apply(sample, warp)

    def __repr__(self) -> str:
        return (f"RandomAffine(rotate_deg={self.rotate_deg}, scale={self.scale}, p={self.p}, p_scale={self.p_scale}, "
                f"planes={self.planes!r})")


class RandomIntensity:
    """Image-only intensity changes, each drawn independently per channel (nnU-Net defaults).

    In order: multiplicative brightness, contrast around the channel mean (result clipped to the original range),
    gamma (applied on the channel rescaled to [0, 1], then scaled back; with probability ``p_invert_gamma`` on the
    inverted image), additive Gaussian noise with variance uniform in ``noise_var``.

    Args:
        brightness, contrast, gamma, noise_var: ``(low, high)`` ranges.
        p_brightness, p_contrast, p_gamma, p_invert_gamma, p_noise: probabilities.
    """

    def __init__(self, brightness: Sequence[float] = (0.75, 1.25), p_brightness: float = 0.15,
                 contrast: Sequence[float] = (0.75, 1.25), p_contrast: float = 0.15,
                 gamma: Sequence[float] = (0.7, 1.5), p_gamma: float = 0.3, p_invert_gamma: float = 0.1,
                 noise_var: Sequence[float] = (0.0, 0.1), p_noise: float = 0.1) -> None:
        self.brightness = _check_range("brightness", brightness)
        self.contrast = _check_range("contrast", contrast)
        self.gamma = _check_range("gamma", gamma, positive=True)
        self.noise_var = _check_range("noise_var", noise_var)
        if self.noise_var[0] < 0:
            raise ValueError(f"noise_var must be non-negative, got {tuple(noise_var)}")
        self.p_brightness = _check_p("p_brightness", p_brightness)
        self.p_contrast = _check_p("p_contrast", p_contrast)
        self.p_gamma = _check_p("p_gamma", p_gamma)
        self.p_invert_gamma = _check_p("p_invert_gamma", p_invert_gamma)
        self.p_noise = _check_p("p_noise", p_noise)

    def _channel(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p_brightness:
            x = x * rng.uniform(*self.brightness)
        if rng.random() < self.p_contrast:
            mean, lo, hi = x.mean(), x.min(), x.max()
            x = np.clip((x - mean) * rng.uniform(*self.contrast) + mean, lo, hi)
        for invert, p in ((True, self.p_invert_gamma), (False, self.p_gamma)):
            if rng.random() < p:
                x = -x if invert else x
                mean, std, lo, hi = x.mean(), x.std(), x.min(), x.max()
                rng_ = hi - lo
                if rng_ > 0:
                    x = ((x - lo) / rng_) ** rng.uniform(*self.gamma) * rng_ + lo
                    if x.std() > 0:  # keep the channel statistics (nnU-Net retain_stats)
                        x = (x - x.mean()) / x.std() * std + mean
                x = -x if invert else x
        if rng.random() < self.p_noise:
            var = rng.uniform(*self.noise_var)
            x = x + rng.normal(0.0, np.sqrt(var), size=x.shape)
        return x

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        out = dict(sample)
        image = np.asarray(sample["image"], dtype=np.float32)
        out["image"] = np.ascontiguousarray(np.stack([self._channel(ch.astype(np.float64), rng) for ch in image]),
                                            dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return (f"RandomIntensity(brightness={self.brightness}@{self.p_brightness}, contrast={self.contrast}"
                f"@{self.p_contrast}, gamma={self.gamma}@{self.p_gamma}/{self.p_invert_gamma}, "
                f"noise_var={self.noise_var}@{self.p_noise})")


class RandomBlur:
    """With probability ``p`` per sample, blur each channel (with probability ``p_channel``) by a Gaussian of
    σ uniform in ``sigma`` (voxels, image only)."""

    def __init__(self, sigma: Sequence[float] = (0.5, 1.0), p: float = 0.2, p_channel: float = 0.5) -> None:
        self.sigma = _check_range("sigma", sigma, positive=True)
        self.p = _check_p("p", p)
        self.p_channel = _check_p("p_channel", p_channel)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        chans = []
        for ch in np.asarray(sample["image"], dtype=np.float32):
            chans.append(ndi.gaussian_filter(ch, rng.uniform(*self.sigma)) if rng.random() < self.p_channel else ch)
        out["image"] = np.ascontiguousarray(np.stack(chans), dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomBlur(sigma={self.sigma}, p={self.p}, p_channel={self.p_channel})"


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
        self.p = _check_p("p", p)

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
        self.strength = _check_range("strength", strength)
        self.offset_ratio = _check_range("offset_ratio", offset_ratio)
        if grid < 2:
            raise ValueError(f"grid must be >= 2, got {grid}")
        self.grid = int(grid)
        self.p = _check_p("p", p)

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
        self.depth = _check_range("depth", depth)
        self.width = _check_range("width", width, positive=True)
        self.offset_ratio = _check_range("offset_ratio", offset_ratio)
        if not (0 <= self.depth[0] and self.depth[1] < 1):
            raise ValueError(f"depth must lie in [0, 1), got {tuple(depth)}")
        self.p = _check_p("p", p)

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


AUGMENTATION_STRENGTHS = ("none", "light", "default", "strong", "strong_fundus")


def default_augmentation(spatial_dims: int, strength: str = "default") -> Compose:
    """nnU-Net-like augmentation pipeline (see the module docstring for the default values).

    Args:
        spatial_dims: 2 or 3.
        strength: ``"none"`` (empty pipeline), ``"light"`` (flips, ±15° rotation, 0.85-1.15 scale, brightness only),
            ``"default"`` (nnU-Net defaults), ``"strong"`` (default ranges, doubled probabilities) or
            ``"strong_fundus"`` (:func:`fundus_augmentation`).

    Returns:
        A :class:`Compose` to call as ``aug(sample, rng)``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if strength not in AUGMENTATION_STRENGTHS:
        raise ValueError(f"strength must be one of {AUGMENTATION_STRENGTHS}, got {strength!r}")
    if strength == "none":
        return Compose([])
    if strength == "strong_fundus":
        return fundus_augmentation(spatial_dims)
    if strength == "light":
        return Compose([
            RandomAffine(rotate_deg=15.0, scale=(0.85, 1.15), p=0.2),
            RandomIntensity(p_contrast=0.0, p_gamma=0.0, p_invert_gamma=0.0, p_noise=0.0),
            RandomFlip(p=0.5),
        ])
    k = 2.0 if strength == "strong" else 1.0
    return Compose([
        RandomAffine(rotate_deg=180.0 if spatial_dims == 2 else 30.0, scale=(0.7, 1.4), p=0.2 * k),
        RandomIntensity(p_brightness=0.15 * k, p_contrast=0.15 * k, p_gamma=0.3 * k, p_invert_gamma=0.1 * k,
                        p_noise=0.1 * k),
        RandomBlur(p=0.2 * k),
        RandomFlip(p=0.5),
    ])
