"""3D dataset layouts: MSD / nnU-Net raw, BraTS 2023 and 2020/21 folders, Synapse (TransUNet npz/h5, raw BTCV).

A layout turns a folder into :class:`Case3D` records (id, one image path per channel/modality, label path or None,
plus how to read them); :func:`load_case3d` reads one record into ``dict(image float32 (C, X, Y, Z), label int64
(X, Y, Z) | None, meta)`` and checks it (modality/label shapes and affines agree, channel count matches the
dataset description, label values are declared).

Conventions (sources in brackets):

- nnU-Net raw [nnUNet ``documentation/dataset_format.md``]: ``imagesTr/CASE_XXXX<file_ending>`` (XXXX = channel),
  labels ``labelsTr/CASE<file_ending>``, test images ``imagesTs``; ``dataset.json`` has ``channel_names``, ``labels``
  (name -> int, or a list for regions; the MSD/v1 index -> name form is accepted too), ``file_ending`` (only files
  with that ending are read), ``numTraining`` (a mismatch is warned about). ``channel_names`` choose the
  normalisation as nnU-Net v2 does (CT / zscore / noNorm / rescale_to_0_1 / rgb_to_0_1, case-insensitive, other
  names z-scored) when ``data.modality`` is ``auto`` (:func:`channel_modalities`). A ``file_ending`` of a 2D format
  (``.png`` ...) is a 2D dataset: read by :func:`mambaseg.data.layouts2d.nnunet2d_cases`, refused here.
  MSD: ``modality`` (index -> name), ``labels`` (index -> name), ``training: [{image, label}]``,
  one file per case that is 4D when there are several modalities. macOS ``._*`` files are ignored.
- BraTS 2023: ``<case>/<case>-{t1n,t1c,t2w,t2f}.nii.gz`` (+ ``-seg``); 2020/21: ``_{t1,t1ce,t2,flair}`` (+ ``_seg``,
  label 4 -> 3). Channel order [T2w, T2-FLAIR, T1n, T1c] (spec §1.4). Regions WT {1,2,3}, TC {1,3}, ET {3}.
- Synapse (TransUNet ``datasets/README.md``, ``lists/lists_Synapse``): ``train_npz/caseXXXX_sliceYYY.npz`` (2D slices,
  keys ``image``, ``label``), ``test_vol_h5/caseXXXX.npy.h5`` (datasets ``image``, ``label``, slice axis first);
  raw BTCV ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` with the 13 BTCV labels remapped to TransUNet's 8 organs
  (:data:`BTCV_TO_SYNAPSE8`). The npz/h5 files carry no spacing: ``meta["spacing"]`` is 1 mm (documented, not known).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.data.io import DataError
from mambaseg.data.nifti import (
    SUPPORTED_SUFFIXES,
    check_label_values,
    read_volume,
    read_volume_label,
    volume_suffix,
)
from mambaseg.metrics.volumetric import BRATS_REGIONS  # the label sets evaluation and training share
from mambaseg.utils.optional import MissingDependency, require

__all__ = [
    "BRATS_CHANNELS",
    "BRATS_LABELS",
    "BRATS_REGIONS",
    "BTCV_TO_SYNAPSE8",
    "SYNAPSE8_LABELS",
    "SYNAPSE_TEST_CASES",
    "SYNAPSE_TRAIN_CASES",
    "Case3D",
    "brats_cases",
    "brats_region_masks",
    "channel_modalities",
    "group_channels",
    "detect_layout3d",
    "list_cases3d",
    "load_case3d",
    "msd_cases",
    "nnunet_cases",
    "nnunet_is_2d",
    "nnunet_normalisation",
    "read_dataset_json",
    "remap_labels",
    "synapse_cases",
]

logger = logging.getLogger(__name__)

BRATS_LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
BRATS_CHANNELS = ("t2w", "t2f", "t1n", "t1c")
_BRATS_NAMING = {  # scheme -> (separator, suffix per channel in BRATS_CHANNELS order, label suffix)
    "2023": ("-", ("t2w", "t2f", "t1n", "t1c"), "seg"),
    "2021": ("_", ("t2", "flair", "t1", "t1ce"), "seg"),
}

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

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


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


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")  # macOS "._x.nii.gz" resource forks and other hidden files


def _volume_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and volume_suffix(p))


def _strip_suffix(p: Path | str) -> str:
    name = Path(p).name
    suf = volume_suffix(name)
    return name[: -len(suf)] if suf else name


def _int_value(val: Any) -> int | None:
    """``val`` as an int if it is an integer (int, integral float, or a decimal string), else None."""
    if isinstance(val, bool):
        return None
    if isinstance(val, int):
        return val
    if isinstance(val, float) and val.is_integer():
        return int(val)
    if isinstance(val, str) and val.strip().lstrip("-").isdigit():
        return int(val)
    return None


def declared_label_values(labels: Any, path: Path | str = "dataset.json") -> dict[str, int]:
    """dataset.json labels, MSD (``{"0": "background"}``) or nnU-Net v2 (``{"background": 0, "WT": [1, 2, 3]}``).

    Raises:
        DataError: naming ``path`` and the offending key when a label value is not an integer >= 0.
    """
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' must be a non-empty mapping, e.g. "
                        f"{{\"0\": \"background\", \"1\": \"tumour\"}} (MSD) or "
                        f"{{\"background\": 0, \"tumour\": 1}} (nnU-Net v2)")
    out: dict[str, int] = {}
    for key, val in labels.items():
        if isinstance(val, str):  # MSD: index -> name; the key must be the integer label value
            v = _int_value(key)
            if v is None or v < 0:
                raise DataError(f"{path}: 'labels' key {key!r} (-> {val!r}) is not an integer label value >= 0, "
                                f"expected MSD style {{\"0\": \"background\"}} or nnU-Net style {{\"background\": 0}}")
            out[val] = v
        elif isinstance(val, (list, tuple)):  # nnU-Net region: all members are valid label values
            for member in val:
                v = _int_value(member) if not isinstance(member, str) else None
                if v is None or v < 0:
                    raise DataError(f"{path}: 'labels' region {key!r} holds {member!r}, expected integer label "
                                    f"values >= 0")
                out[f"{key}:{v}"] = v
        else:
            v = _int_value(val) if not isinstance(val, str) else None
            if v is None or v < 0:
                raise DataError(f"{path}: 'labels' entry {key!r}: {val!r} is not an integer label value >= 0")
            out[str(key)] = v
    return out


def read_dataset_json(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``root/dataset.json`` and normalise MSD / nnU-Net v2 fields.

    Returns:
        dict with ``style`` (``"msd"`` | ``"nnunet"``), ``channel_names`` (list), ``labels`` (name -> int),
        ``file_ending``, ``training`` (MSD list of {image, label}, possibly empty) and ``raw`` (the file content).
    """
    path = Path(root) / "dataset.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected an MSD / nnU-Net dataset.json)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text, expected a JSON object") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object with 'labels' and 'channel_names'/'modality', got "
                        f"{type(raw).__name__}")
    if "channel_names" in raw:
        style, chans = "nnunet", raw["channel_names"]
    elif "modality" in raw:
        style, chans = "msd", raw["modality"]
    else:
        raise DataError(f"{path}: has neither 'channel_names' (nnU-Net v2) nor 'modality' (MSD)")
    field_name = "channel_names" if style == "nnunet" else "modality"
    if not isinstance(chans, dict) or not chans:
        raise DataError(f"{path}: '{field_name}' must be a non-empty mapping of channel index -> name, "
                        f"e.g. {{\"0\": \"MRI\"}}")
    index: dict[int, Any] = {}
    for k, name in chans.items():
        i = _int_value(k)
        if i is None or i < 0:
            raise DataError(f"{path}: '{field_name}' key {k!r} is not an integer channel index >= 0, "
                            f"expected {{\"0\": ..., \"1\": ...}}")
        index[i] = name
    if sorted(index) != list(range(len(index))):
        raise DataError(f"{path}: '{field_name}' indices {sorted(index)} are not 0..{len(index) - 1}")
    channel_names = [str(index[i]) for i in range(len(index))]
    if "labels" not in raw:
        raise DataError(f"{path}: missing 'labels'")
    training = raw.get("training") or []
    if style == "msd" and training and not all(isinstance(t, dict) and "image" in t for t in training):
        raise DataError(f"{path}: 'training' must be a list of {{image, label}} entries")
    ending = raw.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2:
        raise DataError(f"{path}: 'file_ending' {ending!r} is not a file suffix, expected e.g. \".nii.gz\" or \".png\"")
    n_training = raw.get("numTraining")
    if n_training is not None and (_int_value(n_training) is None or _int_value(n_training) < 0):
        raise DataError(f"{path}: 'numTraining' {n_training!r} is not an integer >= 0")
    return {"style": style, "channel_names": channel_names, "labels": declared_label_values(raw["labels"], path),
            "file_ending": ending, "num_training": None if n_training is None else _int_value(n_training),
            "training": training, "raw": raw}


