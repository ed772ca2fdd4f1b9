"""The Synapse multi-organ files of TransUNet (``datasets/README.md``): ``train_npz/caseXXXX_sliceYYY.npz`` 2D slices
(keys ``image``, ``label``) and ``test_vol_h5/caseXXXX.npy.h5`` volumes (datasets ``image``, ``label``, slice axis
first; h5py is optional). Which files form a case is :mod:`mambaseg.data.layouts.synapse`'s business."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.utils.optional import MissingDependency, require

__all__ = ["load_h5", "load_npz_slices"]


def load_h5(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A ``caseXXXX.npy.h5`` volume (datasets ``image``, ``label``, slice axis first) -> ``(image (1, H, W, Z),
    label (H, W, Z), {})``."""
    try:
        h5py = require("h5py", purpose=f"{path}: reading .h5")
    except MissingDependency as e:
        raise DataError(str(e)) from None
    try:
        with h5py.File(path, "r") as f:
            image, label = np.asarray(f["image"]), np.asarray(f["label"])
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: cannot read datasets 'image' and 'label' ({err})") from None
    if image.ndim != 3 or image.shape != label.shape:
        raise DataError(f"{path}: image {image.shape} / label {label.shape}, expected equal 3D (Z, H, W) shapes")
    return np.moveaxis(image, 0, -1)[None], np.moveaxis(label, 0, -1), {}


def load_npz_slices(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """z-ordered ``caseXXXX_sliceYYY.npz`` files (keys ``image``, ``label``) -> ``(image (1, H, W, Z),
    label (H, W, Z), {})``."""
    imgs, labs = [], []
    for p in paths:
        try:
            with np.load(p) as z:
                imgs.append(np.asarray(z["image"]))
                labs.append(np.asarray(z["label"]))
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{p}: cannot read keys 'image' and 'label' ({err})") from None
        if imgs[-1].ndim != 2 or imgs[-1].shape != labs[-1].shape or imgs[-1].shape != imgs[0].shape:
            raise DataError(f"{p}: image {imgs[-1].shape} / label {labs[-1].shape}, expected equal 2D slices "
                            f"of shape {imgs[0].shape}")
    return np.stack(imgs, -1)[None], np.stack(labs, -1), {}
