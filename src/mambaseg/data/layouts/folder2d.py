"""The generic 2D folder layout (``"folder2d"``): ``root/images/<stem>.<ext>``, ``root/labels/<stem>.<ext>`` with
matching stems and an optional ``root/masks/<stem>.<ext>``; any suffix in
:data:`~mambaseg.data.io.suffixes.SUPPORTED_2D`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import SUPPORTED_2D
from mambaseg.data.records import Case2D, index_dir

__all__ = ["folder2d_cases"]

logger = logging.getLogger(__name__)


def folder2d_cases(root: str | Path, require_labels: bool = True) -> list[Case2D]:
    """List the cases of a generic ``images/`` + ``labels/`` (+ optional ``masks/``) folder.

    Args:
        root: folder holding ``images/``, ``labels/`` and optionally ``masks/``.
        require_labels: when False (inference), images without a label get ``label=None``.

    Raises:
        DataError: missing ``images/`` folder, no images, or (with ``require_labels``) an image without a label.
    """
    root = Path(root)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder not found; expected images/ and labels/ with matching file stems")
    images = index_dir(img_dir)
    if not images:
        raise DataError(f"{img_dir}: no images found; supported suffixes: {', '.join(SUPPORTED_2D)}")
    labels = index_dir(root / "labels")
    masks = index_dir(root / "masks")
    cases = []
    for stem, image in images.items():
        label = labels.get(stem)
        if label is None and require_labels:
            raise DataError(f"{image}: no label with stem {stem!r} in {root / 'labels'}; expected one per image")
        cases.append(Case2D(stem, image, label, masks.get(stem)))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        logger.warning("%d label(s) in %s have no image, e.g. %s", len(orphans), root / "labels", orphans[0])
    return cases