# nnU-Net v2 normalisation by channel name (nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py):
# the name is case-folded (str.casefold, no stripping) and looked up; every other name gets the default, zscore.
_NNUNET_NORMALISATION = {"ct": "CT", "nonorm": "noNorm", "zscore": "zscore", "rescale_to_0_1": "rescale_to_0_1",
                         "rgb_to_0_1": "rgb_to_0_1"}


def nnunet_normalisation(channel_name: str) -> str:
    """nnU-Net v2's normalisation for a ``channel_names`` entry: ``CT``, ``noNorm``, ``zscore``, ``rescale_to_0_1``
    or ``rgb_to_0_1``, matched case-insensitively as nnU-Net's ``get_normalization_scheme`` does
    (``channel_name.casefold()``); any other name (``T2``, ``MRI``, ``" CT"`` with a space, ...) -> ``zscore``."""
    return _NNUNET_NORMALISATION.get(str(channel_name).casefold(), "zscore")


def channel_modalities(channel_names: Sequence[str], modality: str = "auto",
                       layout: str = "nnunet") -> str | list[str]:
    """The ``modality`` argument of :func:`mambaseg.data.preprocess.plan` for a dataset.

    ``modality`` ``"MR"``/``"CT"`` (``data.modality``) applies to every channel as before. ``"auto"`` (the default):
    with ``layout: nnunet`` each channel's name in ``dataset.json`` (``channel_names``, or MSD ``modality``) decides
    as in nnU-Net v2 (:func:`nnunet_normalisation`): ``CT`` -> CT normalisation (clip to the dataset's foreground
    0.5-99.5 percentiles, z-score with the foreground mean/std), ``noNorm`` -> none, ``rescale_to_0_1`` -> per-case
    min-max, ``rgb_to_0_1`` -> ``x / 255``, ``zscore`` and every other name -> per-case z-score (on the non-zero
    voxels when cropping to them shrinks the cases, see :func:`mambaseg.data.preprocess.normalization_entries`).
    Every other layout: ``"MR"`` (what ``auto`` replaced, so existing configs keep their behaviour).
    """
    if str(modality).lower() != "auto":
        return modality
    if layout != "nnunet" or not channel_names:
        return "MR"
    return [nnunet_normalisation(name) for name in channel_names]


