"""Output-folder rules shared by 2D and 3D ``mambaseg predict``: never inside the input folder, and what an existing
output means (an error, replaced with ``--overwrite``, or kept with ``--continue``)."""

from __future__ import annotations

from pathlib import Path

from ..data.errors import DataError

__all__ = ["check_existing", "check_output_dir"]


def check_output_dir(out: Path, input_arg: Path) -> None:
    """``out`` is a folder (or does not exist yet) outside the input folder of ``input_arg`` (a file or folder)."""
    out_r = out.resolve()
    in_dir = (input_arg if input_arg.is_dir() else input_arg.parent).resolve()
    if out_r == in_dir or in_dir in out_r.parents:
        raise DataError(f"{out}: output folder is (inside) the input folder {in_dir}; choose another -o.")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: output exists and is not a folder.")


def check_existing(targets: list[Path], overwrite: bool, skip_existing: bool,
                   extra: dict[Path, list[Path]] | None = None) -> set[Path]:
    """The targets to skip: with ``skip_existing`` (``--continue``) those whose outputs all exist (outputs are
    written atomically, so an existing file is complete); otherwise none, and an existing target is an error unless
    ``overwrite``. ``extra`` maps a target to its other outputs (probabilities, overlays) that must exist too."""
    if overwrite and skip_existing:
        raise DataError("--continue and --overwrite exclude each other: --continue keeps finished outputs, "
                        "--overwrite replaces them.")
    if skip_existing:
        return {t for t in targets if t.exists() and all(p.exists() for p in (extra or {}).get(t, []))}
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise DataError(f"{existing[0]}: output already exists (use --overwrite to replace it, or --continue "
                            f"to keep finished outputs and write the rest).")
    return set()
