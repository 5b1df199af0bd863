"""A terminal progress bar fed by the engines' ``(fraction, stage)`` callback.

It stays silent for the first second (quick jobs print nothing) and draws only on a terminal, so scripts and
logs get clean output. Every draw fits the terminal's current width (read again each time, so a resize takes
effect at the next draw): a line as wide as the terminal would wrap and leave a stale line behind each redraw.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

MIN_BAR = 5  # narrower than this, the bar is left out


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to; ``$COLUMNS`` wins, as with :func:`shutil.get_terminal_size`
    (which asks stdout, and stdout may be a pipe while the bar draws on stderr)."""
    if not os.environ.get("COLUMNS"):
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # no file descriptor, or not a terminal
            columns = 0
        if columns > 0:
            return columns
    return shutil.get_terminal_size().columns


def render(label: str, fraction: float, stage: str, elapsed: float, columns: int, bar_width: int = 30) -> str:
    """One progress line, at most ``columns - 1`` characters (a line that fills the last column wraps on some
    terminals).

    The richest layout that fits wins: ``label [bar] percent  stage m:ss``, then without the stage, without the
    label, without the clock, and last the percentage alone. The bar is ``bar_width`` wide, or narrower to fit.
    """
    fraction = min(1.0, max(0.0, fraction))
    minutes, seconds = divmod(int(elapsed), 60)
    percent, clock = f"{fraction * 100:5.1f}%", f"{minutes}:{seconds:02d}"
    room = max(0, columns - 1)
    layouts = (
        (label, f"{percent}  {stage:<12.12} {clock}"),
        (label, f"{percent} {clock}"),
        ("", f"{percent} {clock}"),
        ("", percent),
    )
    for head, tail in layouts:
        head = f"{head} " if head else ""
        width = min(bar_width, room - len(head) - len(tail) - len("[] "))
        if width >= MIN_BAR:
            filled = int(round(width * fraction))
            return f"{head}[{'#' * filled}{'-' * (width - filled)}] {tail}"
    return percent.strip()[:room]


class ProgressBar:
    """Callable as a :data:`bridge.engines.base.ProgressCallback`."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        delay: float = 1.0,
        width: int = 30,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.delay = delay
        self.width = width
        self._start = time.monotonic()
        self._drawn = False
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed < self.delay or (now - self._last < 0.05 and fraction < 1.0):
            return
        self._last = now
        room = max(0, terminal_columns(self.stream) - 1)
        line = render(self.label, fraction, stage, elapsed, room + 1, self.width)
        self.stream.write("\r" + line.ljust(room))  # the padding blanks what a longer line left behind
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
