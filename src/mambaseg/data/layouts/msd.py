"""The Medical Segmentation Decathlon (MSD) layout (``layout: msd``), also the fallback for an nnU-Net raw folder
without a v2 ``dataset.json``: ``imagesTr``/``labelsTr`` (``imagesTs`` for the test split) and a ``dataset.json`` with
``modality`` (index -> name), ``labels`` (index -> name) and ``training: [{image, label}]``; one file per case that
is 4D when there are several modalities, or ``CASE_XXXX`` channel files grouped by :func:`group_channels`.
macOS ``._*`` files are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import volume_suffix
from mambaseg.data.layouts.dataset_json import read_dataset_json
from mambaseg.data.records import CHANNEL_RE, Case3D, is_visible, strip_suffix, volume_files

__all__ = ["group_channels", "msd_cases"]


def group_channels(files: list[Path]) -> dict[str, list[Path]]:
    """``CASE_0000.nii.gz, CASE_0001.nii.gz`` -> {CASE: [ch0, ch1]}; files without a channel suffix are 1-channel.
    The one grouping rule of training and prediction: duplicate or non-contiguous channel indices are an error."""
    groups: dict[str, dict[int, Path]] = {}
    for f in files:
        m = CHANNEL_RE.match(strip_suffix(f))
        case, ch = (m["case"], int(m["ch"])) if m else (strip_suffix(f), 0)
        if ch in groups.setdefault(case, {}):
            raise DataError(f"{f}: duplicate channel {ch} for case {case!r} (also {groups[case][ch]})")
        groups[case][ch] = f
    out = {}
    for case, chans in sorted(groups.items()):
        expected = list(range(len(chans)))
        if sorted(chans) != expected:
            raise DataError(f"case {case!r}: channel files {sorted(chans)} are not contiguous, expected {expected}")
        out[case] = [chans[i] for i in expected]
    return out


def _entry_path(root: Path, entry: dict, key: str) -> Path:
    """The file of a ``dataset.json`` 'training' entry's ``key``: a relative path that stays inside the dataset
    folder (checked on the text, so a dataset whose folders are links still works); else a one-line error."""
    value = entry[key]
    where = f"{root / 'dataset.json'}: 'training' entry {key} {value!r}"
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where} is not a file path, expected e.g. \"./imagesTr/case_001.nii.gz\".")
    norm = os.path.normpath(os.path.join(os.path.abspath(root), value))
    base = os.path.abspath(root)
    if os.path.commonpath([norm, base]) != base or norm == base:
        raise DataError(f"{where} points outside the dataset folder {root}; expected a path inside it "
                        f"(e.g. ./imagesTr/...).")
    return Path(norm)


def msd_cases(root: str | os.PathLike, split: str = "train") -> list[Case3D]:
    """Cases of an MSD task or nnU-Net raw dataset (``imagesTr``/``labelsTr``, or ``imagesTs`` for ``split="test"``)."""
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ds = read_dataset_json(root) if (root / "dataset.json").is_file() else None
    img_dir, lab_dir = (root / "imagesTr", root / "labelsTr") if split == "train" else (root / "imagesTs", None)
    channel_names = tuple(ds["channel_names"]) if ds else ()
    labels = ds["labels"] if ds else None
    style = ds["style"] if ds else "nnunet"
    cases: list[Case3D] = []
    if ds and style == "msd" and split == "train" and ds["training"]:
        grouped = group_channels(volume_files(img_dir))
        seen: dict[str, str] = {}
        for entry in ds["training"]:
            img = _entry_path(root, entry, "image").resolve()
            cid = strip_suffix(img)
            if not is_visible(img):
                continue
            if cid in seen:
                raise DataError(f"{root / 'dataset.json'}: 'training' lists case {cid!r} twice ({seen[cid]!r} and "
                                f"{entry['image']!r}); expected one entry per case.")
            seen[cid] = entry["image"]
            images = [img] if img.is_file() else grouped.get(cid)
            if not images:
                raise DataError(f"{img}: listed in {root / 'dataset.json'} but missing (also no {cid}_0000 files)")
            label = _entry_path(root, entry, "label").resolve() if entry.get("label") else None
            cases.append(Case3D(cid, tuple(images), label, "msd", channel_names, labels))
        return cases
    files = volume_files(img_dir)
    if not files:
        raise DataError(f"{img_dir}: no volumes found (expected CASE_0000{ds['file_ending'] if ds else '.nii.gz'})")
    for cid, images in group_channels(files).items():
        label = None
        if lab_dir is not None:
            matches = [p for p in volume_files(lab_dir) if strip_suffix(p) == cid]
            label = matches[0] if matches else None
            if label is None:
                raise DataError(f"case {cid!r}: no label file {cid}{volume_suffix(images[0])} in {lab_dir}")
        cases.append(Case3D(cid, tuple(images), label, style, channel_names, labels))
    return cases
