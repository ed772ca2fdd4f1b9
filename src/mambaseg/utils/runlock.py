"""An exclusive lock on a run folder, so two ``mambaseg train`` processes never write into the same ``--out``.

The lock is ``fcntl.flock`` on ``<folder>/.mambaseg.lock``, which holds the owner's pid and host name. The kernel
releases it when the owner exits, however it exits (a ``kill -9`` included), so a stale lock file never blocks
a later run; the file itself stays, unless ``remove`` (output folders that should hold only outputs): then it is
removed while still locked, and a process that opened it just before sees, once it holds the lock, that the path no
longer names its file and takes the lock again on a new one (the same check covers every holder).

The lock file is opened the way a file we may not own must be: created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` when
absent; when present, opened without following a symbolic link and written (truncated) only when it is a regular
file with one link that holds nothing or a lock line (``<pid> <host>``) - anything else (a link to a user's file, a
hard link, a FIFO, a folder, other content) is an error naming it, and is left untouched. On systems
without ``fcntl`` (Windows) the lock is skipped with a warning. ``flock`` does not work across machines on every
network file system: there the lock protects against processes of one machine only.

Example::

    with RunLock(run_dir):      # RunLockedError naming the folder and the holder's pid if another run holds it
        train(...)
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
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
_LOCK_TEXT = re.compile(rb"(\d+ \S+\n)?")  # what a lock file of ours holds: nothing, or "<pid> <host>\n"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock, or the lock file is not ours to write (one-line message naming
    the folder and the holder, or the file)."""


class RunLock:
    """Exclusive, non-blocking lock of ``folder`` (created if missing); use as a context manager or call
    :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | os.PathLike, what: str = "training", option: str = "--out",
                 remove: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.option = option  # the command-line option that names the folder (in the messages)
        self.remove = remove  # remove the lock file on release (output folders of predict, evaluate, export)
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
        for _ in range(100):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError (EWOULDBLOCK), or EACCES on some systems
                os.close(fd)
                raise RunLockedError(f"{self.folder}: another {self.what} is running in this folder "
                                     f"({self._holder()}, lock {LOCK_NAME}); wait for it to end or choose another "
                                     f"{self.option}.") from None
            if self._same_file(fd):
                break
            os.close(fd)  # removed by a holder releasing it between our open and our lock: take the new one
        else:  # pragma: no cover - only under a storm of lock churn
            raise RunLockedError(f"{self.path}: could not take the lock (replaced again and again); try again.")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        """``fd`` is still the file named by the lock path (not removed or replaced since it was opened)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        fst = os.fstat(fd)
        return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)

    def _open(self) -> int:
        """A descriptor of the lock file: created exclusively, or an existing one that is a lock file of ours
        (never a link, never another file: :class:`RunLockedError` naming it, the file untouched)."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            pass
        bad = (f"{self.path}: exists and is not a mambaseg lock file (%s); it is left untouched - remove it or "
               f"choose another {self.option}.")
        if self.path.is_symlink():
            raise RunLockedError(bad % "a symbolic link")
        try:  # O_NONBLOCK: a FIFO of that name must not make us wait
            fd = os.open(self.path, os.O_RDWR | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise RunLockedError(bad % (e.strerror or type(e).__name__)) from None
        st = os.fstat(fd)
        why = ("not a regular file" if not stat.S_ISREG(st.st_mode) else
               "a file with other hard links" if st.st_nlink != 1 else
               "it holds other content" if st.st_size > 256 or not _LOCK_TEXT.fullmatch(os.pread(fd, 257, 0)) else "")
        if why:
            os.close(fd)
            raise RunLockedError(bad % why)
        return fd

    def release(self) -> None:
        """Release the lock (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.remove and self._same_file(fd):
                os.unlink(self.path)  # while still locked: a waiter that opened it sees it gone and retries
            else:
                os.ftruncate(fd, 0)  # no pid of a finished run left behind
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
