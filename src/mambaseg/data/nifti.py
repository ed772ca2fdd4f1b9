"""3D volume I/O that keeps the geometry: NIfTI through nibabel, NRRD/MHA/MHD through optional SimpleITK.

Readers follow nnU-Net's contract: ``read_*(path) -> (array[C, X, Y, Z], meta)``. Axes are the voxel axes of the file
(i, j, k) in the order nibabel returns them; no reorientation happens here (``data.preprocess`` reorients to RAS).
``meta`` is a plain dict that is JSON-friendly after :func:`meta_to_json`:

- ``path`` (str), ``shape`` (X, Y, Z), ``spacing`` (3,) in mm, ``affine`` (4, 4) voxel -> RAS+ world (mm),
- ``orientation`` axis codes such as ``("R", "A", "S")``,
- ``qform``/``qform_code``/``sform``/``sform_code``/``xyzt_units`` so :func:`write_nifti` can write a label map whose
  header geometry equals the reference (SimpleITK inputs get ``sform = qform = affine`` with code 1),
- ``n_channels`` (C) and ``source`` (``"nibabel"`` or ``"simpleitk"``).

Every failure is a one-line :class:`DataError` naming the path: missing, zero-byte or truncated files (the data block
is read eagerly so a gzip EOF is caught here, not inside a DataLoader worker), wrong dimensionality, NaN/Inf voxels.

Headers are untrusted input and are checked before any voxel is read (:func:`check_nifti_header`,
:func:`volume_header`): every dimension >= 1; real scalar voxel types (complex and RGB/RGBA are refused, naming the
datatype); the array the read produces (voxel count x itemsize: images as float32 or wider, labels as int64) within
:func:`mambaseg.utils.limits.max_volume_bytes` (2 GiB, env ``MAMBASEG_MAX_VOLUME_BYTES``); the declared data size
consistent with the file size (``.nii``: the data fits in the file; ``.nii.gz``: at most deflate's 1032:1 expansion);
pixdim and the affine's voxel sizes finite and in (1e-3, 1e3] mm; the affine finite and not singular.
:func:`check_resample_size` bounds the array a resampling to a target spacing would produce, from the header alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.utils.atomic import atomic_path
from mambaseg.utils.limits import MAX_SPACING_MM, MIN_SPACING_MM, format_bytes, max_volume_bytes
from mambaseg.utils.optional import MissingDependency, require

__all__ = [
    "ITK_SUFFIXES",
    "NIFTI_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "check_label_values",
    "check_nifti_header",
    "check_resample_size",
    "meta_from_json",
    "meta_to_json",
    "read_nifti",
    "read_nifti_label",
    "read_volume",
    "read_volume_label",
    "resampled_shape",
    "volume_header",
    "volume_suffix",
    "write_nifti",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def volume_suffix(path: str | os.PathLike) -> str:
    """The supported suffix of ``path`` (``".nii.gz"``, ``".nrrd"``, ...) or ``""`` if it has none."""
    name = str(path).lower()
    for suf in SUPPORTED_SUFFIXES:
        if name.endswith(suf):
            return suf
    return ""


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a volume with suffix {', '.join(SUPPORTED_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


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


_DEFLATE_MAX_RATIO = 1032  # the largest expansion of a deflate (gzip) stream
_GZIP_SLACK = 1 << 16  # bytes: headers, trailers, a small block
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs the header problems it fixes ("setting 0 dims to 1") to stderr; they are checked and reported
    here instead (one line, naming the file)."""
    lg = nib.imageglobals.logger
    old = lg.disabled
    lg.disabled = True
    try:
        yield
    finally:
        lg.disabled = old


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _check_shape(path: Path, shape: Sequence[int]) -> None:
    if not shape or any(int(s) < 1 for s in shape):
        raise DataError(f"{path}: header declares shape {tuple(int(s) for s in shape)}, expected every dimension >= 1")


def _check_alloc(path: Path, shape: Sequence[int], itemsize: int, what: str) -> int:
    nbytes = math.prod(int(s) for s in shape) * int(itemsize)
    cap = max_volume_bytes()
    if nbytes > cap:
        raise DataError(f"{path}: {what} {'x'.join(str(int(s)) for s in shape)} x {itemsize} bytes = "
                        f"{format_bytes(nbytes)}, above the {format_bytes(cap)} limit per volume (set "
                        f"MAMBASEG_MAX_VOLUME_BYTES to raise it)")
    return nbytes


def _check_spacing(path: Path, values: Sequence[float], what: str) -> None:
    for v in values:
        if not (math.isfinite(v) and MIN_SPACING_MM < abs(v) <= MAX_SPACING_MM):
            raise DataError(f"{path}: {what} {_fmt(values)} mm, expected finite voxel sizes in "
                            f"({MIN_SPACING_MM:g}, {MAX_SPACING_MM:g}] mm")


