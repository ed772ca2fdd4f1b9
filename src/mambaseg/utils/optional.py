"""Optional dependencies: import them through :func:`require`, which turns a missing module into a one-line error
naming the pip extra that installs it (the CLI prints it and exits 2).

The extras are those of ``pyproject.toml``: ``viz`` (matplotlib), ``export`` (onnx, onnxruntime), ``io`` (SimpleITK,
h5py), ``cpu-kernel`` (ninja), ``cuda`` (mamba-ssm).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependency", "available", "install_hint", "require"]

# module -> (pip extra, distribution name)
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("viz", "matplotlib"),
    "onnx": ("export", "onnx"),
    "onnxruntime": ("export", "onnxruntime"),
    "SimpleITK": ("io", "SimpleITK"),
    "h5py": ("io", "h5py"),
    "ninja": ("cpu-kernel", "ninja"),
    "mamba_ssm": ("cuda", "mamba-ssm"),
}


class MissingDependency(RuntimeError):
    """An optional dependency is not installed (one-line message with the ``pip install`` command)."""


def install_hint(extra: str) -> str:
    """``pip install 'mambaseg[EXTRA]'``."""
    return f"pip install 'mambaseg[{extra}]'"


def require(module: str, extra: str | None = None, purpose: str = "this") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency`.

    Args:
        module: module to import, e.g. ``"onnxruntime"`` or ``"matplotlib.pyplot"``.
        extra: pip extra that installs it (default: looked up in :data:`EXTRAS` by the top-level name).
        purpose: what needs it, for the message, e.g. ``"mambaseg export"``.

    Returns:
        The imported module.

    Raises:
        MissingDependency: ``"<purpose> needs <dist>, which is not installed: pip install 'mambaseg[<extra>]'."``
    """
    top = module.split(".")[0]
    extra_name, dist = EXTRAS.get(top, (extra, top))
    extra = extra or extra_name
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # only a missing module is "not installed"; an ImportError raised inside it (broken install) is reported too
        missing = getattr(e, "name", None) or top
        what = dist if missing.split(".")[0] == top else f"{dist} (its dependency {missing} is missing)"
        how = install_hint(extra) if extra else f"pip install {dist}"
        raise MissingDependency(f"{purpose} needs {what}, which is not installed: {how}.") from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (imports it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
