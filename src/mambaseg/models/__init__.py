"""Segmentation networks behind one registry: ``build_model(name, **kwargs)``, ``list_models()``."""

from .registry import build_model, list_models, model_entry, register_model

__all__ = ["build_model", "list_models", "model_entry", "register_model"]
