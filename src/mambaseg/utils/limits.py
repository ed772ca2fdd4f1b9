"""Resource limits for untrusted inputs: the largest array a reader may allocate for one volume.

The cap defaults to 2 GiB and is read from the environment variable ``MAMBASEG_MAX_VOLUME_BYTES`` (bytes, an integer;
suffixes ``K``, ``M``, ``G`` for KiB, MiB, GiB are accepted) each time it is asked for, so tests and users can lower or
raise it without code changes.
"""

from __future__ import annotations

import os

__all__ = [
    "DEFAULT_MAX_VOLUME_BYTES",
    "ENV_MAX_VOLUME_BYTES",
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "format_bytes",
    "max_volume_bytes",
]

DEFAULT_MAX_VOLUME_BYTES = 2 * 1024**3
ENV_MAX_VOLUME_BYTES = "MAMBASEG_MAX_VOLUME_BYTES"
MIN_SPACING_MM = 1e-3  # voxel spacing must be > this (mm)
MAX_SPACING_MM = 1e3  # and <= this (mm)

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def max_volume_bytes() -> int:
    """The per-volume allocation cap in bytes (``MAMBASEG_MAX_VOLUME_BYTES`` or 2 GiB).

    Raises:
        ValueError: the environment variable is set but is not a positive integer (optionally with K/M/G/T).
    """
    raw = os.environ.get(ENV_MAX_VOLUME_BYTES, "").strip()
    if not raw:
        return DEFAULT_MAX_VOLUME_BYTES
    text = raw.upper().removesuffix("IB").removesuffix("B")
    scale = 1
    if text and text[-1] in _UNITS:
        scale, text = _UNITS[text[-1]], text[:-1]
    try:
        value = int(float(text) * scale)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{ENV_MAX_VOLUME_BYTES}={raw!r}: expected a positive number of bytes (e.g. 2147483648 "
                         f"or 2G)")
    return value


def format_bytes(n: float) -> str:
    """``3221225472`` -> ``"3.0 GiB"`` (B, KiB, MiB, GiB, TiB, PiB; larger values in EiB)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"
