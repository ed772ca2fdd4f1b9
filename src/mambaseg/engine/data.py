"""Join the data layer with training: load a configured dataset into memory and draw augmented patch batches.

Cases are dicts ``{id, image: float32 [C, *S], label: int64 [*S] | None, mask: bool [*S] | None, meta}``; 2D and
3D cases go through the same sampler (the dimensionality is a property of the arrays).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import LAYOUTS_2D, LAYOUTS_3D, DataCfg
from ..data.cases import is_2d_layout, list_cases
from ..data.errors import DataError
from ..data.plans.plan import Plan2D
from ..data.splits import split_cases

__all__ = ["load_dataset"]

logger = logging.getLogger(__name__)


def _cases_2d(cfg: DataCfg, root: Path, run_dir: Path | None, seed: int):
    if cfg.layout == "synthetic_drive":
        from ..data.synthetic import write_synthetic_drive

        root = (run_dir or Path(".")) / "synthetic_data"
        if not (root / "training").is_dir():
            write_synthetic_drive(root, n_train=cfg.synthetic_cases, n_test=4,
                                  size=(cfg.synthetic_size, cfg.synthetic_size), seed=seed)
        return list_cases(root, "synthetic_drive")
    return list_cases(root, cfg.layout, cfg.split if cfg.layout == "drive" else "train")


def _load_case_2d(record, cfg: DataCfg) -> dict:
    """One 2D case, normalised as ``data.fundus_norm`` says (``none``:
    :func:`~mambaseg.data.layouts.load2d.load_case2d`'s own z-score; otherwise
    :func:`~mambaseg.data.plans.fundus.fundus_normalize`, with the FOV estimated when missing)."""
    from ..data.layouts.load2d import load_case2d

    if cfg.fundus_norm == "none":
        return load_case2d(record, num_classes=cfg.num_classes)
    from ..data.plans.fundus import fundus_normalize

    case = load_case2d(record, num_classes=cfg.num_classes, normalize=False, estimate_mask=True)
    case["image"], case["mask"], stats = fundus_normalize(case["image"], case["mask"], cfg.fundus_norm)
    case["meta"].update(stats, fundus_norm=cfg.fundus_norm)
    return case


def load_dataset(cfg: DataCfg, seed: int, run_dir: Path | None = None) -> tuple[list[dict], list[dict], dict]:
    """Load the configured training and validation cases.

    Returns:
        (train cases, validation cases, info) where info records the split and, for 3D, the preprocessing plan.
    """
    if is_2d_layout(cfg.layout, cfg.root or "."):
        root = Path(cfg.root) if cfg.root else Path(".")
        if cfg.layout != "synthetic_drive" and not root.exists():
            raise DataError(f"{root}: data.root does not exist (layout {cfg.layout!r}).")
        records = _cases_2d(cfg, root, run_dir, seed)
        if not records:
            raise DataError(f"{root}: no cases found for layout {cfg.layout!r}.")
        by_id = {r.id: r for r in records}
        try:  # a cross-validation fold's cases are held out of training and validation alike
            train_ids, val_ids, held_ids = split_cases(list(by_id), 0.0 if cfg.val_root else cfg.val_fraction, seed,
                                                       cfg.folds, cfg.fold)
        except ValueError as e:
            raise DataError(f"{root}: {e}") from None
        if cfg.val_root:
            val_records = _cases_2d(DataCfg(**{**cfg.__dict__, "root": cfg.val_root}), Path(cfg.val_root),
                                    run_dir, seed)
        else:
            val_records = [by_id[i] for i in val_ids]
        train = [_load_case_2d(by_id[i], cfg) for i in train_ids]
        val = [_load_case_2d(r, cfg) for r in val_records]
        for c, r in zip(train, [by_id[i] for i in train_ids]):
            c.setdefault("id", r.id)
        for c, r in zip(val, val_records):
            c.setdefault("id", r.id)
        info = {"train_ids": [c["id"] for c in train], "val_ids": [c["id"] for c in val], "held_out_ids": held_ids,
                "spatial_dims": 2}
        # the plan predict applies: nnU-Net channel_names schemes (layouts2d), and the FOV diameter the model
        # learned vessels at (predict rescales other cameras' photos to it)
        plan = Plan2D.fit(train, cfg.fov, cfg.fundus_norm, getattr(records[0], "norm", ()) or None)
        info.update(plan.to_checkpoint())
        return train, val, info
    if cfg.layout in LAYOUTS_3D:
        from .data3d import load_dataset_3d

        return load_dataset_3d(cfg, seed, run_dir)
    raise DataError(f"data.layout must be one of {LAYOUTS_2D + LAYOUTS_3D}, got {cfg.layout!r}.")
