"""An exclusive lock on a run folder, so two ``mambaseg train`` processes never write into the same ``--out``.

The lock is ``fcntl.flock`` on ``<folder>/.mambaseg.lock``, which holds the owner's pid and host name. The kernel
releases it when the owner exits, however it exits (a ``kill -9`` included), so a stale lock file never blocks
a later run; the file itself stays (removing it would race with a process that has just opened it). On systems
without ``fcntl`` (Windows) the lock is skipped with a warning. ``flock`` does not work across machines on every
network file system: there the lock protects against processes of one machine only.

Example::

    with RunLock(run_dir):      # RunLockedError naming the folder and the holder's pid if another run holds it
        train(...)
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError"]

LOCK_NAME = ".mambaseg.lock"
logger = logging.getLogger(__name__)


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock (one-line message naming the folder and the holder)."""


class RunLock:
    """Exclusive, non-blocking lock of ``folder`` (created if missing); use as a context manager or call
    :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | os.PathLike, what: str = "training"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def _holder(self) -> str:
        try:
            text = self.path.read_text().split()
        except OSError:
            text = []
        if not text:
            return "pid unknown"
        return f"pid {text[0]}" + (f" on {text[1]}" if len(text) > 1 and text[1] != socket.gethostname() else "")

    def acquire(self) -> Self:
        """Take the lock or raise :class:`RunLockedError` at once (never waits)."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            logger.warning("%s: run folder not locked (no fcntl on this system); do not start two runs in it",
                           self.folder)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError (EWOULDBLOCK), or EACCES on some systems
            os.close(fd)
            raise RunLockedError(f"{self.folder}: another {self.what} is running in this folder ({self._holder()}, "
                                 f"lock {LOCK_NAME}); wait for it to end or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no pid of a finished run left behind
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
