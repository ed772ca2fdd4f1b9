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

The transforms live in :mod:`.base` (sample check, :class:`Compose`), :mod:`.spatial`, :mod:`.intensity` and
:mod:`.fundus`; every name is importable from here.
"""

from __future__ import annotations

from .base import Compose, Transform, check_sample
from .fundus import RandomColorShift, RandomIllumination, RandomRimDarkening, ZeroOutsideMask, fundus_augmentation
from .intensity import RandomBlur, RandomIntensity
from .spatial import RandomAffine, RandomFlip, RandomRot90, rotation_matrix

__all__ = [
    "AUGMENTATION_STRENGTHS",
    "Compose",
    "RandomAffine",
    "RandomBlur",
    "RandomColorShift",
    "RandomFlip",
    "RandomIllumination",
    "RandomIntensity",
    "RandomRimDarkening",
    "RandomRot90",
    "Transform",
    "ZeroOutsideMask",
    "check_sample",
    "default_augmentation",
    "fundus_augmentation",
    "rotation_matrix",
]


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
