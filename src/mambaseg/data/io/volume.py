"""3D volume I/O that keeps the geometry: NIfTI through nibabel, NRRD/MHA/MHD through optional SimpleITK.

Readers follow nnU-Net's contract: ``read_*(path) -> (array[C, X, Y, Z], meta)``. Axes are the voxel axes of the file
(i, j, k) in the order nibabel returns them; no reorientation happens here (:mod:`mambaseg.data.plans` reorients to
RAS).
``meta`` is a plain dict that is JSON-friendly after :func:`meta_to_json`:

- ``path`` (str), ``shape`` (X, Y, Z), ``spacing`` (3,) in mm, ``affine`` (4, 4) voxel -> RAS+ world (mm),
- ``orientation`` axis codes such as ``("R", "A", "S")``,
- ``qform``/``qform_code``/``sform``/``sform_code``/``xyzt_units`` so :func:`write_nifti` can write a label map whose
  header geometry equals the reference (SimpleITK inputs get ``sform = qform = affine`` with code 1),
- ``n_channels`` (C) and ``source`` (``"nibabel"`` or ``"simpleitk"``).

Every failure is a one-line :class:`DataError` naming the path: missing, zero-byte or truncated files (the data block
is read eagerly so a gzip EOF is caught here, not inside a DataLoader worker), wrong dimensionality, NaN/Inf voxels.

Headers are untrusted input: they are checked before any voxel is read, in :mod:`mambaseg.data.io.headers`
(:func:`~mambaseg.data.io.headers.check_nifti_header`, :func:`~mambaseg.data.io.headers.volume_header`,
:func:`~mambaseg.data.io.headers.check_resample_size`); suffixes come from :mod:`mambaseg.data.io.suffixes`.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.data.io.headers import check_volume_file, itk_affine, itk_header, open_nifti
from mambaseg.data.io.suffixes import ITK_SUFFIXES, NIFTI_SUFFIXES, VOLUME_SUFFIXES, volume_suffix
from mambaseg.utils.atomic import atomic_path
from mambaseg.utils.optional import MissingDependency, require

__all__ = [
    "check_label_values",
    "meta_from_json",
    "meta_to_json",
    "read_nifti",
    "read_nifti_label",
    "read_volume",
    "read_volume_label",
    "write_nifti",
]

logger = logging.getLogger(__name__)


def _to_channels_first(data: np.ndarray, path: Path, allow_4d: bool) -> np.ndarray:
    """(X, Y, Z) -> (1, X, Y, Z); (X, Y, Z, T) -> (T, X, Y, Z); NIfTI vector images (X, Y, Z, 1, C) -> (C, X, Y, Z)."""
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4 and allow_4d:
        return np.moveaxis(data, -1, 0)
    if data.ndim == 4 and data.shape[3] == 1:
        return data[None, :, :, :, 0]
    expected = "3D (X, Y, Z) or 4D (X, Y, Z, C)" if allow_4d else "3D (X, Y, Z)"
    raise DataError(f"{path}: got a {data.ndim}D array of shape {tuple(data.shape)}, expected {expected}")


def _check_finite(data: np.ndarray, path: Path) -> None:
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise DataError(f"{path}: {n_bad} NaN/Inf voxel(s), expected finite intensities")


def _nifti_meta(img: nib.Nifti1Image | nib.Nifti2Image, path: Path, n_channels: int) -> dict[str, Any]:
    hdr = img.header
    affine = np.asarray(img.affine, dtype=np.float64)
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    return {
        "path": str(path),
        "shape": tuple(int(s) for s in img.shape[:3]),
        "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
        "affine": affine,
        "orientation": tuple(nib.aff2axcodes(affine)),
        "qform": None if qform is None else np.asarray(qform, dtype=np.float64),
        "qform_code": int(qcode),
        "sform": None if sform is None else np.asarray(sform, dtype=np.float64),
        "sform_code": int(scode),
        "xyzt_units": tuple(hdr.get_xyzt_units()),
        "n_channels": n_channels,
        "source": "nibabel",
    }


def _load_nifti(path: Path, label: bool) -> tuple[np.ndarray, dict[str, Any]]:
    check_volume_file(path)
    img = open_nifti(path, label)  # header checked before any allocation
    try:
        # force the whole data block to be read now: truncated .nii.gz fail here (gzip EOF / zlib / short read)
        if label:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read NIfTI data ({type(err).__name__}: {msg}); truncated or corrupt file?") \
            from None
    data = _to_channels_first(np.asarray(data), path, allow_4d=not label)
    return data, _nifti_meta(img, path, data.shape[0])



def _load_itk(path: Path, label: bool) -> tuple[np.ndarray, dict[str, Any]]:
    check_volume_file(path)
    try:
        sitk = require("SimpleITK", purpose=f"{path}: reading {volume_suffix(path)}")
    except MissingDependency as e:
        raise DataError(str(e)) from None
    itk_header(path, label)  # before any allocation
    try:
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) or (Z, Y, X, C)
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else "RuntimeError"
        raise DataError(f"{path}: SimpleITK cannot read it ({msg})") from None
    if img.GetDimension() != 3:
        raise DataError(f"{path}: got a {img.GetDimension()}D image, expected 3D (X, Y, Z)")
    if img.GetNumberOfComponentsPerPixel() > 1:
        if label:
            raise DataError(f"{path}: label map has {img.GetNumberOfComponentsPerPixel()} components, expected 1")
        arr = np.transpose(arr, (3, 2, 1, 0))
    else:
        arr = np.transpose(arr, (2, 1, 0))[None]
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = itk_affine(spacing, np.asarray(img.GetOrigin(), dtype=np.float64), direction)
    meta = {
        "path": str(path), "shape": tuple(int(s) for s in arr.shape[1:]), "spacing": spacing, "affine": affine,
        "orientation": tuple(nib.aff2axcodes(affine)), "qform": affine.copy(), "qform_code": 1, "sform": affine.copy(),
        "sform_code": 1, "xyzt_units": ("mm", "sec"), "n_channels": int(arr.shape[0]), "source": "simpleitk",
    }
    if not label:
        arr = arr.astype(np.float32, copy=False)
    return arr, meta


def _load(path: str | os.PathLike, label: bool) -> tuple[np.ndarray, dict[str, Any]]:
    path = Path(path)
    suf = volume_suffix(path)
    if suf in NIFTI_SUFFIXES:
        return _load_nifti(path, label)
    if suf in ITK_SUFFIXES:
        return _load_itk(path, label)
    raise DataError(f"{path}: unsupported suffix, expected one of {', '.join(VOLUME_SUFFIXES)}")


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an image volume of any supported format (suffix dispatch).

    Returns:
        ``(image, meta)`` with image float32 ``(C, X, Y, Z)``: C = 1 for 3D files, C = T for 4D files.

    Raises:
        DataError: missing/empty/truncated file, unsupported suffix, wrong dimensionality, NaN/Inf voxels.
    """
    data, meta = _load(path, label=False)
    data = np.ascontiguousarray(data, dtype=np.float32)
    _check_finite(data, Path(path))
    return data, meta


