"""Reading any supported file, 2D or 3D.

:func:`array_dims` says whether a file holds a 2D image or a 3D volume (by its format in
:data:`~mambaseg.data.io.suffixes.FORMATS`, and from the header alone for volume formats: ``H x W`` or ``H x W x 1``
is 2D), and :func:`read_array` / :func:`read_label_array` read any supported file as ``(array (C, *S), meta)`` /
``(labels (*S), meta)``, with ``meta["spatial_dims"]``. 2D files go through :mod:`mambaseg.data.io.raster` (Pillow,
2D NIfTI), volumes through :mod:`mambaseg.data.io.volume` (NIfTI, NRRD, MHA/MHD), so every check of those readers
applies.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mambaseg.data.io.headers import volume_header
from mambaseg.data.io.raster import read_image, read_label
from mambaseg.data.io.suffixes import format_of
from mambaseg.data.io.volume import read_volume, read_volume_label

__all__ = ["array_dims", "read_array", "read_label_array"]


def array_dims(path: str | os.PathLike) -> int:
    """2 for a 2D image (any raster file; a volume format whose header declares ``H x W`` or ``H x W x 1``), else 3.
    Only the header of a volume is read."""
    if format_of(path) == "raster":
        return 2
    shape = volume_header(path, label=True)["shape"]
    return 2 if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1) else 3


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Any supported image as float32 ``(C, *S)`` (``(C, H, W)`` or ``(C, X, Y, Z)``) and its ``meta`` (the 2D or
    3D reader's, plus ``spatial_dims``)."""
    dims = array_dims(path)
    arr, meta = read_image(path) if dims == 2 else read_volume(path)
    return arr, dict(meta, spatial_dims=dims)


def read_label_array(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Any supported label map as int64 ``(*S)`` and its ``meta`` (plus ``spatial_dims``); values checked against
    ``num_classes`` when given."""
    dims = array_dims(path)
    arr, meta = read_label(path, num_classes) if dims == 2 else read_volume_label(path, num_classes)
    return arr, dict(meta, spatial_dims=dims)
