"""The job queue: a bounded line of jobs, one worker thread that runs them, progress, cancel and the journal.

Inference runs on the worker thread, never on the event loop, so the server keeps answering ping, status and
cancel within milliseconds while a model runs. The queue reports what happens to each job as
:class:`JobEvent` objects through one listener (called on the worker thread, or on the caller's thread for a
cancelled queued job); the server turns them into OSC replies. Every job that :meth:`JobQueue.submit`
accepts ends in exactly one ``done`` or ``error`` event.

Cancel stops a queued job at once and a running one at its next chunk: the progress callback that the runner
calls between chunks raises :class:`bridge.errors.Cancelled`, and so does the publish hook that the runner
calls right before its files appear (after journaling their planned paths otherwise). A cancel that arrives
after that is too late: the job ends ``done``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.engines.base import ProgressCallback
from bridge.errors import Busy, Cancelled, InvalidArgument, StembridgeError
from bridge.jobs.journal import JobRecord, Journal
from bridge.jobs.spec import JobSpec, Outcome, PublishHook, Runner

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events a second per job; the final one always goes out
CANCEL_MESSAGE = "cancelled by request"
SHUTDOWN_MESSAGE = "cancelled: the daemon is shutting down; send the request again when it is back"


@dataclass(frozen=True)
class ReplyTo:
    """Where a job's replies go: an IP address and UDP port, and optionally a live stream to prefer."""

    host: str
    port: int
    channel: object | None = None


@dataclass(frozen=True)
class JobEvent:
    """What happened to a job: ``progress``, ``made`` (``made_by``: engine, model and notes, right before
    ``done``), ``done`` (with ``paths``) or ``error`` (``code``, ``message``)"""

    kind: str
    request_id: str
    reply: ReplyTo
    fraction: float = 0.0
    stage: str = ""
    paths: tuple[str, ...] = ()
    code: str = ""
    message: str = ""
    made_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueOverview:
    """The queue at a glance (the ``queue`` request): whether a job runs, how many wait, and for the asking
    machine its running job's id (empty for another machine's) and how many of the waiting ones are its own."""

    running: bool
    waiting: int
    job: str = ""
    fraction: float = 0.0
    stage: str = ""
    yours_waiting: int = 0


@dataclass(frozen=True)
class JobStatus:
    """A job's state as ``status`` reports it: queued, running, done, failed, cancelled or unknown.

    ``position`` counts the jobs ahead of a queued one (the running job included).
    """

    request_id: str
    state: str
    fraction: float = 0.0
    stage: str = ""
    position: int = 0
    paths: tuple[str, ...] = ()
    code: str = ""
    message: str = ""

    @classmethod
    def from_record(cls, rec: JobRecord) -> JobStatus:
        fraction = 1.0 if rec.state == "done" else rec.fraction
        return cls(rec.request_id, rec.state, fraction, "", 0, rec.outputs, rec.error_code, rec.error_message)


@dataclass(frozen=True)
class Submission:
    """What :meth:`JobQueue.submit` did: ``new`` is False when the request_id was already known."""

    new: bool
    status: JobStatus


JobListener = Callable[[JobEvent], None]


def _check_same_job(request_id: str, known: str, spec: JobSpec) -> None:
    """Refuse a request that reuses ``request_id`` for a job other than the one it named (fingerprint ``known``;
    an empty one, from a journal row that could not be fingerprinted, matches nothing)."""
    if not known or known != spec.fingerprint:
        raise InvalidArgument(
            f"request_id {request_id!r} was already used for a different job; pick a new id"
        )


class _Job:
    """A queued or running job; the worker writes its mutable fields, others read them under the lock."""

    def __init__(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> None:
        self.client = client
        self.request_id = request_id
        self.spec = spec
        self.reply = reply
        self.state = "queued"
        self.fraction = 0.0
        self.stage = ""
        self.cancel_reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.client, self.request_id)


