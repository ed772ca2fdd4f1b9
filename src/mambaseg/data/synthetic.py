"""Synthetic fundus-like vessel images and a synthetic DRIVE folder, for tests and smoke runs without real data.

:func:`make_vessel_image` draws branching vessel trees: root vessels leave the optic disc, each branch is a random
walk with slowly varying curvature and a tapering radius, and spawns thinner children (radius × 0.55-0.8,
departing at 25-70°). Branches are added breadth-first (thick ones first) until the estimated vessel area reaches a
target drawn in 9.5-12.5 % of the FOV, so the final vessel fraction inside the FOV is DRIVE-like (8-14 %; DRIVE's
1st_manual maps cover ~12.6 %). The background is an orange-red disc with vignetting, low-frequency texture, a
bright optic disc and a darker macula; vessels are darker, mostly in the green channel; Gaussian noise is added.

:func:`write_synthetic_drive` writes these in the DRIVE layout (RGB ``.tif`` images, ``.gif`` 0/255 manual labels
and FOV masks), so every DRIVE reader runs on it. Everything is deterministic for a given seed.

In 3D, :func:`make_phantom` draws an MRI-like head with two adjacent structures (labels 1 and 2, like the
hippocampus' anterior/posterior parts) and :func:`write_phantom_msd` writes such phantoms in the MSD layout on
anisotropic, non-RAS-oriented grids. :func:`make_synthetic` and :func:`write_synthetic` take the dimension as a
parameter (``spatial_dims`` 2 or 3) and call the 2D or 3D generator.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = ["make_phantom", "make_synthetic", "make_vessel_image", "write_phantom_msd", "write_synthetic",
           "write_synthetic_drive"]

logger = logging.getLogger(__name__)

_STEP = 0.5  # centreline sampling step in pixels


def _trace(start: np.ndarray, angle: float, radius: float, length: float, bend: float, rng: np.random.Generator,
           centre: np.ndarray, fov_r: float, min_r: float) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Walk one branch; returns centreline points (n, 2) as (row, col), radii (n,) and child specs."""
    n = max(2, int(length / _STEP))
    pts = np.empty((n, 2))
    rad = np.empty(n)
    p = np.asarray(start, dtype=np.float64).copy()
    r, curv = float(radius), 0.0
    taper = 0.35 / n  # the radius shrinks by ~30 % along a branch
    noise = 0.0015 * np.sqrt(265.0 / fov_r)  # heading noise; same tortuosity relative to the FOV at any size
    next_branch = rng.exponential(10.0 * r + 8.0)
    children = []
    k = 0
    for k in range(n):
        curv = 0.95 * curv + rng.normal(0.0, noise)
        angle += curv + bend
        p += _STEP * np.array([np.sin(angle), np.cos(angle)])
        pts[k], rad[k] = p, r
        r *= 1.0 - taper
        if np.hypot(*(p - centre)) > fov_r * 1.02:
            break
        next_branch -= _STEP
        if next_branch <= 0:
            next_branch = rng.exponential(10.0 * r + 8.0)
            child_r = r * rng.uniform(0.55, 0.8)
            if child_r >= min_r:
                side = rng.choice([-1.0, 1.0])
                child_angle = angle + side * np.deg2rad(rng.uniform(25.0, 70.0))
                child_len = fov_r * rng.uniform(0.25, 0.6) * np.sqrt(child_r / radius)
                children.append((p.copy(), child_angle, child_r, child_len, rng.normal(0.0, 0.4 / fov_r) * _STEP))
                r *= 0.93
    return pts[: k + 1], rad[: k + 1], children


