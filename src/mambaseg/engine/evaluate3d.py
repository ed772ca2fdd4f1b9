"""3D evaluation, kept importable from here for one release: the one evaluate entry and scoring loop is
:mod:`mambaseg.engine.evaluate` (3D pairing, scoring and summary in :mod:`mambaseg.engine.evaluate.volumes`)."""

from __future__ import annotations

from .evaluate import check_label_set, evaluate_3d, evaluate_pairs, label_key, nnunet_keyed

__all__ = ["evaluate_3d", "evaluate_pairs", "label_key", "nnunet_keyed", "check_label_set"]
