"""A terminal progress bar fed by the engines' ``(fraction, stage)`` callback.

It stays silent for the first second (quick jobs print nothing) and draws only on a terminal, so scripts and
logs get clean output.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
        filled = int(round(self.width * min(1.0, max(0.0, fraction))))
        bar = "#" * filled + "-" * (self.width - filled)
        minutes, seconds = divmod(int(elapsed), 60)
        line = f"\r{self.label} [{bar}] {fraction * 100:5.1f}%  {stage:<12.12} {minutes}:{seconds:02d}"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line, if one was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
