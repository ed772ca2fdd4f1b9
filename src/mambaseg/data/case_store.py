"""On-disk format of preprocessed 3D cases, read on demand: the training set holds paths, never the voxels.

Format 2 (written by :class:`~mambaseg.data.plans.cache.PreprocessCache`), per case in a plan folder:

- uncompressed (default, ``data.cache_compression: false``): ``<case>.image.npy`` (float32 ``(C, X, Y, Z)``),
  ``<case>.label.npy`` (int16, or int32 for label values >= 2**15) and ``<case>.fg.npy`` (flat indices of the
  voxels with label > 0, int32/int64), all opened with ``np.load(mmap_mode='r')``: cropping a patch reads only the
  pages of that patch, and a foreground-centred patch needs one element of ``fg.npy`` instead of a scan of the label
  map. Disk = the preprocessed voxels (a cropped BraTS case: ~58 MB).
- compressed (``data.cache_compression: true``): ``<case>.v2.npz`` with the same three arrays, deflated
  (``np.savez_compressed``). Several times smaller on disk for label maps and background-heavy images, but not
  mappable: every patch decompresses the whole case (tens to hundreds of ms for a BraTS case, done in the
  DataLoader workers when ``train.num_workers > 0``). RAM stays one case per reader either way. Measured on a 128³
  phantom (background zero outside the head), 1 thread: 12.0 MB -> 2.7 MB on disk, 1.2 ms -> 24.4 ms per 64³ patch.

``<case>.json`` (the props of :func:`~mambaseg.data.plans.preprocess.preprocess_case`) is written last and marks a
complete entry; it records ``cache_format: 2``, the storage (``npy`` | ``npz``) and the label value range, so building a
training set reads no voxels at all once the cache exists.

Format 1 (before): ``<case>.npz`` (uncompressed zip of ``image`` and ``label``) + ``<case>.json`` without
``cache_format``. It is detected and converted once (read, written as format 2, removed) - no preprocessing again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.utils.atomic import atomic_path

__all__ = ["CACHE_FORMAT", "LazyCase", "entry_files", "foreground_indices", "read_arrays", "write_entry"]

CACHE_FORMAT = 2
_NPY_KEYS = ("image", "label", "fg")


def foreground_indices(label: np.ndarray) -> np.ndarray:
    """Flat indices of ``label > 0`` (what :func:`mambaseg.data.sampling.foreground_flat_indices` returns for the
    default foreground), int32 when they fit."""
    flat = np.flatnonzero(np.asarray(label) > 0)
    return flat.astype(np.int32) if label.size < 2**31 else flat


def entry_files(folder: Path, case_id: str, compressed: bool) -> dict[str, Path]:
    """The array files of a format-2 entry: ``{'image', 'label', 'fg'}`` (npy) or ``{'npz'}`` (compressed)."""
    if compressed:
        return {"npz": folder / f"{case_id}.v2.npz"}
    return {k: folder / f"{case_id}.{k}.npy" for k in _NPY_KEYS}


def _atomic(path: Path, write) -> None:
    """``write(fh)`` into a temporary next to ``path``, renamed when complete
    (:func:`mambaseg.utils.atomic.atomic_path`; no fsync: a cache entry lost to a power cut is recomputed)."""
    with atomic_path(path, fsync=False) as tmp, open(tmp, "wb") as fh:
        write(fh)


def write_entry(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray | None, props: dict[str, Any],
                compressed: bool) -> dict[str, Any]:
    """Write a format-2 entry (arrays first, the ``.json`` last, each atomically) and return the props written.

    Args:
        folder: the plan folder.
        case_id: the case (file name stem).
        image: float32 ``(C, X, Y, Z)``.
        label: integer ``(X, Y, Z)`` or None (stored int16, int32 when values need it).
        props: JSON-friendly props; ``cache_format``, ``storage``, ``label_range``, ``shape`` are added.
        compressed: ``np.savez_compressed`` into one ``.v2.npz`` instead of mappable ``.npy`` files.
    """
    arrays: dict[str, np.ndarray] = {"image": np.ascontiguousarray(image, dtype=np.float32)}
    props = dict(props)
    if label is not None:
        lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
        small = -(2**15) <= lo and hi < 2**15
        arrays["label"] = np.ascontiguousarray(label, dtype=np.int16 if small else np.int32)
        arrays["fg"] = foreground_indices(label)
        props["label_range"] = [lo, hi]
    else:
        props.pop("label_range", None)
    files = entry_files(folder, case_id, compressed)
    if compressed:
        _atomic(files["npz"], lambda fh: np.savez_compressed(fh, **arrays))
    else:
        for key, path in files.items():
            if key in arrays:
                _atomic(path, lambda fh, a=arrays[key]: np.save(fh, a))
            else:
                path.unlink(missing_ok=True)  # a label-less entry over an older labelled one
    props.update(cache_format=CACHE_FORMAT, storage="npz" if compressed else "npy",
                 shape=[int(s) for s in arrays["image"].shape], has_label=label is not None)
    _atomic(folder / f"{case_id}.json", lambda fh: fh.write(json.dumps(props).encode()))
    return props


def read_arrays(folder: Path, case_id: str, props: dict[str, Any], keys=("image", "label"),
                mmap: bool = True) -> dict[str, np.ndarray | None]:
    """Arrays of a format-2 entry: memory maps (``storage: npy``, ``mmap``) or decompressed copies (``npz``).

    Raises:
        OSError, ValueError, KeyError: a missing or damaged file.
    """
    if props.get("storage") == "npz":
        with np.load(entry_files(folder, case_id, True)["npz"]) as z:
            return {k: (z[k] if k in z.files else None) for k in keys}
    files = entry_files(folder, case_id, False)
    out: dict[str, np.ndarray | None] = {}
    for k in keys:
        if k != "image" and not props.get("has_label", True):
            out[k] = None
            continue
        out[k] = np.load(files[k], mmap_mode="r" if mmap else None, allow_pickle=False)
    return out


class LazyCase(Mapping):
    """A training/validation case that reads its arrays when asked: ``case['image']`` / ``case['label']`` open the
    entry's files on each access (memory maps for ``npy`` storage, so nothing stays resident once the array is
    dropped); ``case['fg']`` are the flat foreground indices; ``id``, ``meta`` (the props) and ``mask`` (None) are
    plain values. Behaves like the ``{id, image, label, mask, meta}`` dicts of in-memory cases, is small to pickle
    (DataLoader workers) and holds no open file. ``mmap=False`` reads writable in-RAM copies instead (whole-volume
    use such as validation, one case at a time).
    """

    __slots__ = ("case_id", "folder", "mmap", "props")

    def __init__(self, folder: str | os.PathLike, case_id: str, props: dict[str, Any], mmap: bool = True):
        self.folder = Path(folder)
        self.case_id = str(case_id)
        self.props = props
        self.mmap = bool(mmap)

    def __getitem__(self, key: str) -> Any:
        if key == "id":
            return self.case_id
        if key == "meta":
            return self.props
        if key == "mask":
            return None
        if key in ("image", "label", "fg"):
            return read_arrays(self.folder, self.case_id, self.props, keys=(key,), mmap=self.mmap)[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:  # without reading the arrays
        return key in ("id", "image", "label", "mask", "meta", "fg")

    def __iter__(self) -> Iterator[str]:
        return iter(("id", "image", "label", "mask", "meta"))

    def __len__(self) -> int:
        return 5

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, X, Y, Z)`` of the image, from the props (no file read)."""
        return tuple(int(s) for s in self.props["shape"])

    def __repr__(self) -> str:
        return f"LazyCase({self.case_id!r}, {self.folder}, shape={self.props.get('shape')})"
