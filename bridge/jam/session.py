"""A jam session: the humans' cycles in, the AI's parts out, each before its bar line or not at all.

Arrays in, arrays and files out; no sockets, no threads (the daemon gives each session its own worker, the
``stembridge jam`` command calls it in a loop). See :mod:`bridge.jam` for the loop.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.audio.io import check_audio, resample
from bridge.audio.timing import check_bpm
from bridge.audio.writer import Publisher, write_audio_unique
from bridge.engines.base import Engine, GenerateSpec
from bridge.errors import Cancelled, InvalidArgument
from bridge.jam import seams
from bridge.jam.clock import CycleClock
from bridge.jam.hearing import Hearing
from bridge.jam.options import JamOptions
from bridge.jam.take import Take

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A part must fit this share of its budget for advice() to call the engine fast enough (times vary).
HEADROOM = 0.8


@dataclass
class JamPart:
    """What one answer produced.

    Attributes:
        index: the humans' cycle it answers.
        play_index: the cycle it plays in (``index + 1 + lag``).
        audio: ``[2, L]`` float32, None when late (skipped).
        seconds_spent: from the call to the part being ready, its file published (or given up).
        margin_ms: the budget left when it was ready; zero or negative: how late it was.
        late: it missed its bar line (none left is late too) and was not written, or its file was removed
            again when publishing it took it past the line.
        path: the part's file (None when late).
    """

    index: int
    play_index: int
    audio: np.ndarray | None
    seconds_spent: float
    margin_ms: float
    late: bool
    path: Path | None


class _Deadline:
    """The progress callback of one answer: stops the engine once the part can no longer be on time."""

    def __init__(self, start: float, budget: float, cancel: Callable[[], bool] | None) -> None:
        self.start, self.budget, self._cancel = start, budget, cancel

    def __call__(self, fraction: float, stage: str) -> None:
        if self._cancel is not None and self._cancel():
            raise Cancelled("a newer cycle replaced this one")
        if time.perf_counter() - self.start > self.budget:
            raise Cancelled("past the bar line")


class JamSession:
    """One jam: answers each of the humans' cycles with the AI's part for a later cycle.

    Its methods may be called from different threads; they run one at a time.

    Args:
        options: the session's settings.
        engine: a loaded engine that can generate ``options.stem``.
        out_dir: where the session's folder ``jam-<name>/`` goes.
        name: the session id (letters, digits, ``.``, ``_``, ``-``).

    Raises:
        InvalidArgument: a bad name; UnsupportedOperation: the engine cannot generate the stem.
    """

    def __init__(self, options: JamOptions, engine: Engine, out_dir: Path, name: str) -> None:
        if not _NAME.match(str(name)):
            raise InvalidArgument(f"session name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        engine.require_stems("generate", [options.stem])
        self.options = options
        self.engine = engine
        self.name = str(name)
        self.folder = Path(out_dir) / f"jam-{self.name}"
        self.clock = CycleClock(options)
        self._hearing = Hearing(options.memory, options.sample_rate)
        self._take = Take(options.on_late, options.sample_rate)
        self._last_index: int | None = None
        self._performance: Path | None = None
        self._lock = threading.Lock()  # one answer, estimate or stop at a time, whatever thread calls

    # ------------------------------------------------------------------------------------------ the loop

    def answer(
        self,
        index: int,
        humans: np.ndarray,
        *,
        bpm: float | None = None,
        budget: float | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> JamPart:
        """Answer the humans' cycle ``index`` with the part for cycle ``index + 1 + lag``.

        Args:
            index: the cycle the humans played; each call's must be larger than the last's.
            humans: ``[C, n]`` at the session's rate from the cycle's first bar line, ``n`` <= the cycle.
            bpm: the tempo from this cycle on (20..400; default: unchanged).
            budget: seconds until the part's bar line (default: ``lead``, plus a cycle per step of lag).
            cancel: asked between chunks of work; True gives the part up (reported late).

        Returns:
            The part, written as ``jam-<name>/part-<play_index>.wav``, or reported late and not written.

        Raises:
            InvalidArgument: the session is stopped, the index does not grow, the audio is malformed or
                longer than the cycle, or ``bpm`` is out of range (the session is unchanged).
        """
        start = time.perf_counter()
        with self._lock:
            return self._answer(start, index, humans, bpm, budget, cancel)

    def _answer(
        self,
        start: float,
        index: int,
        humans: np.ndarray,
        bpm: float | None,
        budget: float | None,
        cancel: Callable[[], bool] | None,
    ) -> JamPart:
        if self._performance is not None:
            raise InvalidArgument(f"jam session {self.name} is stopped; start a new one")
        index = self._check_index(index)
        if budget is not None and not (
            isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0
        ):
            raise InvalidArgument(f"budget must be a number of seconds >= 0, got {budget!r}")
        humans = check_audio(humans, f"the humans' audio of cycle {index}", error=InvalidArgument)
        tempo = self.clock.bpm(index) if bpm is None else check_bpm(bpm)
        length = self.options.grid(tempo).samples_for_bars(self.options.bars)
        if humans.shape[1] > length:
            raise InvalidArgument(
                f"the humans' audio of cycle {index} is {humans.shape[1]} samples, longer than the cycle's "
                f"{length} ({self.options.bars} bars at {tempo:g} bpm); send at most {length}"
            )
        self.clock.set_bpm(index, tempo)
        self._last_index = index
        play = index + 1 + self.options.lag
        self._take.reach(play)
        self._hearing.add(index, humans, length)
        limit = self.clock.budget(index) if budget is None else float(budget)
        deadline = _Deadline(start, limit, cancel)
        try:
            part = self._make(play, humans, deadline)
        except Cancelled:
            return self._late(index, play, start, limit)
        with Publisher() as pub:
            pub.add(self.folder / f"part-{play}.wav", part, self.options.sample_rate, bit_depth=32)
            if time.perf_counter() - start >= limit:
                return self._late(index, play, start, limit)
            path = pub.publish(retry=True)[0]
        spent = time.perf_counter() - start  # publishing is part of making it: it counts against the line
        if spent >= limit:
            _withdraw(path)
            return self._late(index, play, start, limit)
        self._take.record(play, part)
        return JamPart(index, play, part, spent, (limit - spent) * 1000.0, False, path)

    def stop(self) -> Path:
        """Write the whole performance from bar 1 (``jam-<name>/performance.wav``); returns its path.

        Calling it again returns the same path. A part being made meanwhile (on another thread) is finished
        first and is in the performance.
        """
        with self._lock:
            if self._performance is None:
                audio = self._take.render(self.clock)
                self._performance = write_audio_unique(
                    self.folder / "performance.wav", audio, self.options.sample_rate, bit_depth=32, position=0
                )
            return self._performance

    @property
    def stopped(self) -> bool:
        return self._performance is not None

    # ------------------------------------------------------------------------------------- the engine

    def estimate(self) -> float:
        """Seconds the engine takes for one cycle, measured on a synthetic one (this also warms it up)."""
        with self._lock:
            return self._estimate()

    def _estimate(self) -> float:
        hearing = Hearing(0, self.options.sample_rate)
        bpm = self.clock.bpm(self._last_index or 0)
        grid = self.options.grid(bpm)
        length = grid.samples_for_bars(self.options.bars)
        captured = length - int(round(self.options.lead * grid.samples_per_quarter))
        humans = _synthetic_cycle(captured, self.options.sample_rate, bpm)
        hearing.add(0, humans, length)
        start = time.perf_counter()
        self._part(hearing, humans, bpm, None)
        return time.perf_counter() - start

    def advice(self, seconds: float) -> str | None:
        """Plain words when an engine taking ``seconds`` per cycle cannot keep up with these options, else
        None; e.g. "musicgen-small on this CPU needs about 40 s per 8 s cycle: use lag 1 on a GPU, or the
        builtin engine"."""
        index = self._last_index or 0
        cycle = self.clock.seconds(index)
        lead = self.clock.lead_samples(index) / self.options.sample_rate

        def fits(lag: int) -> bool:
            return float(seconds) <= HEADROOM * (lead + lag * cycle)

        if fits(self.options.lag):
            return None
        fixes = []
        lag = next((n for n in range(self.options.lag + 1, 3) if fits(n)), None)
        device = str(self.engine.device or "")
        if lag is not None:
            fixes.append(f"use lag {lag}")
        elif self.engine.uses_torch and device in ("", "cpu"):
            fixes.append("use lag 1 on a GPU")
        else:
            fixes.append("use lag 1, fewer bars or a faster machine")
        if self.engine.name != "builtin":
            fixes.append("or the builtin engine")
        where = "this CPU" if device == "cpu" else "this GPU" if device else "this machine"
        return (
            f"{self.engine.model_name} on {where} needs about {_seconds(seconds)} s per {_seconds(cycle)} s "
            f"cycle: {', '.join(fixes)}"
        )

    # ---------------------------------------------------------------------------------------- helpers

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InvalidArgument(f"cycle index must be a whole number >= 0, got {index!r}")
        last = self._last_index
        if last is not None and index <= last:
            raise InvalidArgument(
                f"cycle index {index} does not follow cycle {last}; indices must grow: send cycle {last + 1} "
                f"or later"
            )
        return int(index)

    def _make(self, play: int, humans: np.ndarray, progress: _Deadline) -> np.ndarray:
        """The part ``[2, L]`` for cycle ``play``: hear, render, level, join to what plays before it."""
        rate = self.options.sample_rate
        before = self._take.played(play - 1)
        part = self._part(self._hearing, humans, self.clock.bpm(play), before, progress)
        return seams.join(part, before, rate)

    def _part(
        self,
        hearing: Hearing,
        humans: np.ndarray,
        bpm: float,
        before: np.ndarray | None,
        progress: _Deadline | None = None,
    ) -> np.ndarray:
        """The engine's part over what ``hearing`` holds at ``bpm``, levelled under ``humans``; not joined."""
        o = self.options
        rate = o.sample_rate
        grid = o.grid(bpm)
        length, bar = grid.samples_for_bars(o.bars), grid.samples_for_bars(1)
        context = hearing.context(length, bar, before)
        work_rate = self.engine.sample_rate or rate
        spec = GenerateSpec(o.stem, bpm, o.bars + 1, o.time_signature, o.prompt, o.seed)
        work = resample(context, rate, work_rate) if work_rate != rate else context
        take = self.engine.generate(work, work_rate, spec, progress)[0]
        render = resample(take, work_rate, rate) if work_rate != rate else take
        return seams.finish_part(render, bar, length, rate, seams.target_lufs(humans, rate, o.stem))

    def _late(self, index: int, play: int, start: float, limit: float) -> JamPart:
        spent = time.perf_counter() - start
        return JamPart(index, play, None, spent, (limit - spent) * 1000.0, True, None)


def _withdraw(path: Path) -> None:
    """Remove a part published past its line (only the file the writer published): it will not be played."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove the late part %s: %s", path, exc.strerror or exc)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _synthetic_cycle(n: int, sample_rate: int, bpm: float) -> np.ndarray:
    """``[2, n]``: an A minor chord struck on every beat, for timing the engine."""
    t = np.arange(n) / sample_rate
    beat = 60.0 / bpm
    env = np.exp(-3.0 * (t % beat)) * np.minimum(1.0, (t % beat) * 200.0)
    tone = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 261.63, 329.63)) * 0.1 * env
    return np.stack([tone, tone]).astype(np.float32)
