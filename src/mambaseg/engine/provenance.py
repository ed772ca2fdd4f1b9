"""Provenance of runs and checkpoints: versions, scan backend, git commit, platform and threads.

The mambaseg version comes from the installed distribution's metadata; a git commit is recorded only when the
package is imported from a git checkout of mambaseg itself (:func:`mambaseg.resources.source_checkout`), never
from whatever repository an installation happens to sit inside.
"""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np
import torch

from ..resources import git_commit, package_version
from ..ssm import resolve_backend

__all__ = ["provenance", "versions"]

#: installed distributions whose versions shape results (read from package metadata: nothing is imported)
_LIBRARIES = ("monai", "scipy", "nibabel", "pillow", "onnxruntime", "SimpleITK")


def versions() -> dict[str, str]:
    """Versions of Python, mambaseg, torch and numpy (as imported) and of the installed libraries of
    :data:`_LIBRARIES`."""
    out = {"mambaseg": package_version(), "torch": str(torch.__version__), "numpy": str(np.__version__),
           "python": platform.python_version()}
    for dist in _LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(seed: int | None = None, device: str | None = None) -> dict:
    """Everything needed to say where a result came from (only plain types: safe for ``weights_only`` loading)."""
    return {
        "seed": seed,
        "versions": versions(),
        "scan_backend": resolve_backend(None, torch.device(device or "cpu")),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
