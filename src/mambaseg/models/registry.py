"""Model registry: ``@register_model`` variants and ``build_model(name, **kwargs)``.

A variant is a small function returning an ``nn.Module``; caller kwargs override the variant's defaults
(``_create(cls, **dict(defaults, **kwargs))``). Checkpoints store ``model_name`` + ``model_kwargs`` and are rebuilt
through :func:`build_model`, never unpickled.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable

import torch.nn as nn

__all__ = ["register_model", "build_model", "list_models", "model_entry"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_SPATIAL_DIMS: dict[str, int] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, spatial_dims: int = 2):
    """Register ``fn`` under its function name. Use as ``@register_model`` or ``@register_model(spatial_dims=3)``."""

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _MODELS and _MODELS[name] is not f:
            warnings.warn(f"model {name!r} registered twice; the later definition wins.", stacklevel=2)
        _MODELS[name] = f
        _SPATIAL_DIMS[name] = spatial_dims
        return f

    return deco(fn) if fn is not None else deco


def list_models(spatial_dims: int | None = None) -> list[str]:
    """Names of the registered models, optionally only 2D or 3D ones."""
    return sorted(n for n in _MODELS if spatial_dims is None or _SPATIAL_DIMS[n] == spatial_dims)


def model_entry(name: str) -> tuple[Callable[..., nn.Module], int]:
    """The variant function and its spatial dimensionality; unknown names raise with the known ones listed."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Known models: {', '.join(sorted(_MODELS))}.")
    return _MODELS[name], _SPATIAL_DIMS[name]


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ``None``-valued kwargs are dropped so the variant's defaults apply."""
    fn, _ = model_entry(name)
    return fn(**{k: v for k, v in kwargs.items() if v is not None})