def _check_affine(path: Path, affine: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Finite, voxel sizes in range, not singular; returns the voxel sizes (mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"{path}: affine (sform/qform) holds NaN/Inf values, expected a finite voxel-to-world matrix")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0)) * scale
    _check_spacing(path, spacing.tolist(), "affine voxel sizes")
    det = abs(float(np.linalg.det(affine[:3, :3]))) * scale**3
    if not det > 1e-6 * float(np.prod(spacing)):
        raise DataError(f"{path}: affine is singular (its voxel axes are parallel), expected an invertible "
                        f"voxel-to-world matrix")
    return spacing


def _raw_nifti_header(img: nib.Nifti1Image | nib.Nifti2Image, path: Path):
    """The header as stored (nibabel's loader silently 'fixes' pixdim 0 to 1)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as f:
        return type(img.header).from_fileobj(f, check=False)


def check_nifti_header(img: nib.Nifti1Image | nib.Nifti2Image, path: str | os.PathLike, label: bool = False,
                       geometry: bool = True) -> None:
    """Check a lazily loaded NIfTI image's header before its data block is touched.

    Args:
        img: from ``nib.load`` (nothing read beyond the header).
        path: the file (named in every error).
        label: a label map (read as int64) instead of an image (read as float32).
        geometry: also check voxel sizes and affines (off for 2D images read as pictures, whose geometry is unused).

    Raises:
        DataError: a dimension < 1; complex or RGB/RGBA voxels (naming the datatype); the array the read produces
            above :func:`max_volume_bytes`; more declared data than the file can hold (``.nii``: file size;
            ``.nii.gz``: 1032:1 deflate bound); pixdim or affine voxel sizes not finite or outside (1e-3, 1e3] mm;
            NaN/Inf or singular affine.
    """
    path = Path(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI-1/NIfTI-2 image ({type(img).__name__})")
    hdr = img.header
    shape = tuple(int(s) for s in hdr.get_data_shape())
    _check_shape(path, shape)
    dtype = np.dtype(hdr.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "biuf":
        try:
            name = str(hdr.get_value_label("datatype"))
        except (KeyError, ValueError):
            name = str(dtype)
        kind = "complex" if dtype.kind == "c" else ("colour" if dtype.fields is not None else "non-numeric")
        raise DataError(f"{path}: voxel datatype {name} ({kind}) is not supported, expected real scalar values "
                        f"(integer or float)")
    _check_alloc(path, shape, 8 if label else max(dtype.itemsize, 4),
                 "label map (read as int64)" if label else "image (read as float32)")
    disk = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if volume_suffix(path) == ".nii":
        offset = int(hdr["vox_offset"])
        if size < offset + disk:
            raise DataError(f"{path}: header declares {format_bytes(disk)} of voxel data but the file holds "
                            f"{max(0, size - offset)} bytes after the header; truncated file or corrupt header?")
    elif disk > _DEFLATE_MAX_RATIO * size + _GZIP_SLACK:
        raise DataError(f"{path}: header declares {format_bytes(disk)} of voxel data but a {size}-byte gzip file "
                        f"expands to at most {format_bytes(_DEFLATE_MAX_RATIO * size)}; corrupt header or "
                        f"truncated file?")
    if not geometry:
        return
    scale = _UNIT_TO_MM.get(str(hdr.get_xyzt_units()[0]), 1.0)
    raw = _raw_nifti_header(img, path)
    n_sp = min(3, len(shape))
    _check_spacing(path, [float(raw["pixdim"][i]) * scale for i in range(1, 1 + n_sp)], "pixdim (voxel sizes)")
    for kind in ("sform", "qform"):
        try:
            with np.errstate(all="ignore"):
                mat, code = getattr(raw, f"get_{kind}")(coded=True)
        except (ValueError, np.linalg.LinAlgError):
            raise DataError(f"{path}: {kind} cannot be read (NaN/Inf parameters?), expected a finite "
                            f"voxel-to-world matrix") from None
        if code and mat is not None and not np.isfinite(mat).all():
            raise DataError(f"{path}: {kind} holds NaN/Inf values, expected a finite voxel-to-world matrix")
    _check_affine(path, img.affine, scale)


def _nifti_channels(shape: Sequence[int]) -> int:
    if len(shape) == 5 and shape[3] == 1:
        return int(shape[4])
    return int(shape[3]) if len(shape) == 4 else 1


def _itk_header(path: Path, label: bool) -> dict[str, Any]:
    try:
        sitk = require("SimpleITK", purpose=f"{path}: reading {volume_suffix(path)}")
    except MissingDependency as e:
        raise DataError(str(e)) from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else "RuntimeError"
        raise DataError(f"{path}: SimpleITK cannot read it ({msg})") from None
    size = tuple(int(s) for s in reader.GetSize())
    _check_shape(path, size)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel.lower():
        raise DataError(f"{path}: voxel datatype {pixel} (complex) is not supported, expected real scalar values "
                        f"(integer or float)")
    comps = int(reader.GetNumberOfComponents())
    itemsize = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * len(size), reader.GetPixelID())).dtype).itemsize
    _check_alloc(path, (*size, comps), 8 if label else max(itemsize, 4),
                 "label map (read as int64)" if label else "image (read as float32)")
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    _check_spacing(path, spacing.tolist(), "spacing")
    direction = np.asarray(reader.GetDirection(), dtype=np.float64)
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)
    if not (np.isfinite(direction).all() and np.isfinite(origin).all()):
        raise DataError(f"{path}: direction/origin hold NaN/Inf values, expected a finite geometry")
    if len(size) != 3:
        return {"path": str(path), "shape": size, "spacing": spacing, "affine": None, "n_channels": comps}
    affine = _itk_affine(spacing, origin, direction.reshape(3, 3))
    _check_affine(path, affine)
    return {"path": str(path), "shape": size, "spacing": spacing, "affine": affine, "n_channels": comps}


def volume_header(path: str | os.PathLike, label: bool = False) -> dict[str, Any]:
    """Geometry of a volume from its header alone, after the checks of :func:`check_nifti_header` (NIfTI) or the
    same checks on SimpleITK's image information (NRRD/MHA/MHD); no voxel data is read.

    Returns:
        ``dict(path, shape (spatial, as declared), spacing (mm), affine (4, 4) voxel -> RAS, n_channels)``.
    """
    path = Path(path)
    _check_file(path)
    suf = volume_suffix(path)
    if suf in ITK_SUFFIXES:
        return _itk_header(path, label)
    if suf not in NIFTI_SUFFIXES:
        raise DataError(f"{path}: unsupported suffix, expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read the NIfTI header ({type(err).__name__}: {msg})") from None
    check_nifti_header(img, path, label)
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = tuple(int(s) for s in img.header.get_data_shape())
    return {"path": str(path), "shape": shape[:3], "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
            "affine": affine,
                "n_channels": _nifti_channels(shape)}


def resampled_shape(shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float]) -> tuple[int, ...]:
    """The (RAS-ordered) shape a ``shape`` volume with ``affine`` gets at ``target_spacing`` (RAS order, mm), as
    :func:`mambaseg.data.preprocess.preprocess_case` computes it for the uncropped volume (an upper bound)."""
    affine = np.asarray(affine, dtype=np.float64)
    perm = nib.io_orientation(affine)[:, 0].astype(int)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sp_ras, sh_ras = np.empty(3), np.empty(3)
    sp_ras[perm], sh_ras[perm] = spacing, np.asarray(shape[:3], dtype=np.float64)
    target = np.asarray(target_spacing, dtype=np.float64)
    return tuple(int(max(1, round(n * s / t))) for n, s, t in zip(sh_ras, sp_ras, target))


def check_resample_size(path: str | os.PathLike, shape: Sequence[int], affine: np.ndarray,
                        target_spacing: Sequence[float], n_channels: int = 1) -> tuple[int, ...]:
    """Refuse (before resampling) a volume whose float32 array at ``target_spacing`` would exceed the cap.

    Returns:
        The resampled shape (RAS order).

    Raises:
        DataError: naming ``path``, the shapes, the spacings and the limit.
    """
    target = [float(t) for t in target_spacing]
    if len(target) != 3 or not all(math.isfinite(t) and t > 0 for t in target):
        raise DataError(f"{path}: target spacing {target} is not 3 positive finite numbers")
    new = resampled_shape(shape, affine, target)
    nbytes = math.prod(new) * int(n_channels) * 4
    cap = max_volume_bytes()
    if nbytes > cap:
        spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
        raise DataError(f"{path}: resampling its {'x'.join(str(int(s)) for s in shape[:3])} voxels of "
                        f"{_fmt(spacing)} mm to the target spacing {_fmt(target)} mm gives "
                        f"{'x'.join(map(str, new))} x {n_channels} channel(s) float32 = {format_bytes(nbytes)}, "
                        f"above the {format_bytes(cap)} limit per volume (MAMBASEG_MAX_VOLUME_BYTES)")
    return new


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
    _check_file(path)
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read the NIfTI header ({type(err).__name__}: {msg})") from None
    check_nifti_header(img, path, label)  # before any allocation
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


def _itk_affine(spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """ITK geometry (LPS world) -> 4x4 voxel-to-RAS affine, the NIfTI convention."""
    aff = np.eye(4)
    aff[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    aff[:3, 3] = _LPS_TO_RAS @ origin
    return aff


def _load_itk(path: Path, label: bool) -> tuple[np.ndarray, dict[str, Any]]:
    _check_file(path)
    try:
        sitk = require("SimpleITK", purpose=f"{path}: reading {volume_suffix(path)}")
    except MissingDependency as e:
        raise DataError(str(e)) from None
    _itk_header(path, label)  # before any allocation
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
    affine = _itk_affine(spacing, np.asarray(img.GetOrigin(), dtype=np.float64), direction)
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
    raise DataError(f"{path}: unsupported suffix, expected one of {', '.join(SUPPORTED_SUFFIXES)}")


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