def nnunet_is_2d(root: str | os.PathLike) -> bool:
    """True when ``root/dataset.json`` is an nnU-Net v2 description whose ``file_ending`` is a 2D image format."""
    from mambaseg.data.io import PIL_SUFFIXES

    path = Path(root) / "dataset.json"
    if not path.is_file():
        return False
    ds = read_dataset_json(root)
    return ds["style"] == "nnunet" and ds["file_ending"].lower() in PIL_SUFFIXES


def nnunet_files(root: Path, split: str, ds: dict[str, Any],
                 one_file_per_channel: bool = True) -> tuple[list[tuple[str, list[Path], Path | None]], Path]:
    """``(case, channel files, label or None)`` of an nnU-Net v2 raw dataset, found through ``file_ending``.

    Shared by the 3D (:func:`nnunet_cases`) and 2D (``layouts2d.nnunet2d_cases``) readers.

    Args:
        one_file_per_channel: the channel files must be exactly ``0..len(channel_names)-1`` (3D); when False only
            contiguous from 0 (2D: one RGB ``_0000.png`` holds the channels R, G, B).

    Raises:
        DataError: missing ``imagesTr``/``imagesTs``, a file without its ``_XXXX`` channel index, a case whose channel
            files are not as above, or (training) a case without its label file.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ending = ds["file_ending"]
    img_dir = root / ("imagesTr" if split == "train" else "imagesTs")
    lab_dir = root / ("labelsTr" if split == "train" else "labelsTs")
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder not found (nnU-Net dataset: imagesTr/CASE_0000{ending})")
    groups: dict[str, dict[int, Path]] = {}
    for f in sorted(img_dir.iterdir()):
        if not (f.is_file() and _visible(f) and f.name.lower().endswith(ending.lower())):
            continue
        m = _CHANNEL_RE.match(f.name[: -len(ending)])
        if m is None:
            raise DataError(f"{f}: no channel index, expected CASE_XXXX{ending} (e.g. {f.name[: -len(ending)]}_0000"
                            f"{ending}) in an nnU-Net dataset")
        groups.setdefault(m["case"], {})[int(m["ch"])] = f
    if not groups:
        raise DataError(f"{img_dir}: no CASE_XXXX{ending} files (file_ending {ending!r} from "
                        f"{root / 'dataset.json'})")
    out = []
    for case, chans in sorted(groups.items()):
        n_ch = len(ds["channel_names"]) if one_file_per_channel else max(chans) + 1
        missing = [i for i in range(n_ch) if i not in chans]
        extra = sorted(i for i in chans if i >= n_ch)
        if missing or extra:
            what = (f"missing {img_dir / f'{case}_{missing[0]:04d}{ending}'}" if missing else
                    f"unexpected {chans[extra[0]]}")
            raise DataError(f"case {case!r}: {what}; dataset.json declares {len(ds['channel_names'])} channel(s) "
                            f"({', '.join(ds['channel_names'])})")
        label = lab_dir / f"{case}{ending}"
        if not label.is_file():
            if split == "train":
                raise DataError(f"case {case!r}: no label file {label} (nnU-Net: labelsTr/CASE{ending})")
            label = None
        out.append((case, [chans[i] for i in range(n_ch)], label))
    if split == "train" and ds.get("num_training") is not None and ds["num_training"] != len(out):
        logger.warning("%s: numTraining is %d but %s holds %d case(s); using the files found",
                       root / "dataset.json", ds["num_training"], img_dir, len(out))
    return out, img_dir


def nnunet_cases(root: str | os.PathLike, split: str = "train") -> list[Case3D]:
    """Cases of an nnU-Net v2 raw dataset (``layout: nnunet``): ``imagesTr/CASE_XXXX<file_ending>`` +
    ``labelsTr/CASE<file_ending>`` (``split="test"``: ``imagesTs``, labels from ``labelsTs`` when present).

    A ``dataset.json`` in MSD style (``modality``/``training``) is read as :func:`msd_cases` does.

    Raises:
        DataError: no ``dataset.json``; a 2D ``file_ending`` (those datasets go through the 2D pipeline); see
            :func:`nnunet_files`.
    """
    from mambaseg.data.io import PIL_SUFFIXES

    root = Path(root)
    ds = read_dataset_json(root)
    if ds["style"] != "nnunet":
        return msd_cases(root, split)
    ending = ds["file_ending"]
    if ending.lower() in PIL_SUFFIXES:
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is a 2D nnU-Net dataset; it is read by "
                        f"the 2D pipeline (2D models), not as 3D volumes")
    if not volume_suffix(f"x{ending}"):
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is not a supported volume format "
                        f"({', '.join(SUPPORTED_SUFFIXES)})")
    channel_names = tuple(ds["channel_names"])
    return [Case3D(case, tuple(images), label, "nnunet", channel_names, ds["labels"])
            for case, images, label in nnunet_files(root, split, ds)[0]]


def group_channels(files: list[Path]) -> dict[str, list[Path]]:
    """``CASE_0000.nii.gz, CASE_0001.nii.gz`` -> {CASE: [ch0, ch1]}; files without a channel suffix are 1-channel.
    The one grouping rule of training and prediction: duplicate or non-contiguous channel indices are an error."""
    groups: dict[str, dict[int, Path]] = {}
    for f in files:
        m = _CHANNEL_RE.match(_strip_suffix(f))
        case, ch = (m["case"], int(m["ch"])) if m else (_strip_suffix(f), 0)
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
        grouped = group_channels(_volume_files(img_dir))
        for entry in ds["training"]:
            img = (root / entry["image"]).resolve()
            cid = _strip_suffix(img)
            if not _visible(img):
                continue
            images = [img] if img.is_file() else grouped.get(cid)
            if not images:
                raise DataError(f"{img}: listed in {root / 'dataset.json'} but missing (also no {cid}_0000 files)")
            label = (root / entry["label"]).resolve() if entry.get("label") else None
            cases.append(Case3D(cid, tuple(images), label, "msd", channel_names, labels))
        return cases
    files = _volume_files(img_dir)
    if not files:
        raise DataError(f"{img_dir}: no volumes found (expected CASE_0000{ds['file_ending'] if ds else '.nii.gz'})")
    for cid, images in group_channels(files).items():
        label = None
        if lab_dir is not None:
            matches = [p for p in _volume_files(lab_dir) if _strip_suffix(p) == cid]
            label = matches[0] if matches else None
            if label is None:
                raise DataError(f"case {cid!r}: no label file {cid}{volume_suffix(images[0])} in {lab_dir}")
        cases.append(Case3D(cid, tuple(images), label, style, channel_names, labels))
    return cases


def _brats_scheme(folder: Path) -> str | None:
    names = [p.name.lower() for p in folder.iterdir() if _visible(p)]
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
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p) and _brats_scheme(p))
    if not folders:
        raise DataError(f"{root}: no BraTS case folders (<case>/<case>-t1n.nii.gz or <case>/<case>_t1.nii.gz)")
    cases = []
    for folder in folders:
        scheme = _brats_scheme(folder)
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
        files = sorted(p for p in h5_dir.glob("*.h5") if _visible(p))
        if not files:
            raise DataError(f"{h5_dir}: no caseXXXX.npy.h5 volumes found")
        return [Case3D(p.name.split(".")[0], (p,), p, "synapse_h5", ("CT",), labels) for p in files]
    if source == "npz" or (source is None and split in ("train", "all") and npz_dir.is_dir()):
        groups: dict[str, list[tuple[int, Path]]] = {}
        for p in npz_dir.glob("*.npz"):
            m = re.match(r"^(?P<case>.+)_slice(?P<z>\d+)\.npz$", p.name)
            if m and _visible(p):
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
    if any(p.is_dir() and _visible(p) and _brats_scheme(p) for p in root.iterdir()):
        return "brats"
    if next((p for p in root.rglob("img*.nii*") if re.match(r"^img\d+\.nii", p.name)), None) is not None:
        return "btcv"
    raise DataError(f"{root}: unknown layout, expected training/images (DRIVE), images/ + labels/ (folder2d), "
                    "dataset.json/imagesTr (MSD, nnU-Net), BraTS case folders, Synapse train_npz/test_vol_h5 or BTCV "
                    "img*.nii.gz")


def list_cases3d(root: str | os.PathLike, layout: str | None = None, split: str = "train") -> list[Case3D]:
    """Cases of ``root`` for ``layout`` (auto-detected when None)."""
    layout = layout or detect_layout3d(root)
    if layout == "nnunet" and (Path(root) / "dataset.json").is_file():
        return nnunet_cases(root, split)
    if layout in ("msd", "nnunet"):
        return msd_cases(root, split)
    if layout == "brats":
        return brats_cases(root)
    if layout in ("synapse", "btcv", "synapse_npz", "synapse_h5"):
        source = {"btcv": "btcv", "synapse_npz": "npz", "synapse_h5": "h5"}.get(layout)
        return synapse_cases(root, split, source)
    raise ValueError(f"layout must be one of msd, nnunet, brats, synapse, synapse_npz, synapse_h5, btcv, "
                     f"got {layout!r}")


def remap_labels(label: np.ndarray, mapping: dict[int, int], drop_unmapped: bool = False) -> np.ndarray:
    """Apply ``mapping`` (raw -> new) to an integer label map; unmapped values are kept or, if requested, zeroed."""
    lut_size = int(max(label.max(initial=0), *mapping.keys())) + 1
    if lut_size > 1 << 16:  # a stray huge value must not allocate a huge lookup table
        values, inverse = np.unique(label, return_inverse=True)
        mapped = np.asarray([mapping.get(int(v), 0 if drop_unmapped and v != 0 else int(v)) for v in values],
                            dtype=np.int64)
        return mapped[inverse].reshape(label.shape)
    lut = np.zeros(lut_size, dtype=np.int64) if drop_unmapped else np.arange(lut_size, dtype=np.int64)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[label]


def brats_region_masks(label: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` BraTS labels {0..3} -> bool ``(3, X, Y, Z)`` masks for WT, TC, ET (in that order)."""
    return np.stack([np.isin(label, r) for r in BRATS_REGIONS.values()])


