"""Crash-safe file outputs: write to a temporary name in the destination folder, then rename.

A process killed (or a disk filling up) while writing leaves at most a hidden temporary file
``.<name>.<random>.tmp<suffix>`` next to the destination, never a partial file under the final name; ``os.replace``
is atomic on POSIX and Windows for paths on one file system. The temporary name keeps the destination's suffix
(``.nii.gz``, ``.png``, ...) so writers that pick the format from the suffix work unchanged, and it starts with a dot
so folder scans that skip hidden files (predict, evaluate) never take it for an output. :func:`clean_stale_temp`
removes the leftovers of killed writers.

Example::

    with atomic_path(out / "case.nii.gz") as tmp:
        nib.save(img, tmp)          # out/case.nii.gz appears complete, or not at all
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["append_line", "atomic_path", "atomic_write_bytes", "atomic_write_text", "clean_stale_temp",
           "is_temp_name", "read_jsonl", "set_default_mode", "truncate_partial_line"]

logger = logging.getLogger(__name__)

_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")
# mkstemp's random part is 8 characters of [a-z0-9_]
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9.]+)?$")


def _suffix(name: str) -> str:
    low = name.lower()
    for suf in _MULTI_SUFFIXES:
        if low.endswith(suf):
            return name[-len(suf):]
    return Path(name).suffix


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`atomic_path` (and :func:`mambaseg.engine.checkpoint.save_checkpoint`)."""
    return bool(_TEMP_RE.match(name))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def set_default_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode of an ordinary new file (0666 less the umask: 0644 under the usual 022);
    ``tempfile.mkstemp`` creates 0600, which a rename would carry to the final output."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; when the block ends without error it is renamed to ``final``.

    Args:
        final: the destination (its folder is created).
        fsync: flush the file (and the folder entry) to disk before/after the rename.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and the exception propagates;
    ``final`` is untouched (an earlier complete file stays as it was).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=f".tmp{_suffix(final.name)}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{final}: the writer did not create its temporary file {tmp.name}")
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        set_default_mode(tmp)  # mkstemp makes 0600; an output is an ordinary file
        os.replace(tmp, final)
        if fsync:
            _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def clean_stale_temp(folder: str | os.PathLike, names: set[str] | None = None) -> list[Path]:
    """Remove temporary files left in ``folder`` (not recursive) by killed writers.

    Args:
        folder: the folder to clean; missing folders are fine.
        names: only leftovers of these destination names (e.g. ``{"case.nii.gz"}``); None = all.

    Returns:
        The removed files. Call it only while no other process writes into ``folder`` (e.g. under the run lock).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        m = _TEMP_RE.match(p.name)
        if m and p.is_file() and (names is None or m["name"] in names):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def append_line(path: str | os.PathLike, line: str, fsync: bool = False) -> None:
    """Append one line to an append-only log (e.g. ``metrics.jsonl``) as a single unbuffered write.

    The file is opened with ``O_APPEND`` and the whole line (a newline is added when missing) goes to the kernel in
    one ``write`` (repeated only for the rest of a short write, e.g. on a full disk), so readers never see half a
    line followed by more data; a process killed mid-write leaves at most a torn LAST line, which
    :func:`truncate_partial_line` removes and :func:`read_jsonl` skips.
    """
    data = memoryview((line if line.endswith("\n") else line + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def truncate_partial_line(path: str | os.PathLike) -> int:
    """Cut what follows the last newline of ``path`` (a line torn by a kill mid-write); returns the bytes removed.

    A missing file is fine (0)."""
    path = Path(path)
    try:
        with open(path, "r+b") as fh:
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
                return len(data) - keep
    except FileNotFoundError:
        pass
    return 0


def read_jsonl(path: str | os.PathLike) -> list:
    """The records of a JSON-lines file, tolerant of a crash while it was appended to.

    A last line without its newline is taken when it parses (a writer that omits the final newline) and skipped
    when it does not (torn by a kill mid-write); other unparsable lines are skipped with a warning naming the file.
    A missing file gives ``[]``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1:  # the last piece (no newline after it) may be a torn write: skipped silently
                logger.warning("%s: skipping unreadable line %d", path, i + 1)
    return out
