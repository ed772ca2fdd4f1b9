"""Volume headers (NIfTI through nibabel, NRRD/MHA/MHD through optional SimpleITK) read and checked before any voxel
is: the geometry :func:`volume_header` returns, and the bounds on what reading or resampling a volume would allocate.

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
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import ITK_SUFFIXES, NIFTI_SUFFIXES, VOLUME_SUFFIXES, volume_suffix
from mambaseg.utils.limits import MAX_SPACING_MM, MIN_SPACING_MM, format_bytes, max_volume_bytes
from mambaseg.utils.optional import MissingDependency, require

__all__ = [
    "check_nifti_header",
    "check_resample_size",
    "check_volume_file",
    "itk_affine",
    "itk_header",
    "open_nifti",
    "quiet_nibabel",
    "resampled_shape",
    "volume_header",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def check_volume_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a volume with suffix {', '.join(VOLUME_SUFFIXES)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")


_DEFLATE_MAX_RATIO = 1032  # the largest expansion of a deflate (gzip) stream
_GZIP_SLACK = 1 << 16  # bytes: headers, trailers, a small block
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}


@contextlib.contextmanager
def quiet_nibabel() -> Iterator[None]:
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



def itk_affine(spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """ITK geometry (LPS world) -> 4x4 voxel-to-RAS affine, the NIfTI convention."""
    aff = np.eye(4)
    aff[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    aff[:3, 3] = _LPS_TO_RAS @ origin
    return aff


def _nifti_channels(shape: Sequence[int]) -> int:
    if len(shape) == 5 and shape[3] == 1:
        return int(shape[4])
    return int(shape[3]) if len(shape) == 4 else 1


def itk_header(path: Path, label: bool) -> dict[str, Any]:
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
    affine = itk_affine(spacing, origin, direction.reshape(3, 3))
    _check_affine(path, affine)
    return {"path": str(path), "shape": size, "spacing": spacing, "affine": affine, "n_channels": comps}


def open_nifti(path: Path, label: bool):
    """``nib.load`` of a NIfTI file whose header passed :func:`check_nifti_header` (no voxel data read yet); an
    unreadable header is a :class:`DataError` naming the file."""
    try:
        with quiet_nibabel():
            img = nib.load(str(path))
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot read the NIfTI header ({type(err).__name__}: {msg})") from None
    check_nifti_header(img, path, label)
    return img


def volume_header(path: str | os.PathLike, label: bool = False) -> dict[str, Any]:
    """Geometry of a volume from its header alone, after the checks of :func:`check_nifti_header` (NIfTI) or the
    same checks on SimpleITK's image information (NRRD/MHA/MHD); no voxel data is read.

    Returns:
        ``dict(path, shape (spatial, as declared), spacing (mm), affine (4, 4) voxel -> RAS, n_channels)``.
    """
    path = Path(path)
    check_volume_file(path)
    suf = volume_suffix(path)
    if suf in ITK_SUFFIXES:
        return itk_header(path, label)
    if suf not in NIFTI_SUFFIXES:
        raise DataError(f"{path}: unsupported suffix, expected one of {', '.join(VOLUME_SUFFIXES)}")
    img = open_nifti(path, label)
    affine = np.asarray(img.affine, dtype=np.float64)
    shape = tuple(int(s) for s in img.header.get_data_shape())
    return {"path": str(path), "shape": shape[:3], "spacing": np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
            "affine": affine,
                "n_channels": _nifti_channels(shape)}


def resampled_shape(shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float]) -> tuple[int, ...]:
    """The (RAS-ordered) shape a ``shape`` volume with ``affine`` gets at ``target_spacing`` (RAS order, mm), as
    :func:`mambaseg.data.plans.preprocess.preprocess_case` computes it for the uncropped volume (an upper bound)."""
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
