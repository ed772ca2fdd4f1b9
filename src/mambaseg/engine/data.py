"""Join the data layer with training: list a configured dataset's cases, split them, and load them for the sampler -
2D and 3D alike, the dimension being a parameter (:func:`spatial_dims_of`) that only picks how a case is loaded.

One path for both: layout -> labelled case records -> seeded split (a cross-validation fold held out of training and
validation alike, :func:`~mambaseg.data.splits.split_cases`) -> load -> the plan predict applies. Loading differs by
dimension: 2D cases are read and normalised into memory (:func:`_load_2d`); 3D cases go through fingerprint -> plan
-> cached preprocessing and stay on disk (:func:`_load_3d`).

Cases are dicts ``{id, image: float32 [C, *S], label: int64 [*S] | None, mask: bool [*S] | None, meta}`` (3D:
:class:`~mambaseg.data.case_store.LazyCase` entries reading the cache on demand); 2D and 3D cases go through the same
sampler (the dimensionality is a property of the arrays).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..config import LAYOUTS_2D, LAYOUTS_3D, DataCfg
from ..data.case_store import LazyCase
from ..data.cases import is_2d_layout, list_cases
from ..data.errors import DataError
from ..data.io.headers import check_resample_size, volume_header
from ..data.io.volume import check_label_values
from ..data.layouts.case_folders import CaseFolderSpec, case_folder_spec
from ..data.layouts.dataset_json import channel_modalities
from ..data.plans.cache import PreprocessCache
from ..data.plans.fingerprint import cached_fingerprint
from ..data.plans.plan import Plan2D, Plan3D
from ..data.records import Case3D
from ..data.splits import fold_ids, split_cases

__all__ = ["data_spec", "held_out_cases", "load_dataset", "spatial_dims_of"]

logger = logging.getLogger(__name__)


def spatial_dims_of(cfg: DataCfg) -> int:
    """2 or 3: the dimension of ``data.layout`` (``nnunet`` by its dataset.json ``file_ending``).

    Raises:
        DataError: an unknown layout.
    """
    if is_2d_layout(cfg.layout, cfg.root or "."):
        return 2
    if cfg.layout in LAYOUTS_3D:
        return 3
    raise DataError(f"data.layout must be one of {LAYOUTS_2D + LAYOUTS_3D}, got {cfg.layout!r}.")


def data_spec(cfg: DataCfg) -> CaseFolderSpec | None:
    """The :class:`CaseFolderSpec` of ``layout: case_folders`` (``data.preset``, ``channels``, ``label``,
    ``label_map``), None for the other layouts."""
    if cfg.layout != "case_folders":
        return None
    return case_folder_spec(cfg.preset, cfg.channels, cfg.label, cfg.label_map)


def _records(cfg: DataCfg, dims: int, root: Path, run_dir: Path | None, seed: int) -> list:
    """The training split's case records of the dataset (3D: the labelled ones)."""
    if dims == 3:
        return [c for c in list_cases(root, cfg.layout, "train", spec=data_spec(cfg)) if c.label is not None]
    if cfg.layout == "synthetic_drive":
        from ..data.synthetic import write_synthetic_drive

        root = (run_dir or Path(".")) / "synthetic_data"
        if not (root / "training").is_dir():
            write_synthetic_drive(root, n_train=cfg.synthetic_cases, n_test=4,
                                  size=(cfg.synthetic_size, cfg.synthetic_size), seed=seed)
        return list_cases(root, "synthetic_drive")
    return list_cases(root, cfg.layout, cfg.split if cfg.layout == "drive" else "train")


def _case_id(record) -> str:
    return record.case_id if isinstance(record, Case3D) else record.id


def held_out_cases(cfg: DataCfg) -> list[Case3D]:
    """The labelled cases of ``data.root`` that cross-validation fold ``data.fold`` of ``data.folds`` holds out of
    training (:func:`~mambaseg.data.splits.fold_ids`: the same cases :func:`load_dataset` leaves out)."""
    root = Path(cfg.root)
    records = _records(cfg, 3, root, None, 0)
    try:
        _, held = fold_ids([c.case_id for c in records], cfg.folds, cfg.fold)
    except ValueError as e:
        raise DataError(f"{root}: {e}") from None
    return [c for c in records if c.case_id in set(held)]


