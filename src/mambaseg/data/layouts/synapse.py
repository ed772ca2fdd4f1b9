"""The Synapse multi-organ layouts (``layout: synapse``, ``synapse_npz``, ``synapse_h5``, ``btcv``).

Synapse (TransUNet ``datasets/README.md``, ``lists/lists_Synapse``): ``train_npz/caseXXXX_sliceYYY.npz`` (2D slices,
keys ``image``, ``label``), ``test_vol_h5/caseXXXX.npy.h5`` (datasets ``image``, ``label``, slice axis first);
raw BTCV ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` with the 13 BTCV labels remapped to TransUNet's 8 organs
(:data:`BTCV_TO_SYNAPSE8`). The npz/h5 files carry no spacing: ``meta["spacing"]`` is 1 mm (documented, not known);
:mod:`mambaseg.data.io.synapse` reads them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mambaseg.data.errors import DataError
from mambaseg.data.records import Case3D, is_visible

__all__ = ["BTCV_TO_SYNAPSE8", "SYNAPSE8_LABELS", "SYNAPSE_TEST_CASES", "SYNAPSE_TRAIN_CASES", "synapse_cases"]

# BTCV (1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC,
# 10 portal/splenic vein, 11 pancreas, 12 right adrenal, 13 left adrenal) -> TransUNet Synapse 8-organ order.
BTCV_TO_SYNAPSE8 = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
SYNAPSE8_LABELS = {"background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4, "liver": 5,
                   "pancreas": 6, "spleen": 7, "stomach": 8}
# Beckschen/TransUNet lists/lists_Synapse/test_vol.txt (12 cases); the other 18 of the 30 form train.txt.
SYNAPSE_TEST_CASES = ("case0001", "case0002", "case0003", "case0004", "case0008", "case0022", "case0025", "case0029",
                      "case0032", "case0035", "case0036", "case0038")
SYNAPSE_TRAIN_CASES = ("case0005", "case0006", "case0007", "case0009", "case0010", "case0021", "case0023",
                       "case0024", "case0026", "case0027", "case0028", "case0030", "case0031", "case0033",
                       "case0034", "case0037", "case0039", "case0040")


def synapse_cases(root: str | os.PathLike, split: str = "test", source: str | None = None) -> list[Case3D]:
    """Synapse cases from ``test_vol_h5`` volumes, ``train_npz`` slices grouped per case, or raw BTCV
    ``img*.nii.gz``/``label*.nii.gz`` anywhere under ``root``.

    Args:
        root: dataset folder.
        split: ``"test"`` (h5 volumes / TransUNet's 12 test cases), ``"train"`` (npz slices / the 18 training cases)
            or ``"all"``.
        source: force ``"h5"``, ``"npz"`` or ``"btcv"``; default: h5 for test, npz for train if present, else BTCV.
    """
    root = Path(root)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if source not in (None, "h5", "npz", "btcv"):
        raise ValueError(f"source must be None, 'h5', 'npz' or 'btcv', got {source!r}")
    labels = dict(SYNAPSE8_LABELS)
    h5_dir, npz_dir = root / "test_vol_h5", root / "train_npz"
    if source == "h5" or (source is None and split in ("test", "all") and h5_dir.is_dir()):
        files = sorted(p for p in h5_dir.glob("*.h5") if is_visible(p))
        if not files:
            raise DataError(f"{h5_dir}: no caseXXXX.npy.h5 volumes found")
        return [Case3D(p.name.split(".")[0], (p,), p, "synapse_h5", ("CT",), labels) for p in files]
    if source == "npz" or (source is None and split in ("train", "all") and npz_dir.is_dir()):
        groups: dict[str, list[tuple[int, Path]]] = {}
        for p in npz_dir.glob("*.npz"):
            m = re.match(r"^(?P<case>.+)_slice(?P<z>\d+)\.npz$", p.name)
            if m and is_visible(p):
                groups.setdefault(m["case"], []).append((int(m["z"]), p))
        if not groups:
            raise DataError(f"{npz_dir}: no caseXXXX_sliceYYY.npz slices found")
        return [Case3D(c, tuple(p for _, p in sorted(s)), None, "synapse_npz", ("CT",), labels)
                for c, s in sorted(groups.items())]
    imgs = {m["n"]: p for p in root.rglob("img*.nii*") if (m := re.match(r"^img(?P<n>\d+)\.nii", p.name))}
    labs = {m["n"]: p for p in root.rglob("label*.nii*") if (m := re.match(r"^label(?P<n>\d+)\.nii", p.name))}
    if not imgs:
        raise DataError(f"{root}: no Synapse data (expected test_vol_h5/*.npy.h5, train_npz/*.npz or img*.nii.gz)")
    wanted = {"train": SYNAPSE_TRAIN_CASES, "test": SYNAPSE_TEST_CASES}.get(split)
    cases = []
    for n, img in sorted(imgs.items()):
        cid = f"case{int(n):04d}"
        if wanted is not None and cid not in wanted:
            continue
        cases.append(Case3D(cid, (img,), labs.get(n), "btcv", ("CT",), labels, dict(BTCV_TO_SYNAPSE8),
                            drop_unmapped=True))
    return cases
