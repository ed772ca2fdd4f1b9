"""Seeding, determinism and provenance (versions, scan backend, git commit) for runs and checkpoints.

The mambaseg version comes from the installed distribution's metadata; a git commit is recorded only when the
package is imported from a git checkout of mambaseg itself (:func:`mambaseg.resources.source_checkout`), never
from whatever repository an installation happens to sit inside.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["provenance", "seed_everything"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also force deterministic algorithms.

    The pure-PyTorch scan is deterministic; mamba_ssm's CUDA backward is not (it uses atomic adds).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], check=False, cwd=root, capture_output=True, text=True, timeout=5)


def _git_commit() -> str | None:
    """``<sha>[+dirty]`` of the mambaseg checkout the package is imported from; None for an installed package
    (or a source tree that is not its own git repository); "unknown" when git fails."""
    from mambaseg.resources import source_checkout

    root = source_checkout()
    if root is None:
        return None
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return None  # e.g. an unpacked sdist inside some other repository
        out = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mambaseg")
    except PackageNotFoundError:
        import mambaseg

        return str(mambaseg.__version__)


def provenance(seed: int | None = None, device: str | None = None) -> dict:
    """Everything needed to say where a result came from (only plain types: safe for ``weights_only`` loading)."""
    from mambaseg.ssm import resolve_backend

    versions = {"mambaseg": _package_version(), "torch": str(torch.__version__), "numpy": str(np.__version__),
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
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }
