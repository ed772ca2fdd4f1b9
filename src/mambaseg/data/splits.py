"""Seeded training/validation splits of case ids and k-fold cross-validation folds (one module for 2D and 3D).

Cross-validation follows nnU-Net's protocol: the sorted case ids are shuffled once with a fixed seed
(:data:`FOLD_SEED`, the same for every model and training seed, so all arms of a benchmark share their folds) and
dealt into ``folds`` folds; fold ``k``'s cases are held out of training and validation alike, and are predicted
once by the model trained without them. The training seed then splits the remaining cases into training and
validation (:func:`split_ids`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FOLD_SEED", "fold_ids", "split_cases", "split_ids"]

#: the shuffle of the case ids that every cross-validation fold is dealt from (independent of the training seed)
FOLD_SEED = 12345


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded shuffle-and-split of case ids (at least one training case; no validation for fraction 0)."""
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = round(len(ids) * val_fraction)
    n_val = min(n_val, len(ids) - 1)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def fold_ids(ids: list[str], folds: int, fold: int) -> tuple[list[str], list[str]]:
    """``(kept, held_out)``: the case ids of cross-validation fold ``fold`` of ``folds`` (held out) and the rest.

    The folds partition the ids (each id is held out by exactly one fold) and differ in size by at most one; they
    depend only on the set of ids, never on their order or on a training seed.

    Raises:
        ValueError: ``folds`` < 2 or more than the number of ids, or ``fold`` not in ``0 ... folds - 1``.
    """
    ids = sorted(ids)
    if not 2 <= folds <= len(ids):
        raise ValueError(f"data.folds: {folds} folds need 2 ... {len(ids)} (the number of cases), got {folds}.")
    if not 0 <= fold < folds:
        raise ValueError(f"data.fold: expected 0 ... {folds - 1} for {folds} folds, got {fold}.")
    order = np.random.default_rng(FOLD_SEED).permutation(len(ids))
    held = {ids[i] for i in order[fold::folds]}
    return [i for i in ids if i not in held], sorted(held)


def split_cases(ids: list[str], val_fraction: float, seed: int, folds: int = 0,
                fold: int = 0) -> tuple[list[str], list[str], list[str]]:
    """``(train, validation, held_out)``: with ``folds`` (>= 2) fold ``fold``'s cases are held out first
    (:func:`fold_ids`), then the rest is split by :func:`split_ids`; without folds nothing is held out."""
    held: list[str] = []
    if folds:
        ids, held = fold_ids(ids, folds, fold)
    train, val = split_ids(ids, val_fraction, seed)
    return train, val, held
