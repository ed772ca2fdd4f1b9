"""Progress output that suits both a terminal and a log file.

:class:`StatusLine` is one status line on stderr: on a terminal it is redrawn in place (at most every
``tty_interval`` seconds); anywhere else (a log file, a pipe, a CI job) it is printed as a new line at most every
``interval`` seconds (30 s by default), so a non-interactive log gets a few readable lines instead of one
carriage-return refresh per step. On a terminal, log records printed to the same stream (warnings) first clear the
status line, so they start on a clean line; the next update redraws it. :class:`TrainProgress` and
:class:`ItemProgress` build the texts for training (the time budget when ``train.time_limit_min`` is set, else the
epochs; steps within the epoch; validation cases and tiles) and for prediction (images or cases, and the
sliding-window tiles of the current one).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ItemProgress", "StatusLine", "TrainProgress", "fmt_duration"]


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"`` (negative or non-finite values read as 0)."""
    s = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class StatusLine:
    """One status line: redrawn in place on a terminal, a new line at most every ``interval`` s otherwise.

    Args:
        enabled: False makes every call a no-op (``--no-progress``).
        stream: where to write; ``None`` means ``sys.stderr`` at the time of each write.
        interval: seconds between printed lines when the stream is not a terminal.
        tty_interval: seconds between redraws on a terminal.
        tty: force terminal (True) or log (False) behaviour; ``None`` asks ``stream.isatty()``.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, interval: float = 30.0,
                 tty_interval: float = 0.5, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self._stream = stream
        self.interval = interval
        self.tty_interval = tty_interval
        self._tty = tty
        self._clock = clock
        self._last: float | None = None
        self._width = 0  # characters of the line now drawn on the terminal
        self.lines_written = 0
        self._hooked: list[tuple[logging.Handler, logging.Filter]] = []
        self._hook_tried = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        if self._tty is None:
            try:
                self._tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):  # closed or odd stream: behave as a log
                self._tty = False
        return self._tty

    def due(self) -> bool:
        """Whether an :meth:`update` now would write (lets callers skip building the text)."""
        if not self.enabled:
            return False
        if self._last is None:
            return True
        return self._clock() - self._last >= (self.tty_interval if self.tty else self.interval)

    def update(self, text: str | Callable[[], str], force: bool = False) -> bool:
        """Show ``text`` (a string or a function returning one) if the interval has passed or ``force``.

        Returns:
            Whether something was written.
        """
        if not self.enabled or not (force or self.due()):
            return False
        self._last = self._clock()
        self._write(text() if callable(text) else text)
        return True

    def _write(self, text: str) -> None:
        text = " ".join(text.split())  # one line, whatever the text holds
        try:
            if self.tty:
                if not self._hook_tried:
                    self._hook_logging()
                cols = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
                text = text[:cols]
                self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
                self._width = len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self.lines_written += 1
        except (OSError, ValueError):  # a closed or broken stream must not stop a training
            self.enabled = False

    def clear(self) -> None:
        """Blank the status line on a terminal (the next update draws it again)."""
        if self._width:
            try:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._width = 0

    def _hook_logging(self) -> None:
        """Let log handlers that write to this terminal clear the status line before each record."""
        line = self
        self._hook_tried = True

        class _Clear(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                line.clear()
                return True

        for h in logging.getLogger().handlers:
            if getattr(h, "stream", None) is self.stream:
                f = _Clear()
                h.addFilter(f)
                self._hooked.append((h, f))

    def close(self, final: str | None = None) -> None:
        """Clear the terminal line (and print ``final`` as a line of its own, terminal or not)."""
        for h, f in self._hooked:
            h.removeFilter(f)
        self._hooked, self._hook_tried = [], False
        if not self.enabled:
            return
        try:
            if self.tty:
                self.clear()
            if final:
                self.stream.write(" ".join(final.split()) + "\n")
                self.lines_written += 1
            self.stream.flush()
        except (OSError, ValueError):
            pass
        self._last = None


class TrainProgress:
    """Texts of the training status line.

    With a time budget (``limit_s > 0``) the line shows the elapsed and remaining time of the budget and the epochs
    so far (``epoch 5``), not a meaningless epoch total; the total is shown (``epoch 5/20``) when the epochs, at the
    pace so far, run out before the budget. Without a budget it shows ``epoch e/E`` and an estimate of the time
    left. Both show the step within the epoch, the running training loss and, during validation, the cases (and
    tiles of the current case) done.

    Args:
        line: the :class:`StatusLine` to write to.
        epochs: ``train.epochs``.
        iters_per_epoch: ``train.iters_per_epoch``.
        limit_s: the time budget in seconds (0 = none).
        t_start: ``time.time()`` at which the run's elapsed time is 0 (earlier for a resumed run).
        start_epoch: the first epoch (0-based) of this process (after a resume, the epoch it resumes at).
        clock: wall clock in seconds (injectable for tests).
    """

    def __init__(self, line: StatusLine, epochs: int, iters_per_epoch: int, limit_s: float, t_start: float,
                 start_epoch: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.line, self.epochs, self.iters, self.limit_s = line, epochs, iters_per_epoch, float(limit_s or 0.0)
        self.t_start, self.clock = t_start, clock
        self._t0, self._steps0 = clock(), start_epoch * iters_per_epoch  # pace measured from this process's start
        self.epoch, self.step_no, self.loss = start_epoch, 0, float("nan")

    def _head(self) -> str:
        now = self.clock()
        elapsed = now - self.t_start
        done = self.epoch * self.iters + self.step_no
        total = self.epochs * self.iters
        rate = (now - self._t0) / (done - self._steps0) if done > self._steps0 else None
        steps_left_s = rate * (total - done) if rate is not None else None
        where = f"step {self.step_no}/{self.iters}"
        if self.limit_s:
            left = max(0.0, self.limit_s - elapsed)
            pct = min(100.0, 100.0 * elapsed / self.limit_s)
            epochs_bind = steps_left_s is not None and steps_left_s < left
            ep = f"epoch {self.epoch + 1}" + (f"/{self.epochs}" if epochs_bind else "")
            left_s = f"~{fmt_duration(steps_left_s)} left" if epochs_bind else f"{fmt_duration(left)} left"
            return (f"train {fmt_duration(elapsed)} of {fmt_duration(self.limit_s)} time budget ({pct:.0f}%), "
                    f"{left_s} | {ep}, {where}")
        pct = 100.0 * done / max(1, total)
        eta = f", ~{fmt_duration(steps_left_s)} left" if steps_left_s is not None else ""
        return (f"train epoch {self.epoch + 1}/{self.epochs}, {where} ({pct:.0f}%) | "
                f"{fmt_duration(elapsed)} elapsed{eta}")

    def step(self, epoch: int, step_no: int, loss: float | None = None) -> None:
        """After step ``step_no`` (1-based) of ``epoch`` (0-based); ``loss``: the epoch's running mean loss."""
        self.epoch, self.step_no = epoch, step_no
        if loss is not None:
            self.loss = loss
        if self.line.due():
            self.line.update(self._head() + (f" | loss {self.loss:.4f}" if math.isfinite(self.loss) else ""))

    def validating(self, cases_done: int, cases: int, tiles_done: int = 0, tiles: int = 0) -> None:
        """During validation: ``cases_done`` of ``cases`` finished, ``tiles_done`` of ``tiles`` of the current one."""
        if self.line.due():
            tiles_s = f", tiles {tiles_done}/{tiles}" if tiles else ""
            self.line.update(f"{self._head()} | validating case {min(cases_done + 1, cases)}/{cases}{tiles_s}")

    def close(self) -> None:
        self.line.close()


