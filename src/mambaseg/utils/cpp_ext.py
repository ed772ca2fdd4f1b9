"""Build-on-first-use C++ extensions (the compiled CPU kernels), shared by the scan and AKConv kernels.

:func:`load_extension` compiles the sources with :func:`torch.utils.cpp_extension.load` (``-O3 -fno-trapping-math
-fopenmp``; no ``-march=native`` and no ``-ffast-math``, so a build can be reused on another x86-64 CPU and the
arithmetic stays IEEE) into the torch extensions cache (``TORCH_EXTENSIONS_DIR`` is respected). The extension's name
carries a hash of its sources, of their location and of the torch version, so two installs or checkouts never
rebuild each other's kernel and an edited header triggers a rebuild; a build lock left by a killed build is removed
after half an hour instead of blocking every later process. When a build is needed, one line at WARNING level says so
(a first build takes a minute or two and would otherwise look like a hang). Any failure — no compiler, no
``ninja``, a build error — is logged once and returns ``None``: the kernels are optional, callers fall back to
pure PyTorch. ``MAMBASEG_NO_CPU_KERNEL=1`` disables every compiled kernel.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from .optional import install_hint

__all__ = ["ENV_DISABLE_ALL", "disabled", "load_extension"]

logger = logging.getLogger(__name__)

ENV_DISABLE_ALL = "MAMBASEG_NO_CPU_KERNEL"
FLAGS = ["-O3", "-fno-trapping-math", "-fopenmp"]


def disabled(*env_vars: str) -> str | None:
    """Name of the first of ``MAMBASEG_NO_CPU_KERNEL`` and ``env_vars`` set to a true value, else None."""
    for var in (ENV_DISABLE_ALL, *env_vars):
        if os.environ.get(var, "").strip() not in ("", "0"):
            return var
    return None


def _build_dir(name: str) -> Path:
    from torch.utils.cpp_extension import _get_build_directory  # private but stable since torch 1.x

    return Path(_get_build_directory(name, verbose=False))


STALE_LOCK_SECONDS = 1800  # a build takes minutes; a lock this old was left by a killed build


def _remove_stale_lock(lock: Path, what: str) -> None:
    """torch waits forever on the lock file of a build whose process was killed; remove one older than
    :data:`STALE_LOCK_SECONDS` (a live build is much shorter), with a warning."""
    import time

    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
        logger.warning("%s: removing the stale build lock %s (left by an interrupted build).", what, lock)
        lock.unlink(missing_ok=True)


def load_extension(base_name: str, sources: list[Path], headers: list[Path] = (), what: str = "kernel"):
    """Compile (first use) or load the cached build of a C++ extension; returns the module or None.

    Args:
        base_name: extension name prefix; the final name is ``{base_name}_{hash}``.
        sources: ``.cpp`` files to compile.
        headers: files included by the sources (hashed into the name so edits rebuild).
        what: words for the log lines ("AKConv CPU kernel").
    """
    files = [Path(p) for p in (*sources, *headers)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        logger.warning("%s: source file %s is missing; using the pure-PyTorch path.", what, missing[0])
        return None
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.read_bytes())
        # the build files name the sources by absolute path: two checkouts/installs sharing a build directory
        # would rebuild each other's kernel, so the location is part of the name too
        digest.update(str(p.resolve()).encode())
    digest.update(torch.__version__.encode())
    name = f"{base_name}_{digest.hexdigest()[:12]}"
    try:
        from torch.utils.cpp_extension import load

        try:
            build_dir = _build_dir(name)
            built = any(build_dir.glob("*.so"))
            _remove_stale_lock(build_dir / "lock", what)
        except Exception:  # noqa: BLE001 - only decides whether to announce a build
            built = False
        if not built:
            logger.warning("%s: compiling the C++ extension (first use only, about a minute; cached in the torch "
                           "extensions directory).", what)
        return load(name=name, sources=[str(p) for p in sources], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                    verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, build error: the kernels are optional
        text = str(exc).strip()
        logger.warning("%s could not be built (%s: %s); using the pure-PyTorch path. Building needs a C++ compiler "
                       "and ninja: %s.", what, type(exc).__name__, text.splitlines()[-1] if text else "",
                       install_hint("cpu-kernel"))
        return None
