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


def available_bytes(root: Path = Path("/")) -> int | None:
    """Memory the system could give a process now without swapping: Linux's ``MemAvailable``, else the free
    physical pages (``os.sysconf``), and no more than this process's control group has left under its limit (a
    container's or a systemd unit's ``MemoryMax``, where the host's figure would let a job through that the
    kernel then kills); ``None`` where nothing is known (Windows). ``root``: the filesystem root (tests)."""
    system: int | None = None
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                system = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass  # no /proc here (macOS): ask sysconf
    if system is None:
        try:
            system = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
        except (AttributeError, ValueError, OSError):
            system = None
    group = cgroup_headroom(root)
    if group is None:
        return system
    return group if system is None else min(system, group)


def cgroup_headroom(root: Path = Path("/")) -> int | None:
    """What this process's memory control group has left under its limit (cgroup v2 ``memory.max`` less
    ``memory.current``, or v1 ``memory.limit_in_bytes`` less ``memory.usage_in_bytes``); ``None`` without a
    limit or where none can be read."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    fs = root / "sys/fs/cgroup"
    places = []
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.strip().lstrip("/")
        if number == "0" and controllers == "":  # v2: the unified hierarchy
            places += [(fs / rel, "memory.max", "memory.current"), (fs, "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            places += [
                (fs / "memory" / rel, "memory.limit_in_bytes", "memory.usage_in_bytes"),
                (fs / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
            ]
    for folder, limit_file, usage_file in places:
        try:
            limit_text = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 1 << 60:  # v1 "no limit"
            return None
        return max(0, int(limit_text) - usage)
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
