"""Where a batch's items run: the :class:`Executor` interface, and :class:`LocalPool`, worker processes here.

An executor takes :class:`bridge.batch.work.Work` and yields one :class:`bridge.batch.work.Outcome` per item, in
the order they finish. A worker that dies in the middle of an item (killed, out of memory, a crash in a native
library) is replaced and the item is given to another worker, at most ``retries`` more times; after that the
item fails with a line saying so, and the rest goes on. Workers never write outputs, so a retried item's files
still appear once (the driver publishes each item's outcome once).

This module imports no numpy: a spawned worker process sets its thread limits before anything loads a math
library.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from bridge.batch.work import Outcome, Work, Worker, WorkerConfig

log = logging.getLogger(__name__)

#: Called when an item is handed to a worker: ``(work, worker)`` (the worker as the executor knows it: a
#: process here, an actor handle on Ray). Progress displays and tests use it.
StartHook = Callable[[Work, Any], None]
DEFAULT_RETRIES = 2
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Executor:
    """Runs items on workers that keep their engines warm; a context manager that stops them on exit."""

    #: how many items run at once
    workers: int = 1

    def run(self, works: Iterable[Work], on_start: StartHook | None = None) -> Iterator[Outcome]:
        """Yield an outcome for every item, in the order they finish."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (an item still running is abandoned)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def died(how: str, tries: int) -> str:
    """The error of an item whose worker died on each of its ``tries``."""
    times = "once" if tries == 1 else f"{tries} times"
    return (
        f"its worker died while running it ({how}), {times}; the item may need more memory than a worker has: "
        "try fewer --workers"
    )


class _Process:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn


class LocalPool(Executor):
    """``workers`` processes on this machine, each with a :class:`bridge.batch.work.Worker`.

    Processes are spawned (not forked: a forked copy of a driver that loaded torch may hang), started as
    items need them, and ignore Ctrl-C (the driver stops them). Each limits its math libraries to
    ``threads`` threads unless the environment already does.
    """

    def __init__(
        self, config: WorkerConfig, workers: int, *, threads: int = 1, retries: int = DEFAULT_RETRIES
    ) -> None:
        self.config = config
        self.workers = max(1, int(workers))
        self.threads = max(1, int(threads))
        self.retries = max(0, int(retries))
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[_Process] = []

    def _start(self) -> _Process:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, self.config, self.threads),
            name="stembridge-batch-worker",
            daemon=True,
        )
        process.start()
        child.close()
        proc = _Process(process, parent)
        self._procs.append(proc)
        return proc

    def _drop(self, proc: _Process) -> None:
        proc.conn.close()
        proc.process.join(timeout=5)
        self._procs.remove(proc)

    def run(self, works: Iterable[Work], on_start: StartHook | None = None) -> Iterator[Outcome]:
        pending = deque(works)
        tries: dict[int, int] = {}
        idle: list[_Process] = [p for p in self._procs if p.process.is_alive()]
        busy: dict[_Process, Work] = {}
        while pending or busy:
            while pending and (idle or len(busy) < self.workers):
                proc = idle.pop() if idle else self._start()
                work = pending.popleft()
                tries[work.index] = tries.get(work.index, 0) + 1
                proc.conn.send(work)
                busy[proc] = work
                if on_start is not None:
                    on_start(work, proc.process)
            ready = set(wait([p.conn for p in busy] + [p.process.sentinel for p in busy]))
            for proc in list(busy):
                if proc.conn not in ready and proc.process.sentinel not in ready:
                    continue
                work = busy.pop(proc)
                outcome = _receive(proc)
                if outcome is not None:
                    idle.append(proc)
                    yield outcome
                    continue
                proc.process.join(timeout=5)
                how = _exit_description(proc.process.exitcode)
                log.warning("a worker died running %s (%s)", work.item.label, how)
                self._drop(proc)
                if tries[work.index] <= self.retries:
                    pending.appendleft(work)
                else:
                    yield Outcome(work.index, error=died(how, tries[work.index]))

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.conn.send(None)
            except OSError:
                pass  # it is gone already
        for proc in self._procs:
            proc.process.join(timeout=2)
            if proc.process.is_alive():  # still on an item: abandoned
                proc.process.terminate()
                proc.process.join(timeout=5)
            proc.conn.close()
        self._procs.clear()


def _receive(proc: _Process) -> Outcome | None:
    """The worker's outcome, or None when it died instead of answering."""
    try:
        if proc.conn.poll():
            outcome: Outcome = proc.conn.recv()
            return outcome
    except (EOFError, OSError):
        return None
    return None


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _serve(conn: Connection, config: WorkerConfig, threads: int) -> None:
    """A worker process: run the items the driver sends until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    for name in _THREAD_VARS:
        os.environ.setdefault(name, str(threads))
    worker = Worker(config)
    while True:
        try:
            work = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if work is None:
            return
        outcome = worker.run(work)
        try:
            conn.send(outcome)
        except OSError:  # the driver is gone
            return
