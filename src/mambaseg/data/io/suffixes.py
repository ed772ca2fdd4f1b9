"""The one suffix registry of the data floor: which file suffixes mambaseg reads, and as what.

- raster (Pillow, always 2D): :data:`RASTER_SUFFIXES`; netpbm (``.ppm``/``.pgm``/``.pbm``/``.pnm``, binary P4-P6
  and plain P1-P3) is how STARE ships its fundus photos and labels;
- NIfTI (nibabel, 2D or 3D by the header): :data:`NIFTI_SUFFIXES`;
- ITK (optional SimpleITK: NRRD, MetaImage; 3D): :data:`ITK_SUFFIXES`.

:data:`SUPPORTED_2D` are the suffixes the 2D readers (:mod:`~mambaseg.data.io.raster`) take, :data:`VOLUME_SUFFIXES`
those the volume readers (:mod:`~mambaseg.data.io.volume`) take, :data:`FORMATS` maps every suffix to its format.
:func:`suffix_of` / :func:`stem_of` split a 2D file name (``.nii.gz`` is the one double suffix there),
:func:`volume_suffix` gives a volume's supported suffix (or ``""``), :func:`format_of` any file's format.
"""

from __future__ import annotations

import os
from pathlib import Path

from mambaseg.data.errors import DataError

__all__ = [
    "FORMATS",
    "ITK_SUFFIXES",
    "NIFTI_SUFFIXES",
    "RASTER_SUFFIXES",
    "SUPPORTED_2D",
    "VOLUME_SUFFIXES",
    "format_of",
    "stem_of",
    "suffix_of",
    "volume_suffix",
]

RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: what the volume readers take (longest suffixes first where one ends another)
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
#: what the 2D readers take (in the order their messages have always listed them)
SUPPORTED_2D = RASTER_SUFFIXES + (".nii", ".nii.gz")
#: suffix -> format: ``raster`` (Pillow: always 2D), ``nifti`` and ``itk`` (2D or 3D by their header)
FORMATS: dict[str, str] = {**{s: "raster" for s in RASTER_SUFFIXES}, **{s: "nifti" for s in NIFTI_SUFFIXES},
                           **{s: "itk" for s in ITK_SUFFIXES}}


def suffix_of(path: str | Path) -> str:
    """Lower-case suffix of ``path`` including known double suffixes (``.nii.gz``)."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def stem_of(path: str | Path) -> str:
    """File name without its :func:`suffix_of` suffix (``case_0000.nii.gz`` -> ``case_0000``)."""
    name = Path(path).name
    return name[: len(name) - len(suffix_of(name))]


def volume_suffix(path: str | os.PathLike) -> str:
    """The supported suffix of ``path`` (``".nii.gz"``, ``".nrrd"``, ...) or ``""`` if it has none."""
    name = str(path).lower()
    for suf in VOLUME_SUFFIXES:
        if name.endswith(suf):
            return suf
    return ""


def format_of(path: str | os.PathLike) -> str:
    """The format of ``path`` by its (longest) suffix; DataError naming the file when it is not supported."""
    name = Path(path).name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(FORMATS)}")
