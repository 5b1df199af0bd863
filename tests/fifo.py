"""FIFOs for tests of the refusal of non-regular files, and a guard so that code that blocks on one fails the
test instead of hanging it."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

GUARD_S = 30.0  # a generous bound: code that refuses a FIFO answers at once, code that opens one never does


def make_fifo(path: Path) -> Path:
    """A FIFO at ``path`` (its folder created); skips the test where the system has none."""
    if not hasattr(os, "mkfifo"):
        import pytest

        pytest.skip("this system has no FIFOs")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def release(fifo: Path) -> None:
    """Open and close the write end of ``fifo``, so that a reader blocked in ``open()`` on it returns."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is blocked on it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def without_blocking(fifos: list[Path], call: Callable[[], T]) -> T:
    """``call()``, run on a thread; if it has not returned after :data:`GUARD_S` it is blocked on one of
    ``fifos``: they are released and the test fails. Exceptions from ``call`` are raised here."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the test's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="fifo-guard", daemon=True)
    thread.start()
    thread.join(GUARD_S)
    if thread.is_alive():
        while thread.is_alive():
            for fifo in fifos:
                release(fifo)
            thread.join(0.1)
        raise AssertionError(f"blocked opening a FIFO ({', '.join(map(str, fifos))}) instead of refusing it")
    if error:
        raise error[0]
    return result[0]
