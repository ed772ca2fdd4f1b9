"""Reading 2D images, label maps and masks (raster files through Pillow, and 2D NIfTI).

Readers are chosen by file suffix (:mod:`mambaseg.data.io.suffixes`) through ``_READERS``, so double suffixes such
as ``.nii.gz`` work. Every reader returns the raw pixel array ``(H, W)`` or ``(H, W, C)`` plus a ``meta`` dict; the
public functions turn that into the library's layouts:

* :func:`read_image` -> ``float32 (C, H, W)`` (channels first, as every reader in ``mambaseg``);
* :func:`read_label` -> ``int64 (H, W)`` class indices;
* :func:`read_mask`  -> ``bool (H, W)``.

``meta`` always holds ``path`` (str), ``shape`` (the returned array's shape) and ``spacing`` (``(1.0, 1.0)`` for
raster formats, the pixel size from the header for NIfTI).

Every problem with a file (missing, empty, unsupported suffix, truncated or corrupt, NaN/Inf, bad label values)
raises :class:`DataError` with a one-line message naming the file and what was expected.

Pillow conventions (documented choices):
    - ``RGB``/``RGBA``/``CMYK``/``YCbCr`` images give 3 channels (alpha is dropped), grey (``L``, ``1``, ``I``,
      ``I;16``, ``F``) gives 1 channel; 16-bit values are kept as they are (no rescaling to 8 bit).
    - Palette images (``P``, e.g. GIF): for :func:`read_image` the palette is applied (grey palette -> 1 channel,
      colour palette -> 3 channels); for :func:`read_label` / :func:`read_mask` the palette *indices* are used,
      which is what label GIFs/PNGs store (e.g. DRIVE's ``2nd_manual`` maps are palette images with indices 0/1);
      exception: a palette holding only pure black and white gives 0/255 (so a reordered binary palette is safe).
    - Multi-frame files (animated GIF, multi-page TIFF) use their first frame.

NIfTI: the data array's first two axes are (H, W) as stored (no reorientation). A 3D volume is accepted only when
one spatial axis has size 1; a 4th axis (or a 3rd one after dropping singletons) is read as channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from mambaseg.data.errors import DataError
from mambaseg.data.io.suffixes import NIFTI_SUFFIXES, RASTER_SUFFIXES, SUPPORTED_2D, suffix_of

__all__ = ["read_image", "read_label", "read_mask", "read_raw", "to_single_channel"]

logger = logging.getLogger(__name__)


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: expected a file, found a directory or special file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    suffix = suffix_of(path)
    if suffix not in _READERS:
        raise DataError(f"{path}: unsupported suffix {suffix!r}; supported: {', '.join(SUPPORTED_2D)}")
    return path


# --------------------------------------------------------------------------------------------------------------
# raw readers: path -> (array (H, W) or (H, W, C), meta extras)
# --------------------------------------------------------------------------------------------------------------
def _open_pil(path: Path) -> Image.Image:
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img = Image.open(path)
        img.load()  # force a full decode so truncated files fail here and not later
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise DataError(f"{path}: cannot decode image (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    if getattr(img, "n_frames", 1) > 1:
        logger.debug("%s has %d frames; using the first one", path, img.n_frames)
    return img


def _palette_indices(img: Image.Image) -> np.ndarray:
    """Label values of a palette image: the indices, except for pure black/white palettes (binary maps whose
    palette may be stored in any order), which give their grey values 0/255."""
    idx = np.asarray(img)
    used = np.unique(idx)
    pal = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    if used.size and used.max() < len(pal):
        colours = pal[used]
        if np.all(colours == colours[:, :1]) and set(colours[:, 0].tolist()) <= {0, 255}:
            lut = np.zeros(256, dtype=np.uint8)
            lut[used] = colours[:, 0]
            return lut[idx]
    return idx


def _pil_to_array(img: Image.Image, palette: str) -> np.ndarray:
    """Pixels of ``img`` as (H, W) or (H, W, C); ``palette`` is 'apply' or 'index' for 'P' images."""
    mode = img.mode
    if mode == "P":
        if palette == "index":
            return _palette_indices(img)
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        arr = np.asarray(img)[..., :3]
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return arr[..., 0]
        return arr
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img)
        return arr.astype(np.int32) if mode.startswith("I;16") else arr
    if mode == "LA":
        return np.asarray(img)[..., 0]
    if mode in ("RGB", "RGBA", "RGBX"):
        return np.asarray(img)[..., :3]
    return np.asarray(img.convert("RGB"))


def _read_pil(path: Path, palette: str) -> tuple[np.ndarray, dict]:
    img = _open_pil(path)
    arr = _pil_to_array(img, palette)
    return arr, {"spacing": (1.0, 1.0), "mode": img.mode}


def _read_nifti(path: Path, palette: str) -> tuple[np.ndarray, dict]:
    import nibabel as nib

    from mambaseg.data.io.headers import check_nifti_header

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise DataError(f"{path}: cannot read NIfTI (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    check_nifti_header(img, path, geometry=False)  # size, datatype and truncation before the data block is read
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel/gzip/zlib raise many types for corrupt files
        raise DataError(f"{path}: cannot read NIfTI (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc
    zooms = [float(z) for z in img.header.get_zooms()]
    shape = arr.shape
    spatial = list(range(min(arr.ndim, 3)))
    keep = [a for a in spatial if shape[a] != 1]
    if arr.ndim < 2 or arr.ndim > 4 or len(keep) != 2:
        if arr.ndim == 3 and len(keep) == 3 and arr.shape[2] in (3, 4):
            pass  # (H, W, RGB[A]) stored as a 3D volume; unusual but unambiguous enough
        else:
            raise DataError(f"{path}: expected a 2D NIfTI (H, W), a 3D one with a singleton axis or (H, W, 1, C), "
                            f"got shape {shape}")
    if arr.ndim == 3 and len(keep) == 3:
        out = arr[..., :3]
        spacing = (zooms[0], zooms[1])
    else:
        drop = tuple(a for a in spatial if a not in keep)
        out = np.squeeze(arr, axis=drop) if drop else arr
        spacing = (zooms[keep[0]], zooms[keep[1]])
    return np.asarray(out), {"spacing": spacing, "affine": np.asarray(img.affine)}


_READERS: dict[str, Callable[[Path, str], tuple[np.ndarray, dict]]] = {
    **{s: _read_pil for s in RASTER_SUFFIXES},
    **{s: _read_nifti for s in NIFTI_SUFFIXES},
}


def read_raw(path: str | Path, palette: str) -> tuple[np.ndarray, dict]:
    """The pixels of a 2D file as stored, ``(H, W)`` or ``(H, W, C)``, and ``meta``; ``palette`` ('apply' or
    'index') says what palette images give."""
    path = _check_file(path)
    arr, extra = _READERS[suffix_of(path)](path, palette)
    if arr.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D image (H, W) or (H, W, C), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{path}: contains {n} NaN/Inf values; expected finite intensities")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: unsupported pixel type {arr.dtype}; expected integer or float pixels")
    meta = {"path": str(path), **extra}
    return arr, meta


# --------------------------------------------------------------------------------------------------------------
# public readers
# --------------------------------------------------------------------------------------------------------------
def read_image(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a 2D image as channels-first float32.

    Args:
        path: file with one of the suffixes in :data:`SUPPORTED_2D`.

    Returns:
        ``(image, meta)`` with ``image: (C, H, W)`` float32 (C = 1 for grey, 3 for colour) holding the raw values
        (no rescaling), and ``meta`` with ``path``, ``shape`` and ``spacing`` (plus ``mode`` / ``affine``).

    Raises:
        DataError: missing/empty/corrupt file, unsupported suffix, unsupported shape or NaN/Inf values.
    """
    arr, meta = read_raw(path, palette="apply")
    image = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    image = np.ascontiguousarray(image, dtype=np.float32)
    meta["shape"] = tuple(image.shape)
    return image, meta


