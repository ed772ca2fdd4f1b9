"""The DRIVE layout (:func:`mambaseg.data.cases.detect_layout` -> ``"drive"``)::

    root/training/images/21_training.tif, root/training/1st_manual/21_manual1.gif,
    root/training/mask/21_training_mask.gif; root/test/images/01_test.tif, root/test/1st_manual/01_manual1.gif,
    root/test/mask/01_test_mask.gif

Suffixes are not fixed: any suffix in :data:`~mambaseg.data.io.suffixes.SUPPORTED_2D` with the right stem is found.
Training labels are required; test labels may be absent (the official DRIVE download omits them) and then are
``None``. Missing FOV masks give ``mask=None`` (see :func:`mambaseg.data.plans.fundus.estimate_fov`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import SUPPORTED_2D
from mambaseg.data.records import Case2D, index_dir

__all__ = ["DRIVE_SPLITS", "drive_cases"]

logger = logging.getLogger(__name__)

DRIVE_SPLITS = ("training", "test")


def drive_cases(root: str | Path, split: str = "training") -> list[Case2D]:
    """List the cases of a DRIVE-layout folder.

    Args:
        root: folder holding ``training/`` and/or ``test/``.
        split: ``"training"`` or ``"test"``.

    Returns:
        Cases sorted by id (``"21"``, ``"22"``, ...), labels from ``1st_manual``.

    Raises:
        ValueError: unknown ``split``.
        DataError: missing images folder, no images, or a training image without its manual label.
    """
    if split not in DRIVE_SPLITS:
        raise ValueError(f"split must be one of {DRIVE_SPLITS}, got {split!r}")
    base = Path(root) / split
    img_dir = base / "images"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder not found; expected the DRIVE layout {split}/images/NN_{split}.tif")
    images = index_dir(img_dir)
    labels = index_dir(base / "1st_manual")
    masks = index_dir(base / "mask")
    cases = []
    for stem, image in images.items():
        if not stem.endswith(f"_{split}"):
            logger.warning("ignoring %s: name does not match NN_%s.<ext>", image, split)
            continue
        cid = stem[: -len(split) - 1]
        label = labels.get(f"{cid}_manual1")
        if label is None and split == "training":
            raise DataError(f"{image}: no label {base / '1st_manual' / (cid + '_manual1.gif')}; "
                            f"expected one for every training image")
        mask = masks.get(f"{cid}_{split}_mask")
        cases.append(Case2D(cid, image, label, mask))
    if not cases:
        raise DataError(f"{img_dir}: no images named NN_{split}.<ext>; supported suffixes: {', '.join(SUPPORTED_2D)}")
    return cases
