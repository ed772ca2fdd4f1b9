"""The BraTS layout (``layout: brats``): one folder per case.

BraTS 2023: ``<case>/<case>-{t1n,t1c,t2w,t2f}.nii.gz`` (+ ``-seg``); 2020/21: ``_{t1,t1ce,t2,flair}`` (+ ``_seg``,
label 4 -> 3). Channel order [T2w, T2-FLAIR, T1n, T1c] (spec §1.4). Regions WT {1,2,3}, TC {1,3}, ET {3}.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.data.records import Case3D, is_visible
from mambaseg.metrics.volumetric import BRATS_REGIONS  # the label sets evaluation and training share

__all__ = ["BRATS_CHANNELS", "BRATS_LABELS", "BRATS_REGIONS", "brats_cases", "brats_region_masks"]

BRATS_LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
BRATS_CHANNELS = ("t2w", "t2f", "t1n", "t1c")
_BRATS_NAMING = {  # scheme -> (separator, suffix per channel in BRATS_CHANNELS order, label suffix)
    "2023": ("-", ("t2w", "t2f", "t1n", "t1c"), "seg"),
    "2021": ("_", ("t2", "flair", "t1", "t1ce"), "seg"),
}


def brats_scheme(folder: Path) -> str | None:
    names = [p.name.lower() for p in folder.iterdir() if is_visible(p)]
    if any(re.search(r"-t(1n|1c|2w|2f)\.nii(\.gz)?$", n) for n in names):
        return "2023"
    if any(re.search(r"_(t1|t1ce|t2|flair)\.nii(\.gz)?$", n) for n in names):
        return "2021"
    return None


def _find(folder: Path, stem: str) -> Path | None:
    for suf in (".nii.gz", ".nii"):
        p = folder / f"{stem}{suf}"
        if p.is_file():
            return p
    return None


def brats_cases(root: str | os.PathLike, require_label: bool = False) -> list[Case3D]:
    """BraTS case folders (2023 ``-t1n`` or 2020/21 ``_t1`` naming) in channel order :data:`BRATS_CHANNELS`."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and is_visible(p) and brats_scheme(p))
    if not folders:
        raise DataError(f"{root}: no BraTS case folders (<case>/<case>-t1n.nii.gz or <case>/<case>_t1.nii.gz)")
    cases = []
    for folder in folders:
        scheme = brats_scheme(folder)
        sep, suffixes, seg = _BRATS_NAMING[scheme]
        cid = folder.name
        images = []
        for suf in suffixes:
            p = _find(folder, f"{cid}{sep}{suf}")
            if p is None:
                raise DataError(f"BraTS case {cid!r}: missing modality file {folder / f'{cid}{sep}{suf}.nii.gz'}")
            images.append(p)
        label = _find(folder, f"{cid}{sep}{seg}")
        if label is None and require_label:
            raise DataError(f"BraTS case {cid!r}: missing label file {folder / f'{cid}{sep}{seg}.nii.gz'}")
        label_map = {4: 3} if scheme == "2021" else None
        cases.append(Case3D(cid, tuple(images), label, "brats", BRATS_CHANNELS, dict(BRATS_LABELS), label_map,
                            extra={"scheme": scheme}))
    return cases


def brats_region_masks(label: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` BraTS labels {0..3} -> bool ``(3, X, Y, Z)`` masks for WT, TC, ET (in that order)."""
    return np.stack([np.isin(label, r) for r in BRATS_REGIONS.values()])
