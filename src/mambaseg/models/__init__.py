"""Segmentation networks behind one registry: ``build_model(name, **kwargs)``, ``list_models()``.

Every model module is imported here, explicitly, so that importing :mod:`mambaseg.models` (or any module in it)
registers every variant; a new model module is added to this list.
"""

from . import akmamba_net, dm_segnet, monai3d, segmamba, transunet, unet2d, unet3plus  # noqa: F401  (registration)
from .registry import build_model, list_models, model_entry, register_model

__all__ = ["build_model", "list_models", "model_entry", "register_model"]