def load_dataset(cfg: DataCfg, seed: int, run_dir: Path | None = None) -> tuple[list, list, dict]:
    """Load the configured training and validation cases, 2D or 3D (:func:`spatial_dims_of`).

    Returns:
        (train cases, validation cases, info) where info records the split (``train_ids``, ``val_ids``,
        ``held_out_ids`` of a cross-validation fold), ``spatial_dims`` and the preprocessing plan predict applies
        (3D also the dataset's labels, channel names, layout and case-folder patterns).
    """
    dims = spatial_dims_of(cfg)
    root = Path(cfg.root) if cfg.root else Path(".")
    if not root.exists() and not (dims == 2 and cfg.layout == "synthetic_drive"):
        raise DataError(f"{root}: data.root does not exist (layout {cfg.layout!r}).")
    records = _records(cfg, dims, root, run_dir, seed)
    if not records:
        raise DataError(f"{root}: no {'labelled ' if dims == 3 else ''}cases found for layout {cfg.layout!r}.")
    heads = {}
    if dims == 3:
        # every case's labels are checked against data.num_classes when it is read (load_case3d), before training
        records = [dataclasses.replace(c, extra={**c.extra, "num_classes": int(cfg.num_classes)}) for c in records]
        heads = {c.case_id: _check_headers(c) for c in records}  # header checks before any voxel is read
    by_id = {_case_id(r): r for r in records}
    val_fraction = 0.0 if dims == 2 and cfg.val_root else cfg.val_fraction  # 2D: a separate validation folder
    try:  # a cross-validation fold's cases are held out of training and validation alike
        train_ids, val_ids, held_ids = split_cases(list(by_id), val_fraction, seed, cfg.folds, cfg.fold)
    except ValueError as e:
        raise DataError(f"{root}: {e}") from None
    load = _load_2d if dims == 2 else _load_3d
    train, val, plan_info = load(cfg, by_id, train_ids, val_ids, heads, run_dir, seed,
                                 f", fold {cfg.fold} of {cfg.folds}: {len(held_ids)} held out" if cfg.folds else "")
    info = {"train_ids": [c["id"] for c in train] if dims == 2 else train_ids,
            "val_ids": [c["id"] for c in val] if dims == 2 else val_ids,
            "held_out_ids": held_ids, "spatial_dims": dims, **plan_info}
    return train, val, info


# ---------------------------------------------------------------------------------------------------------- 2D
def _load_case_2d(record, cfg: DataCfg) -> dict:
    """One 2D case, normalised as ``data.fundus_norm`` says (``none``:
    :func:`~mambaseg.data.layouts.load2d.load_case2d`'s own z-score; otherwise
    :func:`~mambaseg.data.plans.fundus.fundus_normalize`, with the FOV estimated when missing)."""
    from ..data.layouts.load2d import load_case2d

    if cfg.fundus_norm == "none":
        case = load_case2d(record, num_classes=cfg.num_classes)
    else:
        from ..data.plans.fundus import fundus_normalize

        case = load_case2d(record, num_classes=cfg.num_classes, normalize=False, estimate_mask=True)
        case["image"], case["mask"], stats = fundus_normalize(case["image"], case["mask"], cfg.fundus_norm)
        case["meta"].update(stats, fundus_norm=cfg.fundus_norm)
    case.setdefault("id", record.id)
    return case


def _load_2d(cfg: DataCfg, by_id: dict, train_ids: list[str], val_ids: list[str], heads: dict,
             run_dir: Path | None, seed: int, fold_note: str) -> tuple[list[dict], list[dict], dict]:
    """2D cases read and normalised into memory (validation from ``data.val_root`` when set), and the plan predict
    applies: nnU-Net channel_names schemes (layouts2d) and the FOV diameter the model learned vessels at (predict
    rescales other cameras' photos to it)."""
    if cfg.val_root:
        val_cfg = DataCfg(**{**cfg.__dict__, "root": cfg.val_root})
        val_records = _records(val_cfg, 2, Path(cfg.val_root), run_dir, seed)
    else:
        val_records = [by_id[i] for i in val_ids]
    train = [_load_case_2d(by_id[i], cfg) for i in train_ids]
    val = [_load_case_2d(r, cfg) for r in val_records]
    first = next(iter(by_id.values()))
    plan = Plan2D.fit(train, cfg.fov, cfg.fundus_norm, getattr(first, "norm", ()) or None)
    return train, val, plan.to_checkpoint()


# ---------------------------------------------------------------------------------------------------------- 3D
def _load_3d(cfg: DataCfg, by_id: dict, train_ids: list[str], val_ids: list[str], heads: dict,
             run_dir: Path | None, seed: int, fold_note: str) -> tuple[list[LazyCase], list[LazyCase], dict]:
    """Preprocessed 3D cases and the plan that produced them (stored in checkpoints for predict).

    The cases are :class:`~mambaseg.data.case_store.LazyCase` entries of the preprocessing cache: ``case['image']``
    and ``case['label']`` read the cached files on demand (memory maps), so RAM does not grow with the dataset."""
    root = Path(cfg.root)
    records = list(by_id.values())
    logger.info("3D dataset %s: %d training / %d validation cases (seed %d)%s", root, len(train_ids), len(val_ids),
                seed, fold_note)
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
    info = {**fitted.to_checkpoint(), "labels": dict(labels), "channel_names": list(records[0].channel_names),
            "layout": cfg.layout}
    spec = data_spec(cfg)
    if spec is not None:  # predict finds the channels of new case folders by these patterns
        info["case_folders"] = spec.to_dict()
    return train, val, info


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
