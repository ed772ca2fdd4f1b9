"""3D prediction, kept importable from here for one release: the one predict pipeline is
:mod:`mambaseg.engine.predict` (3D inputs and outputs in :mod:`mambaseg.engine.predict.volumes`, the overlay figure in
:mod:`mambaseg.engine.predict.overlay3d`)."""

from __future__ import annotations

from .predict import gather_volume_cases, orthogonal_overlay
from .predict import predict_with as predict_volumes

__all__ = ["gather_volume_cases", "orthogonal_overlay", "predict_volumes"]
