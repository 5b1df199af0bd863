"""Logging that does not flood: at most one line per kind of event every few seconds.

A client that sends garbage in a loop gets one log line per interval, and the next line that gets through
says how many similar ones were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

MAX_KEYS = 256


class LogLimiter:
    """Rate-limits log lines by ``key`` (a short label naming the kind of event, from a small fixed set).

    Args:
        logger: where lines go.
        interval: the shortest time, in seconds, between two lines with the same key.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 5.0, clock: Callable[[], float] = time.monotonic
    ):
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless a line with ``key`` went out less than ``interval`` ago.

        Returns:
            Whether the line was written.
        """
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            message += f" ({held} similar message(s) held back in the last {self.interval:g} s)"
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, message, *args)
