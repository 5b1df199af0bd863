"""The daemon's jobs on a Ray cluster's warm actors: ``stembridge serve --cluster URL``.

A :class:`ClusterRunner` is a :data:`bridge.jobs.spec.Runner` like the pipeline's: the daemon's queue, journal,
progress replies and cancel work as with local jobs. Each job goes to an actor (:class:`bridge.batch.ray_executor.
BatchActor`, its engine warm between jobs) with its input files' bytes (or their paths with ``shared_fs``); the
actor streams its progress back, and its output files come back as bytes and are published here, in the job's
output folder, through the daemon's publish hook (journaled first, all or none). A cancel stops the actor holding
the job (it is replaced for the next one) and nothing is published. An actor that dies mid-job is replaced and
the job tried once more. Jobs that must stay near the daemon for latency (jam sessions) do not come here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bridge.audio.folder import HeldFolder
from bridge.audio.writer import Publisher
from bridge.batch.driver import EngineChoice
from bridge.batch.items import Item
from bridge.batch.ray_executor import RayExecutor
from bridge.batch.work import Outcome as WorkOutcome
from bridge.batch.work import Work, WorkerConfig
from bridge.client import remote_error
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import StembridgeError
from bridge.jobs import outdir
from bridge.jobs.runner import ENGINE_OPTIONS
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.jobs.warm import memory_budget

log = logging.getLogger(__name__)

RETRIES = 1
_RENAMED = {"sample_rate": "samplerate", "match_loudness": "loudness_match"}
_INPUTS = {"separate": "path", "vary": "path", "generate": "context"}
_LEFT_HERE = {"out", "path", "context", *ENGINE_OPTIONS}


def job_item(spec: JobSpec) -> Item:
    """The job as a batch item: its input files, and its options under the batch's names (engine options such
    as ``shifts`` under ``engine_options``)."""
    o = spec.options
    named = o.get(_INPUTS[spec.kind])
    paths = [named] if isinstance(named, str) else list(named or [])
    options: dict[str, Any] = {
        _RENAMED.get(k, k): v for k, v in o.items() if k not in _LEFT_HERE and v is not None
    }
    engine_options = {k: o[k] for k in ENGINE_OPTIONS if o.get(k) is not None}
    if engine_options:
        options["engine_options"] = engine_options
    return Item(spec.kind, tuple(Path(p) for p in paths), options, "", str(paths[0]) if paths else spec.kind)


class ClusterRunner:
    """Runs the daemon's jobs on ``ray``'s cluster (connected: :func:`bridge.batch.ray_executor.connect`)."""

    def __init__(
        self, settings: Settings, ray: Any, *, shared_fs: bool = False, gpus: float | None = None
    ) -> None:
        self.settings = settings
        config = WorkerConfig(settings.models_dir, settings.engine_options(), memory_budget(settings))
        self._executor = RayExecutor(ray, config, workers=1, gpus=gpus, shared_fs=shared_fs)
        self._ray = ray
        self._actor: Any = None
        self._engines: dict[tuple[str, str, str | None], str] = {}

    def close(self) -> None:
        self._executor.close()

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        folder, made = outdir.prepare(Path(spec.options["out"]), outdir.job_roots(self.settings))
        try:
            with folder:  # held open, the files published through it (see bridge.jobs.runner.run_job)
                item = job_item(spec)
                work = self._executor.payload(Work(0, item, self._engine(item)))
                outcome = self._remote(work, progress)
                if outcome.error is not None:
                    raise _error(outcome)
                return _publish(outcome, folder, on_publish, item.label)
        except BaseException:
            outdir.remove_empty(made)
            raise

    def _engine(self, item: Item) -> str:
        key = (str(item.options.get("engine") or self.settings.engine), item.task, item.options.get("model"))
        if key not in self._engines:
            choice = EngineChoice(
                self.settings.engine, None, self.settings.models_dir, self.settings.allow_download
            )
            self._engines[key] = self._executor.resolve([item], choice)[0]
        return self._engines[key]

    def _remote(self, work: Work, progress: ProgressCallback) -> WorkOutcome:
        """Run ``work`` on the warm actor, relaying its progress; a cancel (``progress`` raising) stops it."""
        for attempt in range(RETRIES + 1):
            if self._actor is None:
                self._actor = self._executor.spawn()
            stream = self._actor.run_streaming.options(num_returns="streaming").remote(work)
            try:
                for ref in stream:
                    kind, *rest = self._ray.get(ref)
                    if kind == "progress":
                        progress(*rest)
                    else:
                        outcome: WorkOutcome = rest[0]
                        return outcome
            except self._ray.exceptions.RayActorError:
                log.warning("the actor died running %s (try %d)", work.item.label, attempt + 1)
                self._drop_actor()
            except BaseException:  # cancelled: the actor is stopped with the job it holds
                self._drop_actor()
                raise
        raise StembridgeError(
            f"the cluster's actor died running {work.item.label} {RETRIES + 1} times; try again"
        )

    def _drop_actor(self) -> None:
        if self._actor is not None:
            self._executor.drop(self._actor)
            self._actor = None


def _error(outcome: WorkOutcome) -> StembridgeError:
    """The actor's error as the exception it was, so the daemon replies with its code."""
    return remote_error(outcome.code, outcome.error or "failed on the cluster")


def _publish(outcome: WorkOutcome, folder: HeldFolder, on_publish: PublishHook, source: str) -> Outcome:
    """Publish the actor's files in ``folder`` (all or none, the plan handed to ``on_publish`` first, through
    the folder's handle); the pipeline's description with the published paths."""
    with Publisher(folder=folder) as publisher:
        for f in outcome.files:
            publisher.add_file(folder.path / f.name, f.data, companion_of=f.companion_of)
        on_publish([staged.to_dict() for staged in publisher.reserve()])
        paths = publisher.publish()
    detail = dict(outcome.detail)
    audio = [f for f in outcome.files if f.companion_of is None]
    outputs = [dict(o) for o in detail.get("outputs", [])]
    for i, output in enumerate(outputs[: len(audio)]):
        output["path"] = str(paths[i])
        output.pop("midi", None)
    for f, path in zip(outcome.files, paths, strict=True):
        if f.companion_of is not None and f.companion_of < len(outputs):
            outputs[f.companion_of]["midi"] = str(path)
    detail["outputs"] = outputs
    if "source" in detail:
        detail["source"] = source  # not the actor's copy
    return Outcome([str(p) for p in paths], detail)
