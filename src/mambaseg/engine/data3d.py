"""3D datasets for training: layout -> seeded split -> fingerprint -> plan -> cached preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import DataCfg
from ..data.io import DataError
from ..data.layouts3d import list_cases3d, load_case3d
from ..data.preprocess import PreprocessCache, fingerprint, plan

__all__ = ["load_dataset_3d"]

logger = logging.getLogger(__name__)


def load_dataset_3d(cfg: DataCfg, seed: int, run_dir: Path | None = None) -> tuple[list[dict], list[dict], dict]:
    """Preprocessed training/validation cases and the plan that produced them (stored in checkpoints for predict)."""
    from .data import split_ids

    root = Path(cfg.root)
    if not root.exists():
        raise DataError(f"{root}: data.root does not exist (layout {cfg.layout!r}).")
    records = [c for c in list_cases3d(root, layout=cfg.layout, split="train") if c.label is not None]
    if not records:
        raise DataError(f"{root}: no labelled cases found for layout {cfg.layout!r}.")
    by_id = {c.case_id: c for c in records}
    train_ids, val_ids = split_ids(list(by_id), cfg.val_fraction, seed)
    logger.info("3D dataset %s: %d training / %d validation cases (seed %d)", root, len(train_ids), len(val_ids), seed)
    fp = fingerprint([by_id[i] for i in train_ids])
    the_plan = plan(fp, modality=cfg.modality, patch_size=list(cfg.patch_size) if cfg.patch_size else None,
                    target_spacing=list(cfg.target_spacing) if cfg.target_spacing else None,
                    ct_window=tuple(cfg.ct_window) if cfg.ct_window else None)
    cache = PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else (run_dir or Path(".")) / "cache")

    def load(cid: str) -> dict:
        image, label, props = cache.load(by_id[cid], the_plan)
        return {"id": cid, "image": image, "label": label, "mask": None, "meta": props}

    train = [load(i) for i in train_ids]
    val = [load(i) for i in val_ids]
    logger.info("preprocessing cache %s: %d hits, %d computed", cache.cache_dir, cache.hits, cache.misses)
    labels = getattr(records[0], "labels", None) or {}
    info = {"train_ids": train_ids, "val_ids": val_ids, "spatial_dims": 3, "plan": the_plan,
            "labels": dict(labels), "channel_names": list(records[0].channel_names), "layout": cfg.layout}
    return train, val, info


def read_case_for_inference(case) -> dict:
    """A layout case record -> ``load_case3d`` dict without label checks (the label may be absent)."""
    return load_case3d(case, check_labels=False)
