"""The nnU-Net v2 raw layout (``layout: nnunet``), 3D and 2D.

- 3D [nnUNet ``documentation/dataset_format.md``]: ``imagesTr/CASE_XXXX<file_ending>`` (XXXX = channel), labels
  ``labelsTr/CASE<file_ending>``, test images ``imagesTs``; ``dataset.json`` as read by
  :func:`mambaseg.data.layouts.dataset_json.read_dataset_json` (only files with its ``file_ending`` are read). A
  ``dataset.json`` in MSD style is read as :func:`mambaseg.data.layouts.msd.msd_cases` does. A ``file_ending`` of a 2D
  format (``.png`` ...) is a 2D dataset: read by :func:`nnunet2d_cases`, refused by :func:`nnunet_cases`.
  macOS ``._*`` files are ignored.

- **nnU-Net v2, 2D** (``layout: nnunet`` with a 2D ``file_ending`` such as ``.png`` in ``dataset.json``)::

    root/dataset.json, root/imagesTr/CASE_0000.png, root/labelsTr/CASE.png, root/imagesTs/CASE_0000.png

  One image file per case (an RGB ``_0000.png`` gives 3 channels, as nnU-Net's ``NaturalImage2DIO`` reads it);
  several channel files per case (``_0001`` ...) are refused. Labels hold the class values (0, 1, 2, ...).
  ``channel_names`` choose each channel's normalisation as in nnU-Net v2
  (:func:`mambaseg.data.layouts.dataset_json.nnunet_normalisation`): ``CT`` (clip to the foreground 0.5/99.5
  percentiles of all ``imagesTr`` cases, then z-score with their foreground mean/std), ``noNorm``,
  ``rescale_to_0_1``, ``rgb_to_0_1`` (``x / 255``), and ``zscore`` / any other name: per-image z-score over every
  pixel (the 2D pipeline does not crop to the non-zero region, so nnU-Net's non-zero-mask variant does not arise).
  The entries (:attr:`~mambaseg.data.records.Case2D.norm`, see
  :func:`mambaseg.data.plans.normalize.normalize_channels`) are stored with the model so predict applies the same ones
  (:func:`nnunet2d_normalization`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.data.io.raster import read_image, read_label
from mambaseg.data.io.suffixes import RASTER_SUFFIXES, SUPPORTED_2D, VOLUME_SUFFIXES, suffix_of, volume_suffix
from mambaseg.data.layouts.dataset_json import nnunet_normalisation, read_dataset_json
from mambaseg.data.layouts.msd import msd_cases
from mambaseg.data.plans.normalize import normalization_entries
from mambaseg.data.records import CHANNEL_RE, Case2D, Case3D, is_visible

__all__ = ["nnunet2d_cases", "nnunet2d_normalization", "nnunet_cases", "nnunet_files", "nnunet_is_2d"]

logger = logging.getLogger(__name__)


def nnunet_is_2d(root: str | os.PathLike) -> bool:
    """True when ``root/dataset.json`` is an nnU-Net v2 description whose ``file_ending`` is a 2D image format."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return False
    ds = read_dataset_json(root)
    return ds["style"] == "nnunet" and ds["file_ending"].lower() in RASTER_SUFFIXES


