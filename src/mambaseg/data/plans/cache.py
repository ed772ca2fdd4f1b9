"""The preprocessing cache: each case preprocessed once per plan
(:func:`~mambaseg.data.plans.preprocess.preprocess_case`) and reused across epochs and runs, in the on-disk format of
:mod:`mambaseg.data.case_store` (memory-mappable ``.npy`` files or one compressed ``.npz``, + props ``.json``) under
a folder named by a hash of the plan, so a changed plan is preprocessed again and an unchanged one is reused."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.data.case_store import CACHE_FORMAT, LazyCase, entry_files, read_arrays, write_entry
from mambaseg.data.load3d import load_case3d
from mambaseg.data.plans.fingerprint import source_signature
from mambaseg.data.plans.preprocess import plan_hash, preprocess_case
from mambaseg.data.records import Case3D
from mambaseg.utils.atomic import atomic_write_text
from mambaseg.utils.jsonable import to_jsonable

__all__ = ["PreprocessCache"]

logger = logging.getLogger(__name__)


class PreprocessCache:
    """Preprocess each case once and reuse it: ``cache_dir/plan_<hash>/<case_id>.*`` in the on-disk format of
    :mod:`mambaseg.data.case_store` (mappable ``.npy`` files, or one compressed ``.npz`` with ``compressed=True``)
    + ``<case_id>.json`` (props, written last).

    A case is recomputed when its entry is missing, unreadable, or its source files' size/mtime changed; a different
    plan uses a different folder. An entry of the first format (``<case_id>.npz``, uncompressed, all in RAM when
    read) or of the other storage is converted without preprocessing again. ``hits``/``misses``/``converted`` count.

    Example::

        cache = PreprocessCache("runs/cache")
        case = cache.entry(case_record, plan)          # computes once; a LazyCase reading the files on demand
        image, label, props = cache.load(case_record, plan)   # the arrays in RAM (label int64)
    """

    def __init__(self, cache_dir: str | os.PathLike, compressed: bool = False):
        self.cache_dir = Path(cache_dir)
        self.compressed = bool(compressed)
        self.hits = 0
        self.misses = 0
        self.converted = 0

    def folder(self, plan: dict[str, Any]) -> Path:
        """The cache folder of ``plan`` (created, with ``plan.json``)."""
        d = self.cache_dir / f"plan_{plan_hash(plan)}"
        d.mkdir(parents=True, exist_ok=True)
        pj = d / "plan.json"
        if not pj.exists():
            atomic_write_text(pj, json.dumps(to_jsonable(plan), indent=1))
        return d

    def entry(self, case: Case3D | dict[str, Any], plan: dict[str, Any]) -> LazyCase:
        """The cached entry of ``case`` (made or converted first if needed), as a :class:`LazyCase`."""
        folder, case_id, props, _ = self._ensure(case, plan)
        return LazyCase(folder, case_id, props)

    def load(self, case: Case3D | dict[str, Any], plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Preprocessed ``(image, label, props)`` of ``case`` (a :class:`Case3D` or a ``load_case3d`` dict), in RAM."""
        folder, case_id, props, arrays = self._ensure(case, plan)
        if arrays is None:
            arrays = read_arrays(folder, case_id, props, mmap=False)
        label = arrays["label"]
        return np.asarray(arrays["image"]), None if label is None else label.astype(np.int64), props

    def _ensure(self, case: Case3D | dict[str, Any], plan: dict[str, Any]):
        """``(folder, case_id, props, arrays or None)``: a valid format-2 entry exists afterwards; ``arrays`` are
        returned when they were just computed."""
        if isinstance(case, Case3D):
            case_id, files = case.case_id, [*case.images, *([case.label] if case.label else [])]
        else:
            case_id, files = str(case["case_id"]), list(case["meta"].get("files", []))
            lab = case["meta"].get("label_file")
            files += [lab] if lab else []
        folder = self.folder(plan)
        js = folder / f"{case_id}.json"
        sig = source_signature(files) if files else []
        if js.exists():
            try:
                props = json.loads(js.read_text())
                if props.get("source_signature") == sig:
                    props = self._reuse(folder, case_id, props)
                    self.hits += 1
                    return folder, case_id, props, None
                logger.info("cache entry %s is stale (source files changed); recomputing", js)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                logger.warning("cache entry %s unreadable (%s); recomputing", js, err)
        self.misses += 1
        loaded = load_case3d(case) if isinstance(case, Case3D) else case
        image, label, props = preprocess_case(loaded, plan)
        props["source_signature"] = sig
        props = write_entry(folder, case_id, image, label, to_jsonable(props), self.compressed)
        (folder / f"{case_id}.npz").unlink(missing_ok=True)  # a first-format entry it replaces
        return folder, case_id, props, {"image": image, "label": label}

    def _reuse(self, folder: Path, case_id: str, props: dict[str, Any]) -> dict[str, Any]:
        """Props of a usable entry: format 2 in the configured storage is checked (files open); the first format or
        the other storage is rewritten. Raises on missing or damaged files (the caller recomputes)."""
        storage = "npz" if self.compressed else "npy"
        if props.get("cache_format") == CACHE_FORMAT:
            arrays = read_arrays(folder, case_id, props, keys=("image", "label", "fg"), mmap=True)
            if props.get("storage") == storage:
                return props
            arrays = {k: None if v is None else np.asarray(v) for k, v in arrays.items()}
            old = entry_files(folder, case_id, props.get("storage") == "npz")
        else:  # first format: <case>.npz, uncompressed zip of image and label
            old = {"npz": folder / f"{case_id}.npz"}
            with np.load(old["npz"]) as z:
                arrays = {"image": z["image"], "label": z["label"] if "label" in z.files else None}
        props = write_entry(folder, case_id, arrays["image"], arrays["label"], props, self.compressed)
        keep = set(entry_files(folder, case_id, self.compressed).values())
        for path in old.values():
            if path not in keep:
                path.unlink(missing_ok=True)
        self.converted += 1
        logger.info("cache entry %s converted to %s storage", folder / case_id, storage)
        return props
