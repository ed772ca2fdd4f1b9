"""Compatibility facade, kept for one release (issue 11): the 2D layouts now live one module per layout in
:mod:`mambaseg.data.layouts` — DRIVE in :mod:`~mambaseg.data.layouts.drive`, the ``images/`` + ``labels/`` folder in
:mod:`~mambaseg.data.layouts.folder2d`, 2D nnU-Net in :mod:`~mambaseg.data.layouts.nnunet`, :class:`Case2D` in
:mod:`~mambaseg.data.layouts.records`, and case loading / normalisation / FOV estimation in
:mod:`~mambaseg.data.layouts.load2d`. This module only re-exports those names; import them from their new modules
(or list cases through :mod:`mambaseg.data.cases`).
"""

from __future__ import annotations

from mambaseg.data.layouts.drive import DRIVE_SPLITS, drive_cases
from mambaseg.data.layouts.folder2d import folder2d_cases
from mambaseg.data.layouts.load2d import estimate_fov, load_case2d, normalize_image
from mambaseg.data.layouts.nnunet import nnunet2d_cases, nnunet2d_normalization
from mambaseg.data.layouts.records import Case2D

__all__ = [
    "DRIVE_SPLITS",
    "Case2D",
    "drive_cases",
    "estimate_fov",
    "folder2d_cases",
    "load_case2d",
    "nnunet2d_cases",
    "nnunet2d_normalization",
    "normalize_image",
]
