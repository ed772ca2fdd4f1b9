"""Plain JSON types from the values configs, plans and checkpoints hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Tensors, numpy arrays and scalars, tuples and paths -> lists, Python scalars and strings (recursively;
    mapping keys become strings)."""
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
