"""The dataset fingerprint a volume plan is fitted on: per case spacing (in RAS axis order), shape, shape after the
non-zero crop, and per-channel intensity statistics of foreground voxels (label > 0, or non-zero voxels when there is
no label; at most ``n_samples`` random voxels per case, like nnU-Net). :func:`cached_fingerprint` keeps it on disk
so a later run on unchanged files reads no volume to plan."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.data.load3d import load_case3d
from mambaseg.data.plans.geometry import nonzero_bbox, ras_transform
from mambaseg.data.records import Case3D
from mambaseg.utils.atomic import atomic_write_text
from mambaseg.utils.jsonable import to_jsonable

__all__ = ["cached_fingerprint", "fingerprint", "source_signature"]

logger = logging.getLogger(__name__)


def _as_case_dict(case: Case3D | dict) -> dict:
    return load_case3d(case) if isinstance(case, Case3D) else case


def fingerprint(cases: Sequence[Case3D | dict], n_samples: int = 10000, seed: int = 1234) -> dict[str, Any]:
    """Dataset fingerprint from loaded cases (``load_case3d`` dicts) or :class:`Case3D` records (loaded here).

    Returns:
        JSON-friendly dict: ``case_ids``, ``spacings`` and ``shapes`` (RAS axis order), ``shapes_after_crop``,
        ``median_spacing``, ``n_channels`` and ``intensity`` = per channel {mean, std, median, min, max,
        percentile_00_5, percentile_99_5} of sampled foreground voxels.
    """
    if not cases:
        raise ValueError("cases must not be empty")
    rng = np.random.default_rng(seed)
    spacings, shapes, cropped, ids, samples = [], [], [], [], None
    for case in cases:
        d = _as_case_dict(case)
        image, label, meta = d["image"], d["label"], d["meta"]
        ornt = ras_transform(np.asarray(meta["affine"]))
        perm = ornt[:, 0].astype(int)
        sp_ras, sh_ras = np.empty(3), np.empty(3, dtype=int)
        sp_ras[perm], sh_ras[perm] = np.asarray(meta["spacing"]), np.asarray(image.shape[1:])
        bbox = nonzero_bbox(image)
        spacings.append(sp_ras.tolist())
        shapes.append(sh_ras.tolist())
        cropped.append(_to_ras_order([hi - lo for lo, hi in bbox], perm))
        ids.append(str(d.get("case_id", meta.get("case_id", len(ids)))))
        fg = label > 0 if label is not None and np.any(label > 0) else np.any(image != 0, axis=0)
        if samples is None:
            samples = [[] for _ in range(image.shape[0])]
        if len(samples) != image.shape[0]:
            raise ValueError(f"case {ids[-1]!r} has {image.shape[0]} channels, previous cases {len(samples)}")
        n_fg = int(fg.sum())
        pick = rng.choice(n_fg, size=min(n_samples, n_fg), replace=False) if n_fg else np.zeros(0, dtype=int)
        for c in range(image.shape[0]):
            samples[c].append(image[c][fg][pick])
    intensity = {}
    for c, chunks in enumerate(samples):
        v = np.concatenate(chunks).astype(np.float64)
        if v.size == 0:
            v = np.zeros(1)
        intensity[str(c)] = dict(mean=float(v.mean()), std=float(v.std()), median=float(np.median(v)),
                                 min=float(v.min()), max=float(v.max()),
                                 percentile_00_5=float(np.percentile(v, 0.5)),
                                 percentile_99_5=float(np.percentile(v, 99.5)))
    return dict(case_ids=ids, spacings=spacings, shapes=shapes, shapes_after_crop=cropped,
                median_spacing=np.median(np.asarray(spacings), axis=0).tolist(), n_channels=len(samples),
                intensity=intensity)


def cached_fingerprint(cases: Sequence[Case3D], cache_dir: str | os.PathLike, n_samples: int = 10000,
                       seed: int = 1234) -> dict[str, Any]:
    """:func:`fingerprint` of :class:`Case3D` records, stored as ``cache_dir/fingerprint_<hash>.json`` under a hash
    of the cases' ids and source files (path, size, mtime), ``n_samples`` and ``seed``: a later run on unchanged
    files reads no volume to plan (the fingerprint would read every training case again)."""
    sig = [[c.case_id, source_signature([*c.images, *([c.label] if c.label else [])])] for c in cases]
    key = hashlib.sha256(json.dumps({"cases": sig, "n_samples": n_samples, "seed": seed, "version": 1},
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"fingerprint_{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("fingerprint cache %s unreadable (%s); recomputing", path, err)
    fp = fingerprint(cases, n_samples=n_samples, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(to_jsonable(fp)))
    return fp


def _to_ras_order(values: Sequence[int], perm: np.ndarray) -> list[int]:
    """Reorder per-axis ``values`` of the original voxel axes into RAS axis order (``perm`` = ornt[:, 0])."""
    out = [0, 0, 0]
    for ax, v in zip(perm, values):
        out[int(ax)] = int(v)
    return out


def source_signature(files: Sequence[str | os.PathLike]) -> list[list]:
    sig = []
    for f in files:
        st = Path(f).stat()
        sig.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return sig
