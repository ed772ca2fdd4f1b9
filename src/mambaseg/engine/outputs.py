"""Output rules shared by the commands that write (``predict``, ``evaluate``, ``export``, ``report``, ``train``): no
output location is an input or lies inside an input folder (links resolved), and what an existing output means (an
error, replaced with ``--overwrite``, or kept with ``--continue``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..data.errors import DataError

__all__ = ["check_apart", "check_existing", "check_output_dir"]


def _real(p: Path) -> Path:
    """``p`` with every link resolved (also a dangling last link: where a write through it would land)."""
    return Path(os.path.realpath(p))


def check_apart(out_dirs: Iterable[Path] = (), out_files: Iterable[Path] = (), in_dirs: Iterable[Path] = (),
                in_files: Iterable[Path] = (), option: str = "-o") -> None:
    """Before anything is written: no output folder is (inside) an input folder, no output file is an input file
    or lies inside an input folder, links resolved everywhere (a folder linked to the input folder is the input
    folder).

    Raises:
        DataError: naming the output (as given), the input it would touch and ``option``.
    """
    ins = [(d, _real(d)) for d in in_dirs if d is not None]
    in_f = {_real(f): f for f in in_files if f is not None}
    for o in out_dirs:
        r = _real(o)
        for d, dr in ins:
            if r == dr or dr in r.parents:
                raise DataError(f"{o}: output folder is (inside) the input folder {d}"
                                f"{' (links resolved: ' + str(r) + ')' if r != o.absolute() else ''}; nothing was "
                                f"written - choose another {option}.")
    for o in out_files:
        r = _real(o)
        if r in in_f:
            raise DataError(f"{o}: output would replace the input {in_f[r]}; nothing was written - choose another "
                            f"{option}.")
        for d, dr in ins:
            if dr in r.parents:
                raise DataError(f"{o}: output lies inside the input folder {d}; nothing was written - choose another "
                                f"{option}.")


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
    if not overwrite:  # every output (label map, probabilities, overlay), links included, needs --overwrite
        existing = [p for t in targets for p in [t, *(extra or {}).get(t, [])] if os.path.lexists(p)]
        if existing:
            raise DataError(f"{existing[0]}: output already exists (use --overwrite to replace it, or --continue "
                            f"to keep finished outputs and write the rest).")
    return set()
