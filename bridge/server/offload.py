"""Blocking calls that may hang (a stat on a sleeping or unreachable disk), run off the event loop with a timeout.

Each call runs in a daemon thread of its own, so a call stuck in the kernel can neither hold up the event loop
nor keep the process from exiting. At most ``max_threads`` calls run at once; more wait their turn (a burst of
requests is served in order, quickly, as long as the disk answers), and a call that has not finished, waiting
included, within its timeout is given up. A stuck call keeps its slot until it returns, so a dead disk costs at
most ``max_threads`` threads, and the calls behind them time out instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _settle(
    future: asyncio.Future[Any], slots: asyncio.Semaphore, result: Any, error: BaseException | None
) -> None:
    slots.release()  # first: the waiting coroutine may resume, and its loop end, right after this
    if future.done():  # timed out or cancelled meanwhile: nobody waits for it any more
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Offloader:
    """Runs blocking calls in daemon threads, at most ``max_threads`` at a time, for one event loop.

    Args:
        max_threads: how many calls may run at once (some of them possibly stuck).
        name: the threads' name, for debuggers and logs.
    """

    def __init__(self, max_threads: int = 8, name: str = "stembridge-offload") -> None:
        self._slots = asyncio.Semaphore(max(1, int(max_threads)))
        self._name = name
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        """How many calls are running (including ones that timed out and have not returned yet)."""
        with self._lock:
            return self._running

    async def run(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread: its result, or the exception it raised.

        Raises:
            asyncio.TimeoutError: the call did not finish within ``timeout`` seconds, waiting for a free thread
                included (a call that started goes on in its thread; its result is dropped).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.wait_for(self._slots.acquire(), timeout)
        future: asyncio.Future[T] = loop.create_future()

        def work() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the waiting coroutine
                error = exc
            with self._lock:
                self._running -= 1
            try:
                loop.call_soon_threadsafe(_settle, future, self._slots, result, error)
            except RuntimeError:  # the loop has closed: the daemon stopped while this call hung
                pass

        with self._lock:
            self._running += 1
        try:
            threading.Thread(target=work, name=self._name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._running -= 1
            self._slots.release()
            raise
        return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
