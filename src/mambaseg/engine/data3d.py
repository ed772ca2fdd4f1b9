"""3D datasets for training: layout -> seeded split -> fingerprint -> plan -> cached preprocessing."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..config import DataCfg
from ..data.case_store import LazyCase
from ..data.cases import list_cases
from ..data.errors import DataError
from ..data.io.headers import check_resample_size, volume_header
from ..data.io.volume import check_label_values
from ..data.layouts.case_folders import CaseFolderSpec, case_folder_spec
from ..data.layouts.dataset_json import channel_modalities
from ..data.plans.cache import PreprocessCache
from ..data.plans.fingerprint import cached_fingerprint
from ..data.plans.plan import Plan3D
from ..data.records import Case3D
from ..data.splits import fold_ids, split_cases

__all__ = ["data_spec", "held_out_cases", "load_dataset_3d"]

logger = logging.getLogger(__name__)


def held_out_cases(cfg: DataCfg) -> list[Case3D]:
    """The labelled cases of ``data.root`` that cross-validation fold ``data.fold`` of ``data.folds`` holds out of
    training (:func:`~mambaseg.data.splits.fold_ids`: the same cases :func:`load_dataset_3d` leaves out)."""
    root = Path(cfg.root)
    records = [c for c in list_cases(root, cfg.layout, "train", spec=data_spec(cfg)) if c.label is not None]
    try:
        _, held = fold_ids([c.case_id for c in records], cfg.folds, cfg.fold)
    except ValueError as e:
        raise DataError(f"{root}: {e}") from None
    return [c for c in records if c.case_id in set(held)]


def load_dataset_3d(cfg: DataCfg, seed: int, run_dir: Path | None = None) -> tuple[list[LazyCase], list[LazyCase],
                                                                                   dict]:
    """Preprocessed training/validation cases and the plan that produced them (stored in checkpoints for predict).

    The cases are :class:`~mambaseg.data.case_store.LazyCase` entries of the preprocessing cache: ``case['image']``
    and ``case['label']`` read the cached files on demand (memory maps), so RAM does not grow with the dataset."""

    root = Path(cfg.root)
    if not root.exists():
        raise DataError(f"{root}: data.root does not exist (layout {cfg.layout!r}).")
    spec = data_spec(cfg)
    records = [c for c in list_cases(root, cfg.layout, "train", spec=spec) if c.label is not None]
    if not records:
        raise DataError(f"{root}: no labelled cases found for layout {cfg.layout!r}.")
    # every case's labels are checked against data.num_classes when it is read (load_case3d), before training
    records = [dataclasses.replace(c, extra={**c.extra, "num_classes": int(cfg.num_classes)}) for c in records]
    heads = {c.case_id: _check_headers(c) for c in records}  # header checks before any voxel is read
    by_id = {c.case_id: c for c in records}
    try:
        train_ids, val_ids, held_ids = split_cases(list(by_id), cfg.val_fraction, seed, cfg.folds, cfg.fold)
    except ValueError as e:
        raise DataError(f"{root}: {e}") from None
    logger.info("3D dataset %s: %d training / %d validation cases (seed %d)%s", root, len(train_ids), len(val_ids),
                seed, f", fold {cfg.fold} of {cfg.folds}: {len(held_ids)} held out" if cfg.folds else "")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else (run_dir or Path(".")) / "cache"
    fp = cached_fingerprint([by_id[i] for i in train_ids], cache_dir)  # reads every case only once per dataset
    modality = channel_modalities(records[0].channel_names, cfg.modality, cfg.layout)  # auto: from dataset.json
    # one brain mask for every channel (nnU-Net) for brain layouts and any multi-channel MR dataset (plan's default)
    brain = True if cfg.layout in ("brats", "case_folders") else None
    fitted = Plan3D.fit(fp, modality=modality, patch_size=list(cfg.patch_size) if cfg.patch_size else None,
                        target_spacing=list(cfg.target_spacing) if cfg.target_spacing else None,
                        ct_window=tuple(cfg.ct_window) if cfg.ct_window else None, brain_mask=brain)
    the_plan = fitted.plan
    for head in heads.values():  # the resampled size from the headers, before anything is resampled
        if head is not None:
            check_resample_size(head["path"], head["shape"], head["affine"], the_plan["target_spacing"],
                                head["n_channels"])
    cache = PreprocessCache(cache_dir, compressed=bool(getattr(cfg, "cache_compression", False)))

    def load(cid: str, mmap: bool = True) -> LazyCase:
        """The case's cache entry, read on demand (training holds paths, not voxels); validation cases (``mmap``
        False) are read whole, one at a time."""
        case = cache.entry(by_id[cid], the_plan)
        case.mmap = mmap
        lo, hi = case.props.get("label_range") or (0, 0)
        if case.props.get("has_label", True) and not (0 <= lo and hi < int(cfg.num_classes)):
            # also for cache hits made under another num_classes; the voxels are read only to name the values
            check_label_values(case["label"], int(cfg.num_classes), by_id[cid].label or cid)
        return case

    train = [load(i) for i in train_ids]
    val = [load(i, mmap=False) for i in val_ids]
    logger.info("preprocessing cache %s: %d hits (%d converted), %d computed", cache.cache_dir, cache.hits,
                cache.converted, cache.misses)
    labels = getattr(records[0], "labels", None) or {}
    info = {"train_ids": train_ids, "val_ids": val_ids, "held_out_ids": held_ids, "spatial_dims": 3,
            **fitted.to_checkpoint(),
            "labels": dict(labels), "channel_names": list(records[0].channel_names), "layout": cfg.layout}
    if spec is not None:  # predict finds the channels of new case folders by these patterns
        info["case_folders"] = spec.to_dict()
    return train, val, info


def data_spec(cfg: DataCfg) -> CaseFolderSpec | None:
    """The :class:`CaseFolderSpec` of ``layout: case_folders`` (``data.preset``, ``channels``, ``label``,
    ``label_map``), None for the other layouts."""
    if cfg.layout != "case_folders":
        return None
    return case_folder_spec(cfg.preset, cfg.channels, cfg.label, cfg.label_map)


def _check_headers(case: Case3D) -> dict | None:
    """Header checks of a case's image and label files (:func:`volume_header`); the first image's geometry with the
    case's channel count, or None for layouts without headers (Synapse npz/h5)."""
    if case.layout in ("synapse_h5", "synapse_npz"):
        return None
    heads = [volume_header(p) for p in case.images]
    if case.label is not None:
        volume_header(case.label, label=True)
    head = dict(heads[0], n_channels=sum(int(h["n_channels"]) for h in heads))
    if head["affine"] is None or len(head["shape"]) != 3:
        return None  # not 3D: refused with its own message when read
    return head
