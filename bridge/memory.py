"""Running out of memory: one clear error instead of a traceback, and what a job will need before it starts.

A :class:`MemoryError` (or torch's out-of-memory error, a ``RuntimeError``) raised anywhere inside a job is
turned into :class:`bridge.errors.OutOfMemory` by :func:`guard`, whose message says what could not be done and
what to try. The daemon also checks a job before running it: :func:`check_available` compares an estimate of
what the job holds at its peak (see :func:`bridge.pipeline.memory_needed`) with the memory the system has
available, and refuses the job with that error rather than let it bring the daemon down.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from bridge.errors import OutOfMemory

P = ParamSpec("P")
R = TypeVar("R")

MIB = 1 << 20
ADVICE = "try --length/--start, a shorter file, or close other programs"


def message(what: str) -> str:
    """``not enough memory to <what>: try --length/--start, a shorter file, or close other programs``."""
    return f"not enough memory to {what}: {ADVICE}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the machine (or the GPU) ran out of memory: a :class:`MemoryError`, or torch's
    out-of-memory errors (``RuntimeError`` subclasses whose message says so)."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def guard(describe: Callable[..., str]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a job function so that running out of memory inside it raises :class:`OutOfMemory`.

    ``describe`` gets the call's arguments and returns what was being done ("separate song.wav").
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except (MemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                what = describe(*args, **kwargs)
            # raised outside the except clause: the failed job's frames (and their arrays) are gone by now
            raise OutOfMemory(message(what))

        return wrapper

    return decorate


def available_bytes() -> int | None:
    """Memory the system could give a process now without swapping: Linux's ``MemAvailable``, else the free
    physical pages (``os.sysconf``); ``None`` where neither is known (Windows)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # no /proc here (macOS): ask sysconf
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_available(needed: int, what: str, available: int | None = None) -> None:
    """Raise :class:`OutOfMemory` when ``needed`` bytes is more than the memory available (``available``, or
    :func:`available_bytes`); an unknown amount lets the job run.

    Raises:
        OutOfMemory: naming what needs how much, and how much there is.
    """
    free = available_bytes() if available is None else available
    if free is None or needed <= free:
        return
    raise OutOfMemory(
        f"not enough memory to {what}: it needs about {_size(needed)} and {_size(free)} is available; "
        f"{ADVICE}"
    )


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{max(1, round(n / MIB))} MB"
