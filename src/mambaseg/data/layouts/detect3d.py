"""Which volume layout a dataset folder is (:func:`detect_layout3d`) and its cases (:func:`list_cases3d`): the one
dispatch over the 3D layout modules (:mod:`~mambaseg.data.layouts.msd`, :mod:`~mambaseg.data.layouts.nnunet`,
:mod:`~mambaseg.data.layouts.brats`, :mod:`~mambaseg.data.layouts.synapse`). :func:`mambaseg.data.cases.list_cases`
covers the 2D layouts too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mambaseg.data.errors import DataError
from mambaseg.data.layouts.brats import brats_cases, brats_scheme
from mambaseg.data.layouts.case_folders import CaseFolderSpec, case_folder_cases
from mambaseg.data.layouts.dataset_json import read_dataset_json
from mambaseg.data.layouts.msd import msd_cases
from mambaseg.data.layouts.nnunet import nnunet_cases
from mambaseg.data.layouts.synapse import synapse_cases
from mambaseg.data.records import Case3D, is_visible

__all__ = ["detect_layout3d", "list_cases3d"]


def detect_layout3d(root: str | os.PathLike) -> str:
    """``"msd"``, ``"nnunet"``, ``"brats"``, ``"synapse"`` or ``"btcv"`` for the dataset folder ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "dataset.json").is_file():
        return read_dataset_json(root)["style"]
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nnunet"
    if (root / "test_vol_h5").is_dir() or (root / "train_npz").is_dir():
        return "synapse"
    if any(p.is_dir() and is_visible(p) and brats_scheme(p) for p in root.iterdir()):
        return "brats"
    if next((p for p in root.rglob("img*.nii*") if re.match(r"^img\d+\.nii", p.name)), None) is not None:
        return "btcv"
    raise DataError(f"{root}: unknown layout, expected training/images (DRIVE), images/ + labels/ (folder2d), "
                    "dataset.json/imagesTr (MSD, nnU-Net), BraTS case folders, Synapse train_npz/test_vol_h5 or BTCV "
                    "img*.nii.gz")


def list_cases3d(root: str | os.PathLike, layout: str | None = None, split: str = "train",
                 spec: CaseFolderSpec | None = None) -> list[Case3D]:
    """Cases of ``root`` for ``layout`` (auto-detected when None); ``layout: case_folders`` needs the ``spec`` that
    names the channel and label files (:func:`~mambaseg.data.layouts.case_folders.case_folder_spec`)."""
    layout = layout or detect_layout3d(root)
    if layout == "case_folders":
        if spec is None:
            raise ValueError("layout case_folders needs a CaseFolderSpec (spec=...)")
        return case_folder_cases(root, spec)
    if layout == "nnunet" and (Path(root) / "dataset.json").is_file():
        return nnunet_cases(root, split)
    if layout in ("msd", "nnunet"):
        return msd_cases(root, split)
    if layout == "brats":
        return brats_cases(root)
    if layout in ("synapse", "btcv", "synapse_npz", "synapse_h5"):
        source = {"btcv": "btcv", "synapse_npz": "npz", "synapse_h5": "h5"}.get(layout)
        return synapse_cases(root, split, source)
    raise ValueError(f"layout must be one of msd, nnunet, brats, case_folders, synapse, synapse_npz, synapse_h5, "
                     f"btcv, got {layout!r}")
