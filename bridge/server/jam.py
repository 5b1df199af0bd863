"""Jam requests on the event loop: validate, hand over, reply. Sessions compute on their own threads.

``jam/start`` checks its ``out`` folder off the loop (as a job's, :mod:`bridge.server.paths`), then starts a
:class:`~bridge.jam.worker.JamWorker`, which loads the engine, measures a cycle and answers ``started`` (and
``advice`` when it cannot keep up). ``jam/cycle`` is checked at once (the session, the index) and its file off
the loop with a timeout, then dropped into the session's mailbox; the part, or ``late``, comes from the worker.
``jam/stop`` asks the worker to stop; ``stopped`` comes when the take is written.

Sessions belong to the address that started them: another client gets ``unknown session``, as for a session
that never was. A start's request id names one session for good: a second start on it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.audio.timing import TimeSignature
from bridge.config import Settings
from bridge.errors import AudioReadError, Busy, InvalidArgument, StembridgeError
from bridge.jam.worker import SILENT_CYCLES, Cycle, JamEvent, JamWorker, Timing, open_session
from bridge.jobs.queue import ReplyTo
from bridge.server import jam_protocol as jp
from bridge.server import protocol
from bridge.server.offload import Offloader
from bridge.server.osc import Replier
from bridge.server.paths import allowed_roots, check_input, output_folder

if TYPE_CHECKING:
    from bridge.jam.session import JamSession

log = logging.getLogger(__name__)

MAX_SESSIONS = 8  # each holds a thread and its own engine
STOPPED_KEPT = 256  # stopped sessions remembered, to tell "stopped" from "unknown" and to repeat `stopped`
CHECK_TIMEOUT_S = 5.0  # a cycle's file must be found well within a cycle
CHECK_THREADS = 8

# Makes a session: (session id, JamStart options, engine, model, real out folder) -> JamSession.
SessionFactory = Callable[[str, dict[str, Any], str, "str | None", str], "JamSession"]


@dataclass
class _Live:
    owner: str  # the host that started it
    key: tuple[str, str]  # (host, start's request_id)
    timing: Timing
    worker: JamWorker | None = None  # None while its folder is being checked
    last_index: int = -1
    started: bool = False


class JamService:
    """The daemon's jam sessions.

    Args:
        settings: the token, render folder and allowed roots, the engines' settings.
        replier: sends replies.
        factory: makes sessions (tests pass one with a slow engine); :func:`bridge.jam.worker.open_session` by
            default.
        silent_cycles: a session stops by itself after this many cycles without a word from its client.
        max_sessions: sessions at once; one more is refused ``busy``.
    """

    def __init__(
        self,
        settings: Settings,
        replier: Replier,
        *,
        factory: SessionFactory | None = None,
        silent_cycles: int = SILENT_CYCLES,
        max_sessions: int = MAX_SESSIONS,
        check_timeout: float = CHECK_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._replier = replier
        self._factory = factory or partial(_open, settings)
        self._silent_cycles = silent_cycles
        self._max_sessions = max_sessions
        self._check_timeout = check_timeout
        self._offload = Offloader(CHECK_THREADS, "stembridge-jam-check")
        self._live: dict[str, _Live] = {}
        self._stopped: OrderedDict[str, tuple[str, str]] = OrderedDict()  # session -> (owner, take's path)
        self._used: OrderedDict[tuple[str, str], str] = OrderedDict()  # (host, start's request_id) -> session
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def handle(self, request: jp.JamRequest, to: ReplyTo, received: float, remote: bool) -> None:
        """Serve one parsed jam request (on the event loop; never waits).

        Raises:
            StembridgeError: the request is refused (the caller replies ``error``).
        """
        self._loop = asyncio.get_running_loop()
        if isinstance(request, jp.JamStart):
            self._start(request, to)
        elif isinstance(request, jp.JamCycle):
            self._cycle(request, to, received, remote)
        else:
            self._stop(request, to)

    # --- start ---------------------------------------------------------------------------------------------

    def _start(self, request: jp.JamStart, to: ReplyTo) -> None:
        if self._closing:
            raise Busy("the daemon is shutting down; start the session again when it is back")
        key = (to.host, request.request_id)
        if key in self._used:
            raise InvalidArgument(
                f"request_id {request.request_id!r} already started session {self._used[key]}; send each "
                f"jam/start with a new request_id"
            )
        if len(self._live) >= self._max_sessions:
            raise Busy(
                f"{len(self._live)} jam sessions are running, the most this daemon runs at once; stop one "
                f"(/stembridge/jam/stop) and start again"
            )
        session = secrets.token_hex(5)
        o = request.options
        timing = Timing(
            int(o.get("bars", 4)),
            float(o.get("bpm", 120.0)),
            o.get("time_signature") or TimeSignature(4, 4),
            int(o.get("sample_rate", 44100)),
            float(o.get("lead", 1.0)),
            int(o.get("lag", 0)),
        )
        self._used[key] = session
        while len(self._used) > STOPPED_KEPT + self._max_sessions:
            self._used.popitem(last=False)
        self._live[session] = _Live(to.host, key, timing)
        self._spawn(self._open(session, request, to))

    async def _open(self, session: str, request: jp.JamStart, to: ReplyTo) -> None:
        try:
            await self._open_worker(session, request, to)
        except Exception as exc:  # whatever failed, the session never started: free its slot, answer
            live = self._live.pop(session, None)
            if live is not None:  # its request id may be sent again
                self._used.pop(live.key, None)
            if isinstance(exc, asyncio.TimeoutError):
                exc = AudioReadError(
                    f"checking the out folder took longer than {self._check_timeout:g} s; is its disk asleep "
                    f"or unreachable? start again when it answers"
                )
            elif not isinstance(exc, StembridgeError):  # a bug must cost this start, not a slot for good
                log.exception("jam session %s could not start", session)
                exc = StembridgeError(
                    f"internal error starting the session: {type(exc).__name__}; see the daemon log"
                )
            self._replier.send(to, protocol.error(request.request_id, exc.code, exc.message))

    async def _open_worker(self, session: str, request: jp.JamStart, to: ReplyTo) -> None:
        out = await self._offload.run(self._check_timeout, output_folder, request.out, self._settings)
        if self._closing:
            raise Busy("the daemon is shutting down; start the session again when it is back")
        live = self._live[session]
        opener = partial(self._factory, session, dict(request.options), request.engine, request.model, out)
        worker = JamWorker(
            session,
            live.timing,
            opener,
            self._on_event,
            to,
            request.request_id,
            silent_cycles=self._silent_cycles,
        )
        log.info("jam session %s (%s) from %s starting in %s", session, request.options["stem"], to.host, out)
        worker.start()
        live.worker = worker

    # --- cycle ---------------------------------------------------------------------------------------------

    def _session(self, name: str, host: str, what: str) -> _Live:
        live = self._live.get(name)
        if live is not None and live.owner == host:
            return live
        stopped = self._stopped.get(name)
        if stopped is not None and stopped[0] == host:
            raise InvalidArgument(
                f"session {name} is stopped (its take is {stopped[1]}); {what} belongs to a running session: "
                f"start a new one with /stembridge/jam/start"
            )
        raise InvalidArgument(
            f"unknown session {name!r}; use the session that /stembridge/jam/started named, or start one"
        )

    def _cycle(self, request: jp.JamCycle, to: ReplyTo, received: float, remote: bool) -> None:
        live = self._session(request.session, to.host, "a cycle")
        worker = live.worker
        if worker is None:
            raise InvalidArgument(
                f"session {request.session} has not started yet; send cycles after /stembridge/jam/started"
            )
        worker.heard()
        if request.index <= live.last_index:
            raise InvalidArgument(
                f"index {request.index} does not follow the session's last cycle, {live.last_index}; number "
                f"the cycles 0, 1, 2... from the jam's start, never going back"
            )
        live.last_index = request.index
        self._spawn(self._offer(worker, request, to, received, remote))

    async def _offer(
        self, worker: JamWorker, request: jp.JamCycle, to: ReplyTo, received: float, remote: bool
    ) -> None:
        roots = allowed_roots if remote else None
        try:
            path = await self._offload.run(
                self._check_timeout, _check_file, request.path, roots, self._settings
            )
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError):
                exc = AudioReadError(
                    f"checking cycle {request.index}'s file took longer than {self._check_timeout:g} s; is its "
                    f"disk asleep or unreachable?"
                )
            elif not isinstance(exc, StembridgeError):  # a bug must cost this cycle, not the session
                log.exception(
                    "jam session %s: checking cycle %d's file failed", request.session, request.index
                )
                exc = StembridgeError(
                    f"internal error checking cycle {request.index}'s file: {type(exc).__name__}; see the daemon log"
                )
            self._replier.send(to, protocol.error(request.request_id, exc.code, exc.message))
            return
        cycle = Cycle(request.index, path, request.bpm, received, to, request.request_id)
        worker.offer(cycle)

    # --- stop ----------------------------------------------------------------------------------------------

    def _stop(self, request: jp.JamStop, to: ReplyTo) -> None:
        stopped = self._stopped.get(request.session)
        if stopped is not None and stopped[0] == to.host and request.session not in self._live:
            # a repeated stop (a UDP retry) gets the same answer
            self._replier.send(to, jp.stopped(request.session, stopped[1]))
            return
        live = self._session(request.session, to.host, "stop")
        if live.worker is None:
            raise InvalidArgument(
                f"session {request.session} has not started yet; stop it after /stembridge/jam/started"
            )
        live.worker.stop(to, request.request_id)

    # --- events and shutdown -------------------------------------------------------------------------------

    def _on_event(self, event: JamEvent) -> None:
        """From a worker thread (or the loop): deliver on the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop has closed: nobody to tell
            log.debug("dropped a jam %s event of session %s after shutdown", event.kind, event.session)

    def _deliver(self, event: JamEvent) -> None:
        to = event.reply
        if event.kind == "started" and event.session in self._live:
            self._live[event.session].started = True
        if event.kind in ("stopped", "failed"):
            live = self._live.pop(event.session, None)
            if live is not None and not live.started:  # it never started: its request id may be sent again
                self._used.pop(live.key, None)
            if event.kind == "stopped" and live is not None:
                self._stopped[event.session] = (live.owner, event.path)
                while len(self._stopped) > STOPPED_KEPT:
                    self._stopped.popitem(last=False)
                log.info("jam session %s stopped; its take is %s", event.session, event.path)
        reply: protocol.Reply
        if event.kind == "started":
            reply = jp.started(event.request_id, event.session, event.seconds)
        elif event.kind == "advice":
            reply = jp.advice(event.session, event.text)
        elif event.kind == "part":
            reply = jp.part(event.session, event.play_index, event.path, event.seconds)
        elif event.kind == "late":
            reply = jp.late(event.session, event.play_index, event.ms_late)
        elif event.kind == "stopped":
            reply = jp.stopped(event.session, event.path)
        else:
            reply = protocol.error(event.request_id, event.code, event.message)
        self._replier.send(to, reply)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float) -> None:
        """Stop every session (each writes its take and answers ``stopped``), waiting at most ``timeout``."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        workers = [live.worker for live in self._live.values() if live.worker is not None]
        if not workers:
            return
        log.info("stopping %d jam session(s)", len(workers))
        deadline = time.monotonic() + timeout

        def close_all() -> list[str]:
            for worker in workers:
                worker.stop()
            return [w.session_id for w in workers if not w.close(max(0.0, deadline - time.monotonic()))]

        stuck = await asyncio.to_thread(close_all)
        for name in stuck:
            log.warning("jam session %s did not stop within %g s", name, timeout)


def _check_file(item: Any, roots: Callable[[Settings], list[Path]] | None, settings: Settings) -> str:
    return check_input(item, roots(settings) if roots is not None else None)


def _open(
    settings: Settings, session: str, options: dict[str, Any], engine: str, model: str | None, out: str
) -> JamSession:
    return open_session(session, options, engine, model, out, settings)
