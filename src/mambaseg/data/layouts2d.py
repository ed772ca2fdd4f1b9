"""2D dataset layouts (DRIVE and a generic images/labels folder), case loading and FOV estimation.

Two on-disk layouts are understood:

* **DRIVE** (:func:`mambaseg.data.cases.detect_layout` -> ``"drive"``)::

    root/training/images/21_training.tif, root/training/1st_manual/21_manual1.gif,
    root/training/mask/21_training_mask.gif; root/test/images/01_test.tif, root/test/1st_manual/01_manual1.gif,
    root/test/mask/01_test_mask.gif

  Suffixes are not fixed: any suffix in :data:`~mambaseg.data.io.SUPPORTED_2D` with the right stem is found.
  Training labels are required; test labels may be absent (the official DRIVE download omits them) and then are
  ``None``. Missing FOV masks give ``mask=None`` (see :func:`estimate_fov`).

* **folder2d** (``"folder2d"``): ``root/images/<stem>.<ext>``, ``root/labels/<stem>.<ext>`` with matching stems and an
  optional ``root/masks/<stem>.<ext>``.

* **nnU-Net v2, 2D** (``layout: nnunet`` with a 2D ``file_ending`` such as ``.png`` in ``dataset.json``)::

    root/dataset.json, root/imagesTr/CASE_0000.png, root/labelsTr/CASE.png, root/imagesTs/CASE_0000.png

  One image file per case (an RGB ``_0000.png`` gives 3 channels, as nnU-Net's ``NaturalImage2DIO`` reads it);
  several channel files per case (``_0001`` ...) are refused. Labels hold the class values (0, 1, 2, ...).
  ``channel_names`` choose each channel's normalisation as in nnU-Net v2
  (:func:`mambaseg.data.layouts3d.nnunet_normalisation`): ``CT`` (clip to the foreground 0.5/99.5 percentiles of
  all ``imagesTr`` cases, then z-score with their foreground mean/std), ``noNorm``, ``rescale_to_0_1``,
  ``rgb_to_0_1`` (``x / 255``), and ``zscore`` / any other name: per-image z-score over every pixel (the 2D
  pipeline does not crop to the non-zero region, so nnU-Net's non-zero-mask variant does not arise). The entries
  (:attr:`Case2D.norm`, see :func:`mambaseg.data.preprocess.normalize_channels`) are stored with the model so
  predict applies the same ones.

:func:`load_case2d` reads one case and normalises the image: with :attr:`Case2D.norm` set (nnU-Net datasets) as
those entries say; otherwise **per image and per channel z-score**, ``(x - mean) / std`` with mean and std computed
over the pixels inside the mask (the whole image when there is no mask); pixels outside the mask are then set to 0
(the normalised mean). ``std`` below 1e-8 is replaced by 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from mambaseg.data.io import SUPPORTED_2D, DataError, read_image, read_label, read_mask, suffix_of

__all__ = [
    "Case2D",
    "drive_cases",
    "estimate_fov",
    "folder2d_cases",
    "load_case2d",
    "nnunet2d_cases",
    "nnunet2d_normalization",
    "normalize_image",
]

logger = logging.getLogger(__name__)

DRIVE_SPLITS = ("training", "test")


@dataclass(frozen=True)
class Case2D:
    """One 2D case: an image with an optional label map and an optional (FOV) mask.

    ``norm``: per-channel normalisation entries (:func:`mambaseg.data.preprocess.normalize_channels`) chosen by an
    nnU-Net ``dataset.json``; empty = the default z-score of :func:`normalize_image`.
    """

    id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None
    norm: tuple[dict[str, Any], ...] = field(default=(), compare=False)


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(suffix_of(path))]


def _index_dir(folder: Path) -> dict[str, Path]:
    """Map stem -> file for every supported file in ``folder`` (empty when the folder is missing)."""
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and suffix_of(f) in SUPPORTED_2D and not f.name.startswith("."):
            stem = _stem(f)
            if stem in out:
                raise DataError(f"{f}: two files share the stem {stem!r} (other: {out[stem].name}); expected one")
            out[stem] = f
    return out


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
    images = _index_dir(img_dir)
    labels = _index_dir(base / "1st_manual")
    masks = _index_dir(base / "mask")
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
    images = _index_dir(img_dir)
    if not images:
        raise DataError(f"{img_dir}: no images found; supported suffixes: {', '.join(SUPPORTED_2D)}")
    labels = _index_dir(root / "labels")
    masks = _index_dir(root / "masks")
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


def nnunet2d_cases(root: str | Path, split: str = "train") -> list[Case2D]:
    """Cases of a 2D nnU-Net v2 raw dataset (``dataset.json`` ``file_ending`` ``.png``, ``.bmp``, ``.tif`` ...).

    Args:
        root: the dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``, optional ``imagesTs``).
        split: ``"train"`` (``imagesTr`` + ``labelsTr``, labels required) or ``"test"`` (``imagesTs``).

    Raises:
        DataError: no ``dataset.json``, a 3D ``file_ending``, a case with several channel files, or the problems
            listed by :func:`mambaseg.data.layouts3d.nnunet_files`.
    """
    from mambaseg.data.layouts3d import nnunet_files, read_dataset_json

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
        ds: :func:`mambaseg.data.layouts3d.read_dataset_json` of ``root`` (read when None).
    """
    from mambaseg.data.layouts3d import nnunet_files, nnunet_normalisation, read_dataset_json
    from mambaseg.data.preprocess import normalization_entries

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