class JobQueue:
    """A bounded queue of jobs run one at a time by a worker thread.

    Args:
        runner: runs one job; see :data:`bridge.jobs.spec.Runner`.
        journal: where every job and its outcome are recorded.
        listener: receives every :class:`JobEvent`; must be quick and thread-safe.
        max_pending: how many jobs may wait behind the running one.
        progress_interval: the shortest time between two progress events of a job, in seconds.
    """

    def __init__(
        self,
        runner: Runner,
        journal: Journal,
        listener: JobListener,
        *,
        max_pending: int = 16,
        progress_interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner
        self._journal = journal
        self._listener = listener
        self._max_pending = max(1, int(max_pending))
        self._interval = progress_interval
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Job] = collections.deque()
        self._active: dict[tuple[str, str], _Job] = {}
        self._running: _Job | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the event loop's side ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="stembridge-worker", daemon=True)
            self._thread.start()

    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission:
        """Queue a job, or return the first job's state when ``(client, request_id)`` was seen before for the
        same job (the same kind and options: the same :attr:`JobSpec.fingerprint`).

        A repeat of a job that has not finished also moves its remaining replies to ``reply``, so a client
        that restarted gets the result.

        Raises:
            InvalidArgument: the request_id was used before for a different job (the journal keeps ids for
                30 days).
            Busy: the queue is full or the daemon is shutting down.
        """
        with self._cond:
            job = self._active.get((client, request_id))
            if job is not None:
                _check_same_job(request_id, job.spec.fingerprint, spec)
                job.reply = reply
                return Submission(False, self._snapshot(job))
            record = self._journal.get(client, request_id)
            if record is not None:
                _check_same_job(request_id, record.fingerprint, spec)
                return Submission(False, JobStatus.from_record(record))
            if self._stopping:
                raise Busy("the daemon is shutting down; send the request again when it is back")
            if len(self._waiting) >= self._max_pending:
                raise Busy(
                    f"the queue is full ({len(self._waiting)} jobs waiting); try again when a job has "
                    f"finished, or cancel one"
                )
            self._journal.add(client, request_id, spec.kind, spec.options, reply.host, reply.port)
            job = _Job(client, request_id, spec, reply)
            self._waiting.append(job)
            self._active[job.key] = job
            status = self._snapshot(job)
            self._cond.notify()
        return Submission(True, status)

    def status(self, client: str, request_id: str) -> JobStatus:
        """The state of ``client``'s job ``request_id``: live while it runs or waits, else the journal's."""
        with self._cond:
            job = self._active.get((client, request_id))
            if job is not None:
                return self._snapshot(job)
        record = self._journal.get(client, request_id)
        return JobStatus(request_id, "unknown") if record is None else JobStatus.from_record(record)

    def cancel(self, client: str, request_id: str, reason: str = CANCEL_MESSAGE) -> JobStatus:
        """Cancel a job: a queued one ends at once, a running one at its next chunk.

        Returns:
            The job's state right after the request: ``cancelled`` for a queued job, ``running`` for one that
            will stop at its next chunk, or the final state of a job that had already ended.
        """
        with self._cond:
            job = self._active.get((client, request_id))
            if job is None:
                pass
            elif job.state == "queued":
                self._waiting.remove(job)
                del self._active[job.key]
                job.state = "cancelled"
                self._record(job, "cancelled", error=(Cancelled.code, reason))
            else:
                job.cancel_reason = reason
                return self._snapshot(job)
        if job is None:
            return self.status(client, request_id)
        self._emit(JobEvent("error", request_id, job.reply, code=Cancelled.code, message=reason))
        return JobStatus(request_id, "cancelled", job.fraction, code=Cancelled.code, message=reason)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Refuse new jobs, cancel the waiting and the running ones, wait up to ``timeout`` s for the worker.

        Returns:
            True when the worker has stopped; False when the running job did not reach its next chunk in time
            (the worker is a daemon thread, so the process can still exit; the journal then reports the job
            ``interrupted`` on the next start).
        """
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for job in waiting:
                del self._active[job.key]
                job.state = "cancelled"
            if self._running is not None:
                self._running.cancel_reason = SHUTDOWN_MESSAGE
            self._cond.notify_all()
        for job in waiting:
            self._record(job, "cancelled", error=(Cancelled.code, SHUTDOWN_MESSAGE))
            self._emit(
                JobEvent("error", job.request_id, job.reply, code=Cancelled.code, message=SHUTDOWN_MESSAGE)
            )
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def overview(self, client: str) -> QueueOverview:
        """What the queue is doing, as ``client`` may see it: other machines' request ids are not shown."""
        with self._cond:
            running = self._running
            mine = running is not None and running.client == client
            return QueueOverview(
                running=running is not None,
                waiting=len(self._waiting),
                job=running.request_id if mine and running is not None else "",
                fraction=running.fraction if running is not None else 0.0,
                stage=running.stage if running is not None else "",
                yours_waiting=sum(1 for job in self._waiting if job.client == client),
            )

    @property
    def pending(self) -> int:
        """How many jobs wait behind the running one."""
        with self._cond:
            return len(self._waiting)

    def _snapshot(self, job: _Job) -> JobStatus:
        position = 0
        if job.state == "queued":
            position = self._waiting.index(job) + (1 if self._running is not None else 0)
        return JobStatus(job.request_id, job.state, job.fraction, job.stage, position)

    # --- the worker's side --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return
                job = self._waiting.popleft()
                job.state = "running"
                self._running = job
            self._run(job)

    def _run(self, job: _Job) -> None:
        self._record(job, "running")
        job.stage = "started"
        self._emit(JobEvent("progress", job.request_id, job.reply, 0.0, "started"))
        callback, flush = self._progress_callback(job)
        try:
            outcome: Outcome = self._runner(job.spec, callback, self._publish_hook(job))
        except Cancelled as exc:
            self._finish(job, "cancelled", code=exc.code, message=exc.message)
        except StembridgeError as exc:
            self._finish(job, "failed", code=exc.code, message=exc.message)
        except Exception as exc:  # a bug in an engine must not take the daemon down: report it, log it
            log.exception("job %s failed with an internal error", job.request_id)
            self._finish(
                job,
                "failed",
                code=StembridgeError.code,
                message=f"internal error: {type(exc).__name__}: {exc}; see the daemon log",
            )
        else:
            flush()
            self._finish(job, "done", paths=tuple(outcome.paths), detail=outcome.detail)

    def _publish_hook(self, job: _Job) -> PublishHook:
        def hook(plan: list[dict[str, Any]]) -> None:
            if job.cancel_reason is not None:
                raise Cancelled(job.cancel_reason)
            # unlike _record, a journal that fails here fails the job: its files must not appear unrecorded
            self._journal.update(job.client, job.request_id, "running", plan=plan)

        return hook

    def _progress_callback(self, job: _Job) -> tuple[ProgressCallback, Callable[[], None]]:
        last_sent = -float("inf")
        held: tuple[float, str] | None = None

        def callback(fraction: float, stage: str) -> None:
            nonlocal last_sent, held
            fraction = min(1.0, max(job.fraction, float(fraction)))  # never goes down
            if job.cancel_reason is not None and fraction < 1.0:
                raise Cancelled(job.cancel_reason)
            job.fraction, job.stage = fraction, stage
            now = self._clock()
            if fraction >= 1.0 or now - last_sent >= self._interval:
                last_sent, held = now, None
                self._emit(JobEvent("progress", job.request_id, job.reply, fraction, stage))
            else:
                held = (fraction, stage)

        def flush() -> None:
            nonlocal held
            if held is not None:
                self._emit(JobEvent("progress", job.request_id, job.reply, held[0], held[1]))
                held = None

        return callback, flush

    def _finish(
        self,
        job: _Job,
        state: str,
        *,
        paths: tuple[str, ...] = (),
        detail: dict[str, object] | None = None,
        code: str = "",
        message: str = "",
    ) -> None:
        if state == "done":
            self._record(job, state, outputs=paths, detail=detail)
        else:
            self._record(job, state, error=(code, message))
        with self._cond:
            job.state = state
            self._active.pop(job.key, None)
            self._running = None
        if state == "done":
            made_by = _made_by(detail)
            if made_by:
                self._emit(JobEvent("made", job.request_id, job.reply, 1.0, made_by=made_by))
            self._emit(JobEvent("done", job.request_id, job.reply, 1.0, paths=paths))
        else:
            self._emit(JobEvent("error", job.request_id, job.reply, job.fraction, code=code, message=message))

    def _record(
        self,
        job: _Job,
        state: str,
        *,
        outputs: tuple[str, ...] | None = None,
        detail: dict[str, object] | None = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        """Write a state change to the journal; a journal that fails is logged, never fatal to the job."""
        fraction = 1.0 if state == "done" else job.fraction
        try:
            self._journal.update(
                job.client,
                job.request_id,
                state,
                fraction=fraction,
                outputs=outputs,
                detail=detail,
                error=error,
            )
        except StembridgeError as exc:
            log.error("job %s: %s", job.request_id, exc)

    def _emit(self, event: JobEvent) -> None:
        try:
            self._listener(event)
        except Exception:  # the listener is the server's; a failure there must not stop the worker
            log.exception("could not deliver %s event of job %s", event.kind, event.request_id)


def _made_by(detail: dict[str, object] | None) -> tuple[str, ...]:
    """``(engine, model, *warnings)`` from a job's result detail; empty when the runner did not say."""
    if not detail or not detail.get("engine"):
        return ()
    warnings = detail.get("warnings") or []
    notes = [str(w) for w in warnings] if isinstance(warnings, list) else []
    return (str(detail["engine"]), str(detail.get("model", "")), *notes)
