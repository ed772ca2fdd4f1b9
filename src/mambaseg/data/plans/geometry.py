"""Geometry of a volume plan: reorientation to RAS (nibabel orientation transforms, an exact voxel permutation/flip),
the crop to the non-zero bounding box, and resampling (scipy ``zoom``, ``grid_mode=True`` i.e. voxel extents aligned:
cubic for images, linear interpolation of one-hot channels + argmax for labels)."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["apply_ornt", "crop", "nonzero_bbox", "ras_transform", "resample_image", "resample_label"]


def ras_transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform ``(3, 2)`` taking voxel axes of ``affine`` to RAS+ (closest axis permutation)."""
    return nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))


def apply_ornt(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a ``(3, 2)`` orientation transform to the last three axes of ``arr`` (``(X,Y,Z)`` or ``(C,X,Y,Z)``)."""
    if arr.ndim == 3:
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, ornt))
    return np.stack([apply_ornt(a, ornt) for a in arr])


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """``[[lo, hi), ...]`` per spatial axis of the voxels non-zero in any channel (full extent if none)."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return [[0, s] for s in mask.shape]
    bbox = []
    for ax in range(3):
        idx = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != ax)))
        bbox.append([int(idx[0]), int(idx[-1]) + 1])
    return bbox


def crop(arr: np.ndarray, bbox: list[list[int]]) -> np.ndarray:
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    return arr[(Ellipsis, *sl)]


def resample_image(image: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """``(C, *S)`` float -> ``(C, *new_shape)`` with scipy spline ``order``; voxel extents aligned (``grid_mode``)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(image.shape[1:]) == new_shape:
        return image.astype(np.float32, copy=False)
    zoom = np.asarray(new_shape, dtype=np.float64) / np.asarray(image.shape[1:], dtype=np.float64)
    out = [ndimage.zoom(c.astype(np.float32, copy=False), zoom, order=order, mode="nearest", grid_mode=True)
           for c in image]
    return np.stack(out).astype(np.float32, copy=False)


def resample_label(label: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """``(*S)`` int label map -> ``(*new_shape)``: linear interpolation of each class's one-hot mask, then argmax."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(label.shape) == new_shape:
        return label.astype(np.int64, copy=False)
    zoom = np.asarray(new_shape, dtype=np.float64) / np.asarray(label.shape, dtype=np.float64)
    best = np.full(new_shape, -1.0, dtype=np.float32)
    out = np.zeros(new_shape, dtype=np.int64)
    for cls in np.unique(label):
        score = ndimage.zoom((label == cls).astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
        better = score > best
        out[better] = cls
        best[better] = score[better]
    return out
