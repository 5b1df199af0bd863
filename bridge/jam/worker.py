"""One jam session on a thread of its own, with a one-slot mailbox: how the daemon runs a :class:`JamSession`.

The event loop hands cycles in (:meth:`JamWorker.offer`) and never waits: a newer cycle replaces one still
waiting in the slot, and the one replaced is answered ``late`` (it could only be later still). The worker thread
reads the humans' file, gives the session what is left of the cycle's budget (the time the cycle waited and its
file took to read are already spent), and reports what it made as :class:`JamEvent` objects; the caller turns
them into replies. No sockets here: a reply target is an opaque value handed back in each event.

The session stops (and writes its take) when asked (:meth:`JamWorker.stop`), when the daemon shuts down
(:meth:`JamWorker.close`, which also cancels the cycle being computed at its next chunk), and by itself when its
client has been silent for ``silent_cycles`` cycles. Jam workers never share the job queue's thread, so a cycle
never waits behind a batch job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.audio.analysis import is_silent
from bridge.audio.io import read_audio
from bridge.audio.timing import Grid, TimeSignature
from bridge.config import Settings
from bridge.errors import AudioReadError, Cancelled, InvalidArgument, StembridgeError

if TYPE_CHECKING:
    from bridge.jam.session import JamSession

log = logging.getLogger(__name__)

SILENT_CYCLES = 4  # a client silent for this many cycles has gone: the session stops by itself


@dataclass(frozen=True)
class Cycle:
    """One cycle of the humans, as the daemon received it.

    Attributes:
        index: the humans' cycle this audio belongs to (counts up from 0 at the jam's start).
        path: the audio file, checked to exist (its content is read on the worker thread).
        bpm: a new tempo from this cycle on, None to keep the current one.
        received: when the request arrived (the worker's clock), from which the budget is counted.
        reply: where this cycle's answer goes (opaque here).
        request_id: the request's id, for an error reply.
    """

    index: int
    path: str
    bpm: float | None
    received: float
    reply: Any
    request_id: str


@dataclass(frozen=True)
class JamEvent:
    """What a session did, for the caller to reply.

    ``kind`` is ``started`` (``seconds``: the estimate per cycle), ``advice`` (``text``), ``part`` (``play_index``,
    ``path``, ``seconds``: the session's own compute time), ``late`` (``play_index``, ``ms_late``), ``error``
    (``request_id``, ``code``, ``message``), ``stopped`` (``path``: the whole performance) or ``failed`` (the
    session could not start: ``request_id``, ``code``, ``message``). ``stopped`` and ``failed`` are the last event.
    """

    kind: str
    session: str
    reply: Any
    request_id: str = ""
    play_index: int = 0
    path: str = ""
    seconds: float = 0.0
    ms_late: float = 0.0
    text: str = ""
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Timing:
    """The session's cycle grid, for the daemon's deadlines: what :class:`JamOptions` says about time."""

    bars: int
    bpm: float
    time_signature: TimeSignature
    sample_rate: int
    lead: float  # quarter notes
    lag: int

    def cycle_samples(self, bpm: float | None = None) -> int:
        grid = Grid(bpm or self.bpm, self.time_signature, self.sample_rate)
        return grid.samples_for_bars(self.bars)

    def cycle_seconds(self, bpm: float | None = None) -> float:
        return self.cycle_samples(bpm) / self.sample_rate

    def budget(self, bpm: float | None = None) -> float:
        """Seconds from the cycle's capture (``lead`` before its last bar line) to its part's bar line."""
        tempo = bpm or self.bpm
        return self.lead * 60.0 / tempo + self.lag * self.cycle_seconds(tempo)

    def play_index(self, index: int) -> int:
        return index + 1 + self.lag


def read_cycle(path: str, index: int, sample_rate: int, samples: int) -> np.ndarray:
    """The humans' audio of one cycle, ``[C, n]`` at ``sample_rate`` with ``n <= samples``.

    Raises:
        AudioReadError: missing, unreadable or corrupt, or silent.
        InvalidArgument: longer than the cycle.
    """
    audio, _ = read_audio(path, sample_rate=sample_rate)
    if audio.shape[1] > samples:
        raise InvalidArgument(
            f"cycle {index}'s file {path} holds {audio.shape[1]} samples at {sample_rate} Hz, more than the "
            f"cycle's {samples}; send the cycle's audio from its first bar line, at most one cycle long"
        )
    if is_silent(audio):  # no playing: an unarmed or unrouted input
        raise AudioReadError(
            f"cycle {index}'s file {path} is silent (peak under -80 dBFS); is the track's input "
            f"armed and receiving the band? send the cycle's recording"
        )
    return audio


class JamWorker:
    """Runs one session on its own thread.

    Args:
        session_id: the session's id, in every event.
        timing: the session's grid and deadlines.
        open_session: makes the session (loads the engine, prepares the folder); called on the worker thread.
        on_event: called with each :class:`JamEvent`, from the worker thread or from :meth:`offer`'s caller.
        reply: where the start's replies go; later the latest cycle's or stop's.
        request_id: the start request's id.
        silent_cycles: stop by itself after this many cycles without a word from the client.
        clock: monotonic seconds (the same clock as :attr:`Cycle.received`).
    """

    def __init__(
        self,
        session_id: str,
        timing: Timing,
        open_session: Callable[[], JamSession],
        on_event: Callable[[JamEvent], None],
        reply: Any,
        request_id: str,
        *,
        silent_cycles: int = SILENT_CYCLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.timing = timing
        self._open = open_session
        self._emit = on_event
        self._reply = reply
        self._request_id = request_id
        self._silent_cycles = silent_cycles
        self._clock = clock
        self._bpm = timing.bpm
        self._cond = threading.Condition()
        self._waiting: Cycle | None = None
        self._taken = -1  # the index of the last cycle the worker took
        self._stop_reply: Any = None
        self._stop_request_id = ""
        self._stopping = False
        self._cancel = threading.Event()  # set by close(): the cycle being computed stops at its next chunk
        self._heard = clock()
        self._thread = threading.Thread(target=self._main, name=f"stembridge-jam-{session_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def heard(self) -> None:
        """The client spoke (a cycle, even a refused one): it is not silent."""
        with self._cond:
            self._heard = self._clock()

    def offer(self, cycle: Cycle) -> None:
        """Put ``cycle`` in the mailbox without waiting; the one it replaces (or ``cycle`` itself when a newer one
        waits or was already taken: its file was checked last) is answered ``late``. After :meth:`stop`, the cycle
        is answered with an error."""
        dropped: Cycle | None
        with self._cond:
            self._heard = self._clock()
            if self._stopping:
                dropped, stopped = cycle, True
            else:
                stopped = False
                waiting = self._waiting
                if cycle.index <= self._taken or (waiting is not None and waiting.index > cycle.index):
                    dropped = cycle  # its file was checked after a newer cycle's: the newer one goes first
                else:
                    self._waiting = cycle
                    dropped = waiting
                    self._cond.notify_all()
        if dropped is None:
            return
        if stopped:
            self._emit(self._stopped_error(dropped))
        else:
            self._emit(self._late(dropped))

    def stop(self, reply: Any = None, request_id: str = "") -> None:
        """Stop after the cycle being computed; the take is written and ``stopped`` goes to ``reply`` (the
        latest reply target when None). A cycle still waiting is answered ``late``."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._stop_reply, self._stop_request_id = reply, request_id
            dropped, self._waiting = self._waiting, None
            self._cond.notify_all()
        if dropped is not None:
            self._emit(self._late(dropped))

    def close(self, timeout: float | None = None) -> bool:
        """Stop now (the cycle being computed is cancelled at its next chunk), write the take, and wait for the
        thread; False when it did not end within ``timeout``."""
        self._cancel.set()
        self.stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the worker thread ---------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            session = self._open()
            estimate = float(session.estimate())
            advice = session.advice(estimate)
        except StembridgeError as exc:
            self._emit(self._event("failed", request_id=self._request_id, code=exc.code, message=exc.message))
            return
        except Exception as exc:  # a bug must cost this session, not the daemon
            log.exception("jam session %s could not start", self.session_id)
            message = f"internal error: {type(exc).__name__}; see the daemon log"
            self._emit(
                self._event("failed", request_id=self._request_id, code=StembridgeError.code, message=message)
            )
            return
        self.heard()  # loading a model can take longer than 4 cycles: silence counts from `started`
        self._emit(self._event("started", request_id=self._request_id, seconds=estimate))
        if advice:
            self._emit(self._event("advice", text=advice))
        try:
            self._serve(session)
        finally:
            self._finish(session)

    def _serve(self, session: JamSession) -> None:
        while True:
            with self._cond:
                cycle = self._next()
            if cycle is None:
                return
            self._reply = cycle.reply
            try:
                event = self._answer(session, cycle)
            except Cancelled:
                event = self._stopped_error(cycle)
            except StembridgeError as exc:
                event = self._event(
                    "error", cycle.reply, request_id=cycle.request_id, code=exc.code, message=exc.message
                )
            except Exception as exc:  # a bug must cost this cycle, not the session
                log.exception("jam session %s failed on cycle %d", self.session_id, cycle.index)
                message = f"internal error on cycle {cycle.index}: {type(exc).__name__}; see the daemon log"
                event = self._event(
                    "error",
                    cycle.reply,
                    request_id=cycle.request_id,
                    code=StembridgeError.code,
                    message=message,
                )
            self._emit(event)

    def _next(self) -> Cycle | None:
        """The waiting cycle, or None when the session stops (asked to, or its client went silent)."""
        while True:
            if self._stopping:
                return None
            cycle, self._waiting = self._waiting, None
            if cycle is not None:
                self._taken = cycle.index
                return cycle
            left = self._heard + self._silent_cycles * self.timing.cycle_seconds(self._bpm) - self._clock()
            if left <= 0:
                log.info(
                    "jam session %s: no word from its client for %d cycles; stopping",
                    self.session_id,
                    self._silent_cycles,
                )
                self._stopping = True
                return None
            self._cond.wait(left)

    def _answer(self, session: JamSession, cycle: Cycle) -> JamEvent:
        bpm = cycle.bpm or self._bpm
        samples = self.timing.cycle_samples(bpm)
        humans = read_cycle(cycle.path, cycle.index, self.timing.sample_rate, samples)
        budget = self.timing.budget(bpm) - (self._clock() - cycle.received)
        part = session.answer(cycle.index, humans, bpm=cycle.bpm, budget=budget, cancel=self._cancel.is_set)
        self._bpm = bpm
        if part.late or part.path is None:
            return self._event(
                "late", cycle.reply, play_index=part.play_index, ms_late=max(0.0, -part.margin_ms)
            )
        return self._event(
            "part", cycle.reply, play_index=part.play_index, path=str(part.path), seconds=part.seconds_spent
        )

    def _finish(self, session: JamSession) -> None:
        reply = self._stop_reply if self._stop_reply is not None else self._reply
        rid = self._stop_request_id
        try:
            path = session.stop()
        except StembridgeError as exc:
            self._emit(self._event("failed", reply, request_id=rid, code=exc.code, message=exc.message))
            return
        except Exception as exc:  # the take is lost, the daemon is not
            log.exception("jam session %s could not write its take", self.session_id)
            message = f"internal error writing the take: {type(exc).__name__}; see the daemon log"
            self._emit(
                self._event("failed", reply, request_id=rid, code=StembridgeError.code, message=message)
            )
            return
        self._emit(self._event("stopped", reply, path=str(path)))

    # --- events --------------------------------------------------------------------------------------------

    def _event(self, kind: str, reply: Any = None, **fields: Any) -> JamEvent:
        return JamEvent(kind, self.session_id, self._reply if reply is None else reply, **fields)

    def _late(self, cycle: Cycle) -> JamEvent:
        """``late`` for a cycle that will not be computed: how far past its deadline it is now (0 if not yet)."""
        over = self._clock() - cycle.received - self.timing.budget(cycle.bpm or self._bpm)
        play_index = self.timing.play_index(cycle.index)
        return self._event("late", cycle.reply, play_index=play_index, ms_late=max(0.0, over * 1000.0))

    def _stopped_error(self, cycle: Cycle) -> JamEvent:
        return self._event(
            "error",
            cycle.reply,
            request_id=cycle.request_id,
            code=Cancelled.code,
            message=f"cycle {cycle.index} was not answered: session {self.session_id} is stopping; start a new "
            f"session with /stembridge/jam/start",
        )


def open_session(
    session_id: str,
    options: dict[str, Any],
    engine: str,
    model: str | None,
    out_dir: str,
    settings: Settings,
) -> JamSession:
    """Make a daemon's session: its output folder checked again and made level by level (as a job's,
    :func:`bridge.jobs.outdir.prepare`), its own engine loaded, and the session in ``out_dir/jam-<session_id>/``.

    The engine is the jam's own instance, never one of the job worker's warm engines: those are used by the job
    thread without locks, and sharing one would make a cycle wait for a batch job. Blocking: call it on the
    worker thread.
    """
    from bridge.engines.base import load_engine
    from bridge.jam.options import JamOptions
    from bridge.jam.session import JamSession
    from bridge.jobs import outdir

    jam_options = JamOptions(**options)
    # made level by level through no link, inside the roots; unlike a job's, the session's files are then written
    # by path under it (its own jam-<id>/ folder), not through the held folder
    held, made = outdir.prepare(Path(out_dir), outdir.job_roots(settings))
    with held:
        folder = held.path
    try:
        loaded = load_engine(
            engine, "generate", model=model, models_dir=settings.models_dir, **settings.engine_options()
        )
        return JamSession(jam_options, loaded, folder, session_id)
    except BaseException:
        outdir.remove_empty(made)
        raise
