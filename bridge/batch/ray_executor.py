"""A batch on a Ray cluster (``stembridge[cluster]``): one actor per GPU (or per group of CPUs) keeps its engine
warm and serves items one after the other.

What crosses the network: each item's input files as bytes (unless ``shared_fs``: then only their paths, for a
cluster that mounts the same files), and each item's output files as bytes back to the driver, which writes them
(:mod:`bridge.batch.driver`: atomically, all or none, recorded in the state file). An actor that dies in the
middle of an item (its node lost, killed, out of memory) is dropped and the item is given to another actor, at
most ``retries`` more times; since actors never write outputs, the item's files still appear exactly once.

The cluster's nodes need stembridge installed (the same version, for identical results) with the engines the
batch uses. Ray has no authentication: see docs/CLUSTER.md.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from bridge.batch.driver import EngineChoice, resolve_engines
from bridge.batch.executor import DEFAULT_RETRIES, Executor, StartHook, died
from bridge.batch.items import Item
from bridge.batch.work import Outcome, Work, Worker, WorkerConfig
from bridge.errors import EngineUnavailable, InvalidArgument, StembridgeError

log = logging.getLogger(__name__)

INSTALL = "pip install 'stembridge[cluster]'"


def connect(url: str) -> Any:
    """Join the Ray cluster at ``url`` (``ray://HOST:10001``, or ``auto``: ``RAY_ADDRESS`` or the cluster
    ``ray start`` runs on this machine) and return the ``ray`` module; a session already joined is kept.

    Raises:
        EngineUnavailable: ray is not installed.
        InvalidArgument: ``url`` is neither form, or no cluster answers there.
    """
    try:
        import ray
    except ImportError:
        raise EngineUnavailable(f"--cluster needs Ray: {INSTALL}") from None
    if ray.is_initialized():
        return ray
    if url != "auto" and not url.startswith("ray://"):
        raise InvalidArgument(f"--cluster must be ray://HOST:10001 or auto, got {url!r}")
    try:
        ray.init(address=url, log_to_driver=False, logging_level=logging.WARNING)
    except ValueError as exc:
        if "ray[client]" not in str(exc):
            raise InvalidArgument(f"--cluster {url}: {exc}") from None
        raise EngineUnavailable(
            f"--cluster {url} connects through Ray Client: pip install 'ray[client]' (the version of the extra), "
            "or run the batch on a machine of the cluster with --cluster auto"
        ) from None
    except (ConnectionError, RuntimeError) as exc:
        where = os.environ.get("RAY_ADDRESS", "RAY_ADDRESS (unset)") if url == "auto" else url
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(
            f"no Ray cluster answers at {where} ({first}); start one (docs/CLUSTER.md) or check the address"
        ) from None
    return ray


class BatchActor:
    """What runs on the cluster: a :class:`bridge.batch.work.Worker`, its engine warm between items."""

    def __init__(self, config: WorkerConfig) -> None:
        self.worker = Worker(config)

    def run(self, work: Work) -> Outcome:
        return self.worker.run(work)

    def run_streaming(self, work: Work) -> Iterator[tuple[Any, ...]]:
        """Run ``work``, yielding ``("progress", fraction, stage)`` as it goes (at most every 1 % or new stage),
        then ``("done", outcome)``. Called with ``num_returns="streaming"`` (the daemon's cluster runner)."""
        updates: queue.Queue[tuple[str, float, str] | None] = queue.Queue()
        outcome: list[Outcome] = []

        def work_on() -> None:
            try:
                outcome.append(self.worker.run(work, lambda f, stage: updates.put(("progress", f, stage))))
            finally:
                updates.put(None)

        thread = threading.Thread(target=work_on, name="stembridge-actor-job")
        thread.start()
        last = (-1.0, "")
        while (update := updates.get()) is not None:
            _, fraction, stage = update
            if fraction - last[0] >= 0.01 or stage != last[1] or fraction >= 1.0:
                last = (fraction, stage)
                yield update
        thread.join()
        yield ("done", outcome[0])


class RayExecutor(Executor):
    """Items on a Ray cluster's actors.

    Args:
        ray: the ``ray`` module, connected (:func:`connect`).
        workers: how many actors (default: the cluster's GPUs divided by ``gpus``, or its CPUs by ``cpus``).
        cpus: CPUs each actor takes.
        gpus: GPUs each actor takes (default: 1 when the cluster has GPUs, else 0).
        shared_fs: the actors read the driver's paths themselves instead of getting the files' bytes.
        retries: how many more times an item whose actor died is tried on another.
    """

    def __init__(
        self,
        ray: Any,
        config: WorkerConfig,
        *,
        workers: int | None = None,
        cpus: float = 1.0,
        gpus: float | None = None,
        shared_fs: bool = False,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if cpus <= 0 or (gpus is not None and gpus < 0):
            raise InvalidArgument(
                f"an actor needs more than 0 CPUs and 0 or more GPUs, got {cpus} and {gpus}"
            )
        resources = ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0))
        gpus = (1.0 if cluster_gpus >= 1 else 0.0) if gpus is None else gpus
        fit = cluster_gpus // gpus if gpus else float(resources.get("CPU", 1)) // cpus
        self.workers = max(1, int(workers or fit))
        self.shared_fs = shared_fs
        self.retries = max(0, int(retries))
        self._ray = ray
        self._config = config
        self._resources = {"num_cpus": cpus, "num_gpus": gpus}
        self._actor_class = ray.remote(max_restarts=0, **self._resources)(BatchActor)
        self._actors: list[Any] = []

    def resolve(self, items: Sequence[Item], choice: EngineChoice) -> list[str]:
        """The engine of each item, resolved on the cluster (on a node like the actors', where the weights are;
        ``auto`` on the driver would pick the built-in engine on a laptop without them).

        Raises:
            StembridgeError: as :func:`bridge.batch.driver.resolve_engines`.
        """
        task = self._ray.remote(**self._resources)(resolve_engines)
        try:
            engines: list[str] = self._ray.get(task.remote(items, choice))
        except self._ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, StembridgeError):
                raise exc.cause from None
            raise
        return engines

    def spawn(self) -> Any:
        """A new actor (it loads its engine on its first item)."""
        actor = self._actor_class.remote(self._config)
        self._actors.append(actor)
        return actor

    def drop(self, actor: Any) -> None:
        """Stop ``actor``, whatever it is doing."""
        self._actors.remove(actor)
        self._ray.kill(actor)

    def payload(self, work: Work) -> Work:
        """``work`` with its inputs' bytes, unless the cluster shares this machine's files."""
        if self.shared_fs:
            return work
        from bridge.audio.inputs import AUDIO_FIX, open_regular

        data = []
        for path in work.item.inputs:
            try:
                with open_regular(path) as f:
                    data.append(f.read())
            except OSError as exc:
                raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}; {AUDIO_FIX}") from None
        return replace(work, data=tuple(data))

    def run(self, works: Iterable[Work], on_start: StartHook | None = None) -> Iterator[Outcome]:
        ray = self._ray
        pending = deque(works)
        tries: dict[int, int] = {}
        idle = list(self._actors)
        busy: dict[Any, tuple[Any, Work]] = {}  # the item's result ref -> (actor, work)
        while pending or busy:
            while pending and (idle or len(busy) < self.workers):
                work = pending.popleft()
                try:
                    payload = self.payload(work)
                except StembridgeError as exc:
                    yield Outcome(work.index, error=exc.message)
                    continue
                actor = idle.pop() if idle else self.spawn()
                tries[work.index] = tries.get(work.index, 0) + 1
                busy[actor.run.remote(payload)] = (actor, work)
                if on_start is not None:
                    on_start(work, actor)
            if not busy:
                continue
            ready, _ = ray.wait(list(busy), num_returns=1)
            for ref in ready:
                actor, work = busy.pop(ref)
                try:
                    outcome: Outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the actor died (or its node), mid-item
                    how = type(exc).__name__
                    log.warning("an actor died running %s (%s)", work.item.label, how)
                    self.drop(actor)
                    if tries[work.index] <= self.retries:
                        pending.appendleft(work)
                    else:
                        yield Outcome(work.index, error=died(how, tries[work.index]))
                    continue
                idle.append(actor)
                yield outcome

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors.clear()
