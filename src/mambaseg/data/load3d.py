"""Reading one 3D case (:func:`load_case3d`) of any volume layout.

:func:`load_case3d` reads a :class:`~mambaseg.data.records.Case3D` into ``dict(image float32 (C, X, Y, Z),
label int64 (X, Y, Z) | None, meta)`` and checks it (modality/label shapes and affines agree, channel count matches
the dataset description, label values are declared); Synapse npz/h5 cases are read by the readers of
:mod:`~mambaseg.data.io.synapse`, every other layout's files as NIfTI (or the other volume formats of
:mod:`mambaseg.data.io.volume`). :func:`remap_labels` applies a case's ``label_map`` (BraTS 4 -> 3, BTCV -> 8 organs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mambaseg.data.errors import DataError
from mambaseg.data.io.synapse import load_h5, load_npz_slices
from mambaseg.data.io.volume import check_label_values, read_volume, read_volume_label
from mambaseg.data.records import Case3D

__all__ = ["load_case3d", "remap_labels"]


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
        if case.layout == "synapse_h5":
            image, label, _ = load_h5(case.images[0])
        else:
            image, label, _ = load_npz_slices(case.images)
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
