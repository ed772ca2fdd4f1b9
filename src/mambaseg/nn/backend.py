"""Choosing the selective-scan backend of a whole network, as an argument rather than through the environment."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn

__all__ = ["scan_backend"]


@contextlib.contextmanager
def scan_backend(net: nn.Module, backend: str | None) -> Iterator[nn.Module]:
    """Run every selective scan inside ``net`` with ``backend`` (e.g. ``"chunked"`` for tracing) for the duration.

    Sets the ``scan_backend`` attribute of each Mamba module (those that declare it) and restores the previous
    values on exit, also when the body raises. Returns ``net``.
    """
    mods = [m for m in net.modules() if hasattr(type(m), "scan_backend")]
    old = [m.__dict__.get("scan_backend", _UNSET) for m in mods]
    for m in mods:
        m.scan_backend = backend
    try:
        yield net
    finally:
        for m, value in zip(mods, old):
            if value is _UNSET:
                m.__dict__.pop("scan_backend", None)
            else:
                m.scan_backend = value


_UNSET = object()
