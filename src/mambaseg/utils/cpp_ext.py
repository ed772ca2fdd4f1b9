"""The compiled CPU kernels (C++ extensions), shared by the scan and AKConv kernels: prebuilt, or built at first use.

An installed package carries both kernels prebuilt (``setup.py`` compiles them when the wheel is built or the package
installed, with :data:`FLAGS`) and, next to each, a JSON record of the torch version it was built against and a
digest of its sources. :func:`load_extension` imports that prebuilt module when the record matches the running torch
and the sources beside it (:func:`prebuilt_mismatch`); otherwise — another torch, edited sources, a checkout used
without installing, a package built without torch — it says why in one line and falls back to the build at first use.

The fallback compiles the sources with :func:`torch.utils.cpp_extension.load` (``-O3 -fno-trapping-math
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
import importlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from .optional import install_hint

__all__ = ["ENV_DISABLE_ALL", "FLAGS", "RECORD_SUFFIX", "disabled", "load_extension", "prebuilt_mismatch",
           "sources_digest"]

logger = logging.getLogger(__name__)

ENV_DISABLE_ALL = "MAMBASEG_NO_CPU_KERNEL"
FLAGS = ["-O3", "-fno-trapping-math", "-fopenmp"]  # setup.py compiles the prebuilt kernels with the same flags
RECORD_SUFFIX = ".build.json"  # <module><suffix> beside a prebuilt module: {"torch", "sources_sha256", "flags"}
# What a build costs, measured (torch 2.13 headers, -O3, x86-64 VM): 114 s of CPU for both kernels (about one minute
# each on a free core); 4.4 min of wall clock on a 2-core machine busy with two trainings. Printed so that the wait
# is not mistaken for a hang.
BUILD_ESTIMATE = "about a minute on a free core, two or three minutes on a busy machine"


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


def sources_digest(files) -> str:
    """SHA-256 over the contents of ``files`` in order (setup.py records the same digest for a prebuilt kernel)."""
    digest = hashlib.sha256()
    for p in files:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()


def prebuilt_mismatch(record: dict | None, torch_version: str, digest: str) -> str | None:
    """Why a prebuilt kernel with build ``record`` must not be used with ``torch_version`` and sources of
    ``digest`` (words for a log line), or None when it can be imported."""
    if record is None:
        return "it has no build record"
    if record.get("torch") != torch_version:
        return f"it was built for torch {record.get('torch')} and this is torch {torch_version}"
    if record.get("sources_sha256") != digest:
        return "its C++ sources have changed since it was built"
    return None


def _import_prebuilt(module: str, files: list[Path], what: str):
    """``(module, None)`` when the prebuilt ``module`` matches this torch and ``files``; ``(None, reason)`` if not
    (reason None when the install has no prebuilt kernel at all, as in a checkout used without installing)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None, None
    record_path = Path(spec.origin).with_name(module.rsplit(".", 1)[-1] + RECORD_SUFFIX)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    reason = prebuilt_mismatch(record, torch.__version__, sources_digest(files))
    if reason is None:
        try:
            return importlib.import_module(module), None
        except ImportError as exc:  # e.g. an undefined symbol: a torch with another ABI under the same version
            reason = f"it could not be imported ({exc})"
    return None, f"{what}: the prebuilt {Path(spec.origin).name} is not used: {reason}"


def load_extension(base_name: str, sources: list[Path], headers: list[Path] = (), what: str = "kernel",
                   prebuilt: str | None = None):
    """Import the prebuilt C++ extension, or compile (first use) / load the cached build; returns the module or None.

    Args:
        base_name: extension name prefix for a build at first use; the final name is ``{base_name}_{hash}``.
        sources: ``.cpp`` files to compile.
        headers: files included by the sources (hashed into the name so edits rebuild).
        what: words for the log lines ("AKConv CPU kernel").
        prebuilt: dotted name of the module setup.py builds from these sources, tried first (see
            :func:`prebuilt_mismatch` for when it is passed over).
    """
    files = [Path(p) for p in (*sources, *headers)]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        logger.warning("%s: source file %s is missing; using the pure-PyTorch path.", what, missing[0])
        return None
    why_not = None
    if prebuilt is not None:
        module, why_not = _import_prebuilt(prebuilt, files, what)
        if module is not None:
            return module
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
            if why_not:
                logger.warning("%s; compiling the C++ extension once instead (%s; cached in the torch extensions "
                               "directory).", why_not, BUILD_ESTIMATE)
            else:
                logger.warning("%s: no prebuilt kernel in this install (a checkout used without `pip install`, or a "
                               "build without torch): compiling the C++ extension once (%s; cached in the torch "
                               "extensions directory).", what, BUILD_ESTIMATE)
        return load(name=name, sources=[str(p) for p in sources], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                    verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, build error: the kernels are optional
        text = str(exc).strip()
        logger.warning("%s could not be built (%s: %s); using the pure-PyTorch path. Building needs a C++ compiler "
                       "and ninja: %s.", what, type(exc).__name__, text.splitlines()[-1] if text else "",
                       install_hint("cpu-kernel"))
        return None
