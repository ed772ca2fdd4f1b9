"""Case records and the small path helpers the layout modules share.

:class:`Case2D` is what the 2D layouts (:mod:`~mambaseg.data.layouts.drive`, :mod:`~mambaseg.data.layouts.folder2d`,
2D :mod:`~mambaseg.data.layouts.nnunet`) list and :func:`mambaseg.data.layouts.load2d.load_case2d` reads;
:class:`Case3D` is what the volume layouts (MSD, nnU-Net raw, BraTS, Synapse/BTCV) list: id, one image path per
channel/modality, label path or None, plus how to read them; :func:`mambaseg.data.load3d.load_case3d` reads it.
The helpers index a folder of 2D images by stem, list the volume files of a folder (macOS ``._*`` files and other
hidden files ignored) and split ``CASE_XXXX`` channel suffixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import SUPPORTED_2D, stem_of, suffix_of, volume_suffix

__all__ = ["Case2D", "Case3D"]

CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


@dataclass(frozen=True)
class Case2D:
    """One 2D case: an image with an optional label map and an optional (FOV) mask.

    ``norm``: per-channel normalisation entries (:func:`mambaseg.data.plans.normalize.normalize_channels`) chosen by an
    nnU-Net ``dataset.json``; empty = the default z-score of :func:`~mambaseg.data.plans.normalize.normalize_image`.
    """

    id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None
    norm: tuple[dict[str, Any], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Case3D:
    """One 3D case.

    Attributes:
        case_id: case identifier (file stem without channel suffix).
        images: one path per channel file (a single 4D MSD file holds several channels; for Synapse ``npz`` the
            z-ordered slice files of the case).
        label: label map path or None.
        layout: ``"msd"``, ``"nnunet"``, ``"brats"``, ``"synapse_npz"``, ``"synapse_h5"`` or ``"btcv"``.
        channel_names: expected channels (their number is checked on load; empty = unchecked).
        labels: declared label values (name -> int); None = unchecked.
        label_map: raw value -> new value applied on load (BraTS 4 -> 3, BTCV -> 8 organs); others kept unless
            ``drop_unmapped``.
        drop_unmapped: map every raw value absent from ``label_map`` (except 0) to 0.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    layout: str = "nnunet"
    channel_names: tuple[str, ...] = ()
    labels: dict[str, int] | None = None
    label_map: dict[int, int] | None = None
    drop_unmapped: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def index_dir(folder: Path) -> dict[str, Path]:
    """Map stem -> file for every supported file in ``folder`` (empty when the folder is missing)."""
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and suffix_of(f) in SUPPORTED_2D and not f.name.startswith("."):
            stem = stem_of(f)
            if stem in out:
                raise DataError(f"{f}: two files share the stem {stem!r} (other: {out[stem].name}); expected one")
            out[stem] = f
    return out


def is_visible(p: Path) -> bool:
    return not p.name.startswith(".")  # macOS "._x.nii.gz" resource forks and other hidden files


def volume_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_visible(p) and volume_suffix(p))


def strip_suffix(p: Path | str) -> str:
    name = Path(p).name
    suf = volume_suffix(name)
    return name[: -len(suf)] if suf else name
