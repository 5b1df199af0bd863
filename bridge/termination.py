"""SIGTERM and SIGHUP as an exception, so that a command cleans up after them as after Ctrl-C.

Left to their default, both signals end the process at once, without unwinding: the hidden temp files a job was
writing (full-size: hundreds of MB for a long song) stay behind, and nothing removes them. Inside
:func:`termination_raises`, they raise :class:`Terminated` in the main thread instead, which unwinds through the
writers' cleanup (:class:`bridge.audio.writer.Publisher` removes its temp files and claims) as KeyboardInterrupt
does for SIGINT.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = ("SIGTERM", "SIGHUP")  # by name: Windows has no SIGHUP


class Terminated(BaseException):
    """A termination signal arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` lets it
    through to the cleanup above.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process a signal ended: 128 plus the signal's number."""
        return 128 + self.signum


@contextmanager
def termination_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (once: a second signal during the cleanup
    is ignored, so it cannot cut the cleanup short). A signal this process ignores (SIGHUP under ``nohup``)
    stays ignored. The previous handlers come back after the block. Outside the main thread, where Python cannot
    set handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [getattr(signal, name) for name in SIGNALS if hasattr(signal, name)]
    previous = {sig: signal.getsignal(sig) for sig in wanted if signal.getsignal(sig) is not signal.SIG_IGN}

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    for sig in previous:
        signal.signal(sig, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():  # None: a handler not set from Python, which cannot come back
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