class ItemProgress:
    """Texts of the prediction status line: ``predict image 3/20 (NAME): tiles 5/16 | 0:42 elapsed, ~3:10 left``.

    Args:
        line: the :class:`StatusLine` to write to.
        total: number of images or cases.
        unit: ``"image"`` or ``"case"``.
        what: the leading word.
        clock: wall clock in seconds (injectable for tests).
    """

    def __init__(self, line: StatusLine, total: int, unit: str = "image", what: str = "predict",
                 clock: Callable[[], float] = time.time) -> None:
        self.line, self.total, self.unit, self.what, self.clock = line, total, unit, what, clock
        self._t0 = clock()
        self.index, self.name = 0, ""

    def item(self, index: int, name: str = "") -> None:
        """Item ``index`` (0-based) starts."""
        self.index, self.name = index, name
        self.tiles(0, 0)

    def tiles(self, done: int, total: int) -> None:
        """``done`` of ``total`` sliding-window tiles of the current item (a :func:`sliding_window` callback)."""
        if not self.line.due():
            return
        elapsed = self.clock() - self._t0
        frac = (self.index + (done / total if total else 0.0)) / max(1, self.total)
        eta = f", ~{fmt_duration(elapsed * (1 - frac) / frac)} left" if frac > 0 else ""
        name = f" ({self.name})" if self.name else ""
        tiles_s = f": tiles {done}/{total}" if total else ""
        self.line.update(f"{self.what} {self.unit} {self.index + 1}/{self.total}{name}{tiles_s} | "
                         f"{fmt_duration(elapsed)} elapsed{eta}")

    def close(self) -> None:
        self.line.close()
