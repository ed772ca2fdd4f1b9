"""Seeded training/validation splits of case ids (one function for 2D and 3D datasets)."""

from __future__ import annotations

import numpy as np

__all__ = ["split_ids"]


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded shuffle-and-split of case ids (at least one training case; no validation for fraction 0)."""
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = round(len(ids) * val_fraction)
    n_val = min(n_val, len(ids) - 1)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val