def nnunet_files(root: Path, split: str, ds: dict[str, Any],
                 one_file_per_channel: bool = True) -> tuple[list[tuple[str, list[Path], Path | None]], Path]:
    """``(case, channel files, label or None)`` of an nnU-Net v2 raw dataset, found through ``file_ending``.

    Shared by the 3D (:func:`nnunet_cases`) and 2D (:func:`nnunet2d_cases`) readers.

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
        if not (f.is_file() and is_visible(f) and f.name.lower().endswith(ending.lower())):
            continue
        m = CHANNEL_RE.match(f.name[: -len(ending)])
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
    root = Path(root)
    ds = read_dataset_json(root)
    if ds["style"] != "nnunet":
        return msd_cases(root, split)
    ending = ds["file_ending"]
    if ending.lower() in RASTER_SUFFIXES:
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is a 2D nnU-Net dataset; it is read by "
                        f"the 2D pipeline (2D models), not as 3D volumes")
    if not volume_suffix(f"x{ending}"):
        raise DataError(f"{root / 'dataset.json'}: file_ending {ending!r} is not a supported volume format "
                        f"({', '.join(VOLUME_SUFFIXES)})")
    channel_names = tuple(ds["channel_names"])
    return [Case3D(case, tuple(images), label, "nnunet", channel_names, ds["labels"])
            for case, images, label in nnunet_files(root, split, ds)[0]]


def nnunet2d_cases(root: str | Path, split: str = "train") -> list[Case2D]:
    """Cases of a 2D nnU-Net v2 raw dataset (``dataset.json`` ``file_ending`` ``.png``, ``.bmp``, ``.tif`` ...).

    Args:
        root: the dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``, optional ``imagesTs``).
        split: ``"train"`` (``imagesTr`` + ``labelsTr``, labels required) or ``"test"`` (``imagesTs``).

    Raises:
        DataError: no ``dataset.json``, a 3D ``file_ending``, a case with several channel files, or the problems
            listed by :func:`nnunet_files`.
    """
    root = Path(root)
    ds = read_dataset_json(root)
    ending = ds["file_ending"]
    if ds["style"] != "nnunet" or suffix_of(f"x{ending}") not in SUPPORTED_2D or ending.lower() in (".nii", ".nii.gz"):
        raise DataError(f"{root / 'dataset.json'}: not a 2D nnU-Net dataset (file_ending {ending!r}, expected a 2D "
                        f"image format such as .png with 'channel_names')")
    cases = []
    for case, images, label in nnunet_files(root, split, ds, one_file_per_channel=False)[0]:
        if len(images) != 1:
            raise DataError(f"case {case!r}: {len(images)} channel files ({images[1].name} ...); 2D nnU-Net datasets "
                            f"with several channel files per case are not supported yet (one {case}_0000{ending})")
        cases.append(Case2D(case, images[0], label))
    norm = nnunet2d_normalization(root, ds)
    return [Case2D(c.id, c.image, c.label, c.mask, norm) for c in cases]


def nnunet2d_normalization(root: str | Path, ds: dict[str, Any] | None = None, n_samples: int = 10000,
                           seed: int = 1234) -> tuple[dict[str, Any], ...]:
    """Per-channel normalisation entries of a 2D nnU-Net dataset from its ``channel_names`` (see the module
    docstring). ``CT`` channels get the foreground statistics (label > 0; every pixel of a case without foreground) of
    at most ``n_samples`` seeded random pixels per ``imagesTr`` case, as nnU-Net's fingerprint.

    Args:
        root: the dataset folder.
        ds: :func:`mambaseg.data.layouts.dataset_json.read_dataset_json` of ``root`` (read when None).
    """
    root = Path(root)
    ds = ds or read_dataset_json(root)
    names = [nnunet_normalisation(n) for n in ds["channel_names"]]
    fp = None
    if "CT" in names:
        rng = np.random.default_rng(seed)
        samples: list[list[np.ndarray]] = [[] for _ in names]
        for _, images, label in nnunet_files(root, "train", ds, one_file_per_channel=False)[0]:
            image, _ = read_image(images[0])
            if image.shape[0] != len(names):
                raise DataError(f"{images[0]}: {image.shape[0]} channel(s), {root / 'dataset.json'} "
                                f"'channel_names' lists {len(names)}")
            lab = read_label(label, None)[0] if label is not None else None
            fg = lab > 0 if lab is not None and np.any(lab > 0) else np.ones(image.shape[1:], dtype=bool)
            n_fg = int(fg.sum())
            pick = rng.choice(n_fg, size=min(n_samples, n_fg), replace=False)
            for c in range(image.shape[0]):
                samples[c].append(image[c][fg][pick].astype(np.float64))
        intensity = {}
        for c, chunks in enumerate(samples):
            v = np.concatenate(chunks) if chunks else np.zeros(1)
            intensity[str(c)] = dict(mean=float(v.mean()), std=float(v.std()),
                                     percentile_00_5=float(np.percentile(v, 0.5)),
                                     percentile_99_5=float(np.percentile(v, 99.5)))
        fp = {"intensity": intensity}
    # no "shapes" in fp: the 2D pipeline does not crop, so zscore is over every pixel
    return tuple(normalization_entries(names, fp))
