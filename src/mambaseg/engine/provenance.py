"""Provenance of runs and checkpoints: versions, scan backend, git commit, platform and threads.

The mambaseg version comes from the installed distribution's metadata; a git commit is recorded only when the
package is imported from a git checkout of mambaseg itself (:func:`mambaseg.resources.source_checkout`), never
from whatever repository an installation happens to sit inside.
"""

from __future__ import annotations

import platform

import numpy as np
import torch

from ..resources import git_commit, package_version
from ..ssm import resolve_backend

__all__ = ["provenance"]


def provenance(seed: int | None = None, device: str | None = None) -> dict:
    """Everything needed to say where a result came from (only plain types: safe for ``weights_only`` loading)."""
    versions = {"mambaseg": package_version(), "torch": str(torch.__version__), "numpy": str(np.__version__),
                "python": platform.python_version()}
    for name in ("monai", "nibabel", "PIL", "onnxruntime"):
        try:
            mod = __import__(name)
            versions[name] = str(getattr(mod, "__version__", "?"))
        except Exception:  # noqa: BLE001
            pass
    return {
        "seed": seed,
        "versions": versions,
        "scan_backend": resolve_backend(None, torch.device(device or "cpu")),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
