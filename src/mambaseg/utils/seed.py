"""Seeding, determinism and provenance (versions, scan backend, git commit) for runs and checkpoints."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["seed_everything", "provenance"]


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


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(seed: int | None = None, device: str | None = None) -> dict:
    """Everything needed to say where a result came from (only plain types: safe for ``weights_only`` loading)."""
    import mambaseg
    from mambaseg.ssm import resolve_backend

    versions = {"mambaseg": str(mambaseg.__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
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
