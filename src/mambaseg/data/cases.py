"""One entry point for listing a dataset's cases, 2D or 3D: :func:`list_cases` picks the layout's reader (one module
per layout in :mod:`mambaseg.data.layouts`: ``drive``, ``folder2d``, ``nnunet`` (2D and 3D), ``msd``, ``brats``,
``synapse``; the volume layouts through :func:`mambaseg.data.layouts.detect3d.list_cases3d`) and returns its case
records (:class:`~mambaseg.data.records.Case2D` or :class:`~mambaseg.data.records.Case3D`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import LAYOUTS_2D
from .errors import DataError
from .layouts.case_folders import CaseFolderSpec
from .layouts.detect3d import detect_layout3d, list_cases3d
from .layouts.drive import DRIVE_SPLITS, drive_cases
from .layouts.folder2d import folder2d_cases
from .layouts.nnunet import nnunet2d_cases, nnunet_is_2d
from .records import Case2D, Case3D

__all__ = ["detect_layout", "is_2d_layout", "list_cases"]

_TRAIN = ("train", "training")


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of the dataset folder ``root``: ``drive`` (``training/images`` or ``test/images``), ``folder2d``
    (``images/``), else a volume layout (``msd``, ``nnunet``, ``brats``, ``synapse``, ``btcv``).

    Raises:
        DataError: ``root`` is missing or matches no layout (one line naming it).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if any((root / s / "images").is_dir() for s in DRIVE_SPLITS):
        return "drive"
    if (root / "images").is_dir():
        return "folder2d"
    return detect_layout3d(root)


def is_2d_layout(layout: str, root: str | os.PathLike = ".") -> bool:
    """True for the 2D layouts, and for ``nnunet`` when the dataset's ``file_ending`` is an image format."""
    return layout in LAYOUTS_2D or (layout == "nnunet" and nnunet_is_2d(root))


def list_cases(root: str | os.PathLike, layout: str | None = None,
               split: str = "train", spec: CaseFolderSpec | None = None) -> list[Case2D] | list[Case3D]:
    """The cases of ``root`` in ``layout`` (detected when None); ``split`` is ``train`` (``training``) or ``test``
    (DRIVE: the folder); ``spec``: the channel and label patterns of ``layout: case_folders``."""
    layout = layout or detect_layout(root)
    if split not in (*_TRAIN, "test"):
        raise ValueError(f"split must be train (training) or test, got {split!r}")
    train = split in _TRAIN
    if layout == "drive" or layout == "synthetic_drive":
        return drive_cases(root, split="training" if train else "test")
    if layout == "folder2d":
        return folder2d_cases(root)
    if layout == "nnunet" and nnunet_is_2d(root):
        return nnunet2d_cases(root, split="train" if train else "test")
    return list_cases3d(Path(root), layout=layout, split="train" if train else "test", spec=spec)