def _classes(num_classes: int | None) -> str:
    return "" if num_classes is None else f" 0..{num_classes - 1} (data.num_classes={num_classes})"


def check_label_values(label: np.ndarray, num_classes: int, path: str | os.PathLike) -> None:
    """Every value of the integer ``label`` map is a class id in ``0..num_classes - 1``.

    Raises:
        DataError: naming ``path``, the values found and ``num_classes``.
    """
    label = np.asarray(label)
    if label.size == 0 or (label.min() >= 0 and label.max() < num_classes):  # O(n), no sort in the common case
        return
    values = np.unique(label)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(f"{path}: label values {_some(values, 16)} include {_some(bad)} outside 0..{num_classes - 1} "
                        f"(data.num_classes={num_classes}); set data.num_classes to the number of classes including "
                        f"background, or fix the label map")


def _some(values: np.ndarray, n: int = 8) -> str:
    """``[-2, -1]`` or ``[0.5, 1.5, ... 12 values]`` for messages."""
    vals = [float(v) if not float(v).is_integer() else int(v) for v in values[:n]]
    more = f", ... {len(values)} values" if len(values) > n else ""
    return f"{vals}"[:-1] + more + "]"


def read_volume_label(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a label map of any supported format.

    Args:
        path: the label file.
        num_classes: when given, values must also be < ``num_classes`` (and every message names it).

    Returns:
        ``(label, meta)`` with label int64 ``(X, Y, Z)``.

    Raises:
        DataError: as :func:`read_volume`, plus non-integer or negative values (those found are listed), values
            >= ``num_classes``, or more than one channel.
    """
    data, meta = _load(path, label=True)
    path = Path(path)
    data = data[0]
    if np.issubdtype(data.dtype, np.floating):
        _check_finite(data, path)
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            found = np.unique(data[rounded != data])
            raise DataError(f"{path}: label map holds non-integer values ({_some(found)}), expected integer "
                            f"class ids{_classes(num_classes)}")
        data = rounded
    data = np.ascontiguousarray(data, dtype=np.int64)
    if data.size and data.min() < 0:
        found = np.unique(data[data < 0])
        raise DataError(f"{path}: label map holds negative values ({_some(found)}), expected ids >= 0"
                        f"{_classes(num_classes)}")
    if num_classes is not None:
        check_label_values(data, num_classes, path)
    return data, meta


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI image. Same contract as :func:`read_volume`; other suffixes are rejected."""
    if volume_suffix(path) not in NIFTI_SUFFIXES:
        raise DataError(f"{path}: not a NIfTI file, expected suffix .nii or .nii.gz")
    return read_volume(path)


def read_nifti_label(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI label map -> ``(int64 (X, Y, Z), meta)``. See :func:`read_volume_label`."""
    if volume_suffix(path) not in NIFTI_SUFFIXES:
        raise DataError(f"{path}: not a NIfTI file, expected suffix .nii or .nii.gz")
    return read_volume_label(path)


def write_nifti(path: str | os.PathLike, array: np.ndarray, meta: dict[str, Any], dtype: Any = np.uint8) -> Path:
    """Write ``array`` as NIfTI with the reference geometry in ``meta`` (affine, qform/sform and their codes),
    atomically (temporary file in the same folder, then rename).

    Args:
        path: output file (``.nii`` or ``.nii.gz``).
        array: ``(X, Y, Z)`` label map / volume, or ``(C, X, Y, Z)`` (written as a 4D ``(X, Y, Z, C)`` file).
        meta: the reference's meta from a reader (or :func:`meta_from_json`); the spatial shape must match.
        dtype: on-disk dtype, ``uint8`` by default (label maps); use ``float32`` for images/probabilities.

    Returns:
        The written path.
    """
    path = Path(path)
    if volume_suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"path must end with .nii or .nii.gz, got {path}")
    array = np.asarray(array)
    ref_shape = tuple(int(s) for s in meta["shape"])
    spatial = array.shape if array.ndim == 3 else array.shape[1:]
    if array.ndim not in (3, 4) or tuple(spatial) != ref_shape:
        raise ValueError(f"array shape {array.shape} does not match the reference {meta.get('path')} spatial shape "
                         f"{ref_shape} (expected (X, Y, Z) or (C, X, Y, Z))")
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"array values [{array.min()}, {array.max()}] do not fit dtype {dtype}")
    data = array if array.ndim == 3 else np.moveaxis(array, 0, -1)
    affine = np.asarray(meta["affine"], dtype=np.float64)
    img = nib.Nifti1Image(np.ascontiguousarray(data.astype(dtype, copy=False)), affine)
    hdr = img.header
    qform = meta.get("qform")
    sform = meta.get("sform")
    hdr.set_qform(affine if qform is None else np.asarray(qform), code=int(meta.get("qform_code", 1)))
    hdr.set_sform(affine if sform is None else np.asarray(sform), code=int(meta.get("sform_code", 1)))
    units = meta.get("xyzt_units")
    if units:
        hdr.set_xyzt_units(*units)
    with atomic_path(path) as tmp:  # a kill never leaves a partial file under the final name
        nib.save(img, str(tmp))
    return path


def meta_to_json(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with arrays as nested lists and tuples as lists, for ``json.dump``."""
    out: dict[str, Any] = {}
    for key, val in meta.items():
        if isinstance(val, np.ndarray):
            out[key] = val.tolist()
        elif isinstance(val, tuple):
            out[key] = list(val)
        elif isinstance(val, np.generic):
            out[key] = val.item()
        else:
            out[key] = val
    return out


def meta_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`meta_to_json`: arrays for ``affine``/``qform``/``sform``/``spacing``, tuples for the rest."""
    meta = dict(data)
    for key in ("affine", "qform", "sform", "spacing"):
        if meta.get(key) is not None:
            meta[key] = np.asarray(meta[key], dtype=np.float64)
    for key in ("shape", "orientation", "xyzt_units"):
        if meta.get(key) is not None:
            meta[key] = tuple(meta[key])
    return meta
