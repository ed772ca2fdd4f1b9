"""One input of a ``mambaseg predict`` run and the files it becomes (2D and 3D alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Job"]


@dataclass
class Job:
    """An input case: ``name`` names its outputs (the image's stem, the 3D case id), ``label`` is shown in the
    progress line, ``files`` are read for it (one image, or a volume's channel files); ``target`` is the label map
    written last, ``extras`` the other outputs asked for (probabilities, overlay); ``mask`` the 2D field-of-view
    mask file found for it (None: none given, or 3D)."""

    name: str
    label: str
    files: list[Path]
    target: Path
    extras: list[Path] = field(default_factory=list)
    mask: Path | None = None