def _render(points: np.ndarray, radii: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Vessel label (bool) and darkening profile in [0, 1] from centreline points with radii.

    Radii are split in bins; per bin an exact Euclidean distance transform to that bin's centreline pixels gives the
    distance d and the radius r of the nearest centreline pixel; label = d <= r, profile = 1 - (d / (r + 0.5))^2.
    """
    label = np.zeros(shape, dtype=bool)
    profile = np.zeros(shape, dtype=np.float64)
    idx = np.round(points).astype(int)
    ok = (idx[:, 0] >= 0) & (idx[:, 0] < shape[0]) & (idx[:, 1] >= 0) & (idx[:, 1] < shape[1])
    idx, radii = idx[ok], radii[ok]
    if not len(radii):
        return label, profile
    edges = np.quantile(radii, np.linspace(0, 1, 6))
    bins = np.clip(np.searchsorted(edges, radii, side="right") - 1, 0, 4)
    for b in np.unique(bins):
        rmap = np.zeros(shape)
        sel = bins == b
        np.maximum.at(rmap, (idx[sel, 0], idx[sel, 1]), radii[sel])
        dist, (ri, ci) = ndi.distance_transform_edt(rmap == 0, return_indices=True)
        near_r = rmap[ri, ci]
        label |= dist <= near_r
        profile = np.maximum(profile, np.clip(1.0 - (dist / (near_r + 0.5)) ** 2, 0.0, 1.0))
    return label, profile


def make_vessel_image(size: Sequence[int] = (256, 256), rng: np.random.Generator | int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one synthetic fundus image with its vessel map and field-of-view mask.

    Args:
        size: ``(H, W)``, each >= 32.
        rng: a generator or an integer seed (None: fresh unseeded generator, i.e. not reproducible).

    Returns:
        ``(image, label, fov)``: image ``(H, W, 3)`` uint8 RGB, label ``(H, W)`` uint8 with values 0/1 (vessels,
        only inside the FOV), fov ``(H, W)`` bool.
    """
    h, w = (int(s) for s in size)
    if len(size) != 2 or min(h, w) < 32:
        raise ValueError(f"size must be (H, W) with both >= 32, got {tuple(size)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    scale = min(h, w) / 565.0
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    fov_r = 0.47 * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rr = np.hypot(yy - centre[0], xx - centre[1])
    fov = rr <= fov_r

    side = rng.choice([-1.0, 1.0])  # optic disc left or right of the centre (left/right eye)
    disc = centre + np.array([rng.normal(0, 0.04) * h, side * rng.uniform(0.45, 0.6) * fov_r])
    disc_r = 0.085 * min(h, w) * rng.uniform(0.9, 1.1)
    macula = centre + np.array([rng.normal(0, 0.03) * h, -side * rng.uniform(0.1, 0.2) * fov_r])

    # vessel trees, breadth first, until the estimated area reaches the target fraction of the FOV
    min_r = max(0.45, 0.6 * scale)
    main_r = max(1.2, 4.5 * scale)
    target = rng.uniform(0.095, 0.125) * fov.sum()
    queue: deque = deque()

    def add_roots() -> None:
        # angle convention: heading (sin a, cos a) in (row, col); base -1 = superior, +1 = inferior.
        # Temporal arcades leave the disc towards the macula (-side) and bend around it; nasal vessels go to +side.
        for base in (-1.0, 1.0):
            arc = base * (np.pi / 2 + side * rng.uniform(0.1, 0.3))
            queue.append((disc.copy(), arc, main_r * rng.uniform(0.9, 1.1), fov_r * 1.6,
                          base * side * rng.uniform(0.8, 1.2) * 0.75 / fov_r * _STEP))
            nasal = base * (np.pi / 2 - side * rng.uniform(0.3, 0.9))
            queue.append((disc.copy(), nasal, main_r * rng.uniform(0.6, 0.8), fov_r * 0.9, 0.0))

    pts_all, rad_all, area, rounds = [], [], 0.0, 0
    add_roots()
    while area < target and rounds < 4:
        if not queue:
            rounds += 1
            add_roots()
        start, angle, radius, length, bend = queue.popleft()
        pts, rad, children = _trace(start, angle, radius, length, bend, rng, centre, fov_r, min_r)
        inside = np.hypot(pts[:, 0] - centre[0], pts[:, 1] - centre[1]) <= fov_r
        area += float(np.sum(2.0 * rad[inside] * _STEP)) * 0.9  # overlaps at junctions make the estimate high
        pts_all.append(pts)
        rad_all.append(rad)
        queue.extend(children)
    label, profile = _render(np.concatenate(pts_all), np.concatenate(rad_all), (h, w))
    label &= fov
    profile *= fov

    # background
    vignette = np.clip(1.0 - 0.45 * (rr / fov_r) ** 2, 0.0, 1.0)
    texture = ndi.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=0.04 * min(h, w))
    texture /= texture.std() + 1e-12
    base_rgb = np.array([0.78, 0.36, 0.12]) * rng.uniform(0.85, 1.1)
    img = vignette[..., None] * base_rgb * (1.0 + 0.05 * texture[..., None])
    disc_bump = np.exp(-(((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2) / (2 * disc_r**2)) ** 1.5)
    img += disc_bump[..., None] * np.array([0.22, 0.45, 0.35])
    mac = np.exp(-((yy - macula[0]) ** 2 + (xx - macula[1]) ** 2) / (2 * (1.3 * disc_r) ** 2))
    img *= 1.0 - 0.25 * mac[..., None]
    # vessels: darker, strongest in green; thin vessels have lower contrast through the profile sampling
    img *= 1.0 - profile[..., None] * np.array([0.15, 0.5, 0.3])
    img += rng.normal(0.0, 0.012, img.shape)
    img = np.where(fov[..., None], img, 0.02 + rng.normal(0.0, 0.004, img.shape))
    image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return image, label.astype(np.uint8), fov


def write_synthetic_drive(root: str | Path, n_train: int = 4, n_test: int = 2, size: Sequence[int] = (256, 256),
                          seed: int = 0) -> Path:
    """Write a synthetic dataset in the DRIVE layout.

    Files: ``training/images/NN_training.tif`` (NN = 21, 22, ...), ``training/1st_manual/NN_manual1.gif``,
    ``training/mask/NN_training_mask.gif``, and ``test/images/MM_test.tif`` (MM = 01, 02, ...) with
    ``test/1st_manual/MM_manual1.gif`` and ``test/mask/MM_test_mask.gif``. Labels and masks are 0/255 grey GIFs.
    Image ``i`` of a split depends only on ``(seed, split, i)``.

    Args:
        root: output folder (created).
        n_train, n_test: number of images per split (>= 0).
        size: ``(H, W)`` of every image.
        seed: base seed.

    Returns:
        ``Path(root)``.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    root = Path(root)
    for split, count, first, code in (("training", n_train, 21, 0), ("test", n_test, 1, 1)):
        for i in range(count):
            cid = f"{first + i:02d}"
            image, label, fov = make_vessel_image(size, np.random.default_rng([seed, code, i]))
            files = {
                root / split / "images" / f"{cid}_{split}.tif": image,
                root / split / "1st_manual" / f"{cid}_manual1.gif": label * np.uint8(255),
                root / split / "mask" / f"{cid}_{split}_mask.gif": fov.astype(np.uint8) * np.uint8(255),
            }
            for path, arr in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                # optimize=False keeps GIFs in mode "L" with values 0/255, exactly like the DRIVE files
                Image.fromarray(arr).save(path, **({"optimize": False} if path.suffix == ".gif" else {}))
    logger.info("wrote synthetic DRIVE (%d training, %d test, size %s) to %s", n_train, n_test, tuple(size), root)
    return root


# ----------------------------------------------------------------------------------------------------------------- 3D
def make_phantom(shape=(40, 48, 36), rng: np.random.Generator | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: float32 image and uint8 label (0 background, 1 and 2 two touching ellipsoids)."""
    rng = np.random.default_rng(rng)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    centre = np.array(shape) / 2 + rng.uniform(-3, 3, 3)
    head = (((grid - np.array(shape) / 2) / (np.array(shape) * 0.45)) ** 2).sum(-1) < 1
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    radii = rng.uniform(3.0, 5.0, 3)
    label = np.zeros(shape, np.uint8)
    for k, sign in ((1, -1.0), (2, 1.0)):
        c = centre + sign * axis * radii.max() * 0.9
        label[(((grid - c) / radii) ** 2).sum(-1) < 1] = k
    image = head * (60 + 10 * rng.standard_normal(shape)) + (label == 1) * 50 + (label == 2) * 90
    return image.astype(np.float32), label


def write_phantom_msd(root: str | Path, n_cases: int = 12, shape=(40, 48, 36), seed: int = 0) -> Path:
    """Write an MSD-style task (``dataset.json``, ``imagesTr``, ``labelsTr``) with anisotropic LPS-like affines."""
    import nibabel as nib

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_cases):
        image, label = make_phantom(shape, rng=seed * 1000 + i)
        affine = np.diag([-1.0, -1.2, 1.5, 1.0])
        affine[:3, 3] = [20.0, 30.0, -10.0]
        name = f"phantom_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Phantom", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior",
            "2": "Posterior"}, "numTraining": n_cases, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


# --------------------------------------------------------------------------------------------- dimension as parameter
def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def make_synthetic(spatial_dims: int, size: Sequence[int] | None = None,
                   rng: np.random.Generator | int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ``(image, label)``: a fundus-like ``(H, W, 3)`` uint8 photo and its vessel map
    (:func:`make_vessel_image`, default 256 x 256) for ``spatial_dims=2``, a ``(X, Y, Z)`` float32 head phantom and
    its two-structure label (:func:`make_phantom`, default 40 x 48 x 36) for 3."""
    if _check_dims(spatial_dims) == 2:
        image, label, _ = make_vessel_image((256, 256) if size is None else size, rng)
        return image, label
    return make_phantom((40, 48, 36) if size is None else tuple(size), rng=0 if rng is None else rng)


def write_synthetic(root: str | Path, spatial_dims: int, **kwargs: Any) -> Path:
    """Write a synthetic dataset: DRIVE layout for ``spatial_dims=2`` (:func:`write_synthetic_drive`), MSD layout
    for 3 (:func:`write_phantom_msd`); ``kwargs`` go to that function."""
    if _check_dims(spatial_dims) == 2:
        return write_synthetic_drive(root, **kwargs)
    return write_phantom_msd(root, **kwargs)