def to_single_channel(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[-1])):
        return arr[..., 0]
    raise DataError(f"{path}: {what} has {arr.shape[-1]} differing colour channels; expected a single-channel map "
                    f"(grey or palette image)")


def read_label(path: str | Path, num_classes: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a 2D label map of class indices.

    A binary map stored as 0/255 (the usual PNG/GIF convention) is mapped to 0/1. Palette images give their indices.

    Args:
        path: label file (any suffix in :data:`SUPPORTED_2D`; JPEG is accepted but lossy, so values are checked).
        num_classes: when given, every value must lie in ``[0, num_classes)``; otherwise only ``>= 0`` is checked.

    Returns:
        ``(label, meta)`` with ``label: (H, W)`` int64.

    Raises:
        DataError: unreadable file, colour (non-grey) labels, non-integer values, or values out of range (the message
            lists the offending values).
    """
    arr, meta = read_raw(path, palette="index")
    arr = to_single_channel(arr, meta["path"], "label map")
    if arr.dtype.kind == "f":
        if not np.all(arr == np.round(arr)):
            raise DataError(f"{meta['path']}: label map holds non-integer values; expected class indices")
    values = np.unique(arr)
    binary_255 = values.size and set(values.tolist()) <= {0, 255} and 255 in values
    if binary_255 and (num_classes is None or num_classes <= 255):
        arr = arr == 255
        values = np.unique(arr.astype(np.int64))
    label = np.ascontiguousarray(arr, dtype=np.int64)
    values = values.astype(np.int64)
    hi = num_classes if num_classes is not None else None
    bad = values[(values < 0) | (values >= hi)] if hi is not None else values[values < 0]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10].tolist()) + (" ..." if bad.size > 10 else "")
        expected = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{meta['path']}: label values {shown} outside {expected}; values found: "
                        f"{values[:20].tolist()} (a binary map must be 0/1 or 0/255)")
    meta["shape"] = tuple(label.shape)
    return label, meta


def read_mask(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a 2D binary mask (e.g. a field-of-view mask): any value > 0 is inside.

    Returns:
        ``(mask, meta)`` with ``mask: (H, W)`` bool.
    """
    arr, meta = read_raw(path, palette="index")
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    mask = np.ascontiguousarray(arr > 0)
    meta["shape"] = tuple(mask.shape)
    return mask, meta