def _load_h5(case: Case3D) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        h5py = require("h5py", purpose=f"{case.images[0]}: reading .h5")
    except MissingDependency as e:
        raise DataError(str(e)) from None
    path = case.images[0]
    try:
        with h5py.File(path, "r") as f:
            image, label = np.asarray(f["image"]), np.asarray(f["label"])
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: cannot read datasets 'image' and 'label' ({err})") from None
    if image.ndim != 3 or image.shape != label.shape:
        raise DataError(f"{path}: image {image.shape} / label {label.shape}, expected equal 3D (Z, H, W) shapes")
    return np.moveaxis(image, 0, -1)[None], np.moveaxis(label, 0, -1), {}


def _load_npz_slices(case: Case3D) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    imgs, labs = [], []
    for p in case.images:
        try:
            with np.load(p) as z:
                imgs.append(np.asarray(z["image"]))
                labs.append(np.asarray(z["label"]))
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{p}: cannot read keys 'image' and 'label' ({err})") from None
        if imgs[-1].ndim != 2 or imgs[-1].shape != labs[-1].shape or imgs[-1].shape != imgs[0].shape:
            raise DataError(f"{p}: image {imgs[-1].shape} / label {labs[-1].shape}, expected equal 2D slices "
                            f"of shape {imgs[0].shape}")
    return np.stack(imgs, -1)[None], np.stack(labs, -1), {}