def normalize_image(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Per-channel z-score inside ``mask`` (whole image without one); outside the mask is set to 0.

    Args:
        image: ``(C, *S)`` float array.
        mask: optional ``S``-shaped bool mask.

    Returns:
        ``(normalised float32 image, {'mean': [...], 'std': [...]})``.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    means, stds = [], []
    for c in range(image.shape[0]):
        vals = image[c][mask] if mask is not None and mask.any() else image[c]
        mean, std = float(vals.mean()), float(vals.std())
        std = std if std > 1e-8 else 1.0
        out[c] = (image[c] - mean) / std
        means.append(mean)
        stds.append(std)
    if mask is not None:
        out[:, ~mask] = 0.0
    return out, {"mean": means, "std": stds}


def load_case2d(case: Case2D, num_classes: int | None = 2, normalize: bool = True,
                estimate_mask: bool = False) -> dict:
    """Read and normalise one 2D case.

    Args:
        case: the case record.
        num_classes: label values must be in ``[0, num_classes)`` (None: only checked to be >= 0).
        normalize: apply the per-image, per-channel z-score described in the module docstring.
        estimate_mask: when the case has no mask, estimate a fundus FOV with :func:`estimate_fov`.

    Returns:
        ``dict(image=float32 (C, H, W), label=int64 (H, W) | None, mask=bool (H, W) | None, meta=dict)``; ``meta``
        holds the image meta plus ``id``, ``label_path``, ``mask_path`` and the normalisation ``mean``/``std``.

    Raises:
        DataError: unreadable files, bad label values, or image/label/mask sizes that differ (naming both files).
    """
    image, meta = read_image(case.image)
    hw = image.shape[1:]
    label = mask = None
    if case.label is not None:
        label, _ = read_label(case.label, num_classes)
        if label.shape != hw:
            raise DataError(f"{case.label}: label shape {label.shape} differs from image {case.image} shape {hw}")
    if case.mask is not None:
        mask, _ = read_mask(case.mask)
        if mask.shape != hw:
            raise DataError(f"{case.mask}: mask shape {mask.shape} differs from image {case.image} shape {hw}")
    elif estimate_mask:
        mask = estimate_fov(image)
    meta.update(id=case.id, label_path=None if case.label is None else str(case.label),
                mask_path=None if case.mask is None else str(case.mask),
                mask_estimated=case.mask is None and mask is not None)
    if normalize and case.norm:
        from mambaseg.data.preprocess import normalize_channels

        if len(case.norm) != image.shape[0]:
            raise DataError(f"{case.image}: {image.shape[0]} channel(s), the dataset's 'channel_names' list "
                            f"{len(case.norm)}")
        image, stats = normalize_channels(image, case.norm, str(case.image))
        meta.update(normalization=[dict(e) for e in case.norm], normalization_stats=stats)
    elif normalize:
        image, stats = normalize_image(image, mask)
        meta.update(stats)
    return {"image": image, "label": label, "mask": mask, "meta": meta}


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of a 1D sample (numpy only)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return float(centres[np.argmax(np.nan_to_num(between))])


def estimate_fov(image: np.ndarray) -> np.ndarray:
    """Estimate the field of view of a fundus photograph (the bright disc on a dark background).

    Uses the red channel (channel 0) of a colour image or the channel mean otherwise: a 5x5 median filter, a
    threshold at half the Otsu threshold (the background is near black, so this sits well below the darkest retina),
    a binary opening of radius ~1 % of the image side, the largest connected component and hole filling.
    On DRIVE this matches the provided masks with IoU > 0.99.

    Args:
        image: ``(C, H, W)`` raw (un-normalised) image.

    Returns:
        ``(H, W)`` bool mask.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    chan = image[0] if image.shape[0] >= 3 else image.mean(axis=0)
    chan = ndi.median_filter(chan.astype(np.float32), size=5)
    if chan.max() <= chan.min():
        return np.ones(chan.shape, dtype=bool)
    low = float(np.percentile(chan, 1))
    fov = chan > low + 0.5 * (_otsu(chan.ravel()) - low)
    radius = max(1, round(min(chan.shape) / 100))
    fov = ndi.binary_opening(fov, structure=ndi.generate_binary_structure(2, 1), iterations=radius)
    lab, n = ndi.label(fov)
    if n > 1:
        sizes = ndi.sum_labels(fov, lab, index=np.arange(1, n + 1))
        fov = lab == (1 + int(np.argmax(sizes)))
    return ndi.binary_fill_holes(fov)