def _array_meta(case: Case3D, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"path": str(case.images[0]), "shape": tuple(int(s) for s in shape), "spacing": np.ones(3),
            "affine": np.eye(4), "orientation": ("R", "A", "S"), "qform": None, "qform_code": 0, "sform": np.eye(4),
            "sform_code": 1, "xyzt_units": ("mm", "sec"), "n_channels": 1, "source": case.layout,
            "spacing_known": False}


def _same_geometry(m1: dict, m2: dict, atol: float = 1e-3) -> bool:
    return tuple(m1["shape"]) == tuple(m2["shape"]) and np.allclose(m1["affine"], m2["affine"], rtol=0, atol=atol)


def load_case3d(case: Case3D, check_labels: bool = True) -> dict[str, Any]:
    """Read one case.

    Returns:
        ``dict(case_id, image float32 (C, X, Y, Z), label int64 (X, Y, Z) | None, meta)``; ``meta`` is the first
        image's meta (geometry reference for writing predictions) plus ``case_id``, ``channel_names``, ``files``.

    Raises:
        DataError: unreadable files, shape or affine mismatch between modalities or with the label (naming both
            files), channel count different from ``case.channel_names``, label values not declared, label values
            outside ``0..num_classes - 1`` when ``case.extra["num_classes"]`` is set (training sets it from
            ``data.num_classes``).
    """
    num_classes = case.extra.get("num_classes") if case.extra else None
    if case.layout in ("synapse_h5", "synapse_npz"):
        image, label, _ = _load_h5(case) if case.layout == "synapse_h5" else _load_npz_slices(case)
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise DataError(f"{case.images[0]}: NaN/Inf voxels, expected finite intensities")
        if label.dtype.kind not in "biuf" or (label.dtype.kind == "f" and not (
                np.isfinite(label).all() and np.array_equal(np.rint(label), label))):
            raise DataError(f"{case.images[0]}: label holds non-integer values, expected integer class ids")
        label = label.astype(np.int64)
        meta = _array_meta(case, image.shape[1:])
        lab_path = case.images[0]
    else:
        chans, meta = [], None
        for p in case.images:
            arr, m = read_volume(p)
            if meta is not None and not _same_geometry(meta, m):
                raise DataError(f"case {case.case_id!r}: geometry mismatch between {meta['path']} (shape "
                                f"{meta['shape']}) and {p} (shape {m['shape']}); affines differ or shapes differ")
            meta = meta or m
            chans.append(arr)
        image = np.concatenate(chans, 0)
        label = None
        lab_path = case.label
        if case.label is not None:
            # raw values may exceed num_classes before a label_map (BraTS 4 -> 3): the bound is checked below
            label, lm = read_volume_label(case.label, num_classes=None if case.label_map else num_classes)
            if not _same_geometry(meta, lm):
                raise DataError(f"case {case.case_id!r}: label {case.label} (shape {lm['shape']}) does not match "
                                f"image {meta['path']} (shape {meta['shape']}) in shape or affine")
    if case.channel_names and image.shape[0] != len(case.channel_names):
        raise DataError(f"case {case.case_id!r}: {image.shape[0]} channel(s) in {[str(p) for p in case.images]}, "
                        f"expected {len(case.channel_names)} ({', '.join(case.channel_names)})")
    if label is not None and case.label_map:
        label = remap_labels(label, case.label_map, case.drop_unmapped)
    if label is not None and num_classes is not None and (case.label_map or case.layout in ("synapse_h5",
                                                                                         "synapse_npz")):
        check_label_values(label, num_classes, lab_path)  # NIfTI labels without a label_map: checked when read
    if label is not None and check_labels and case.labels is not None:
        bad = sorted(set(np.unique(label).tolist()) - set(case.labels.values()))
        if bad:
            raise DataError(f"{lab_path}: label values {bad} not declared, expected a subset of "
                            f"{sorted(set(case.labels.values()))}")
    meta = dict(meta, case_id=case.case_id, channel_names=list(case.channel_names),
                files=[str(p) for p in case.images], label_file=str(case.label) if case.label else None)
    return {"case_id": case.case_id, "image": image, "label": label, "meta": meta}
