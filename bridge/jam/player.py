"""A file played as the humans' input: cycle after cycle into a session, in real time or as fast as possible.

Cycle ``k`` of the file is sent as it would be live: its first ``L - lead`` samples, at the moment ``lead``
before its last bar line. Its part must be ready by an absolute deadline: that moment plus ``lead`` and
``lag`` cycles (:meth:`~bridge.jam.clock.CycleClock.budget`), so a cycle that waits behind a slow previous
answer has less time, and an engine slower than a cycle falls further behind each cycle, as it would live.
With ``realtime`` the player waits for each moment on the clock and gives the session what is left until the
deadline; without it the cycles follow each other at once, on a virtual clock (a cycle is sent at its moment
or when the previous answer is ready, whichever is later, and the answer's real time moves the clock on), so
the figures are the live ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.analysis import is_silent
from bridge.errors import InvalidArgument
from bridge.jam.session import JamPart, JamSession


@dataclass
class JamRun:
    """What a jam produced (a file played, or live): each cycle's part (late ones included) and the performance."""

    parts: list[JamPart] = field(default_factory=list)
    performance: Path | None = None
    recording: Path | None = None  # the band's recording from bar 1 (live on the sound card only)

    @property
    def outputs(self) -> list[Path]:
        """Each written part, then the performance, then the band's recording."""
        written = [p.path for p in self.parts if p.path is not None]
        return written + [p for p in (self.performance, self.recording) if p is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cycles": [
                {
                    "index": p.index,
                    "play_index": p.play_index,
                    "ready_ms_before_line": round(p.margin_ms, 3),
                    "late": p.late,
                }
                for p in self.parts
            ],
            "outputs": [str(p) for p in self.outputs],
        }


def play(
    session: JamSession,
    humans: np.ndarray,
    *,
    realtime: bool = False,
    on_part: Callable[[JamPart], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JamRun:
    """Send ``humans`` ``[C, T]`` (bar 1 at sample 0, the session's rate) to ``session`` cycle by cycle, then
    stop it. A last cycle shorter than its capture is sent as it is.

    Args:
        realtime: wait for each cycle's moment (``lead`` before its end) as if it were played live.
        on_part: told each part as it comes (for printing progress).

    Raises:
        InvalidArgument: ``humans`` is silent throughout (nothing to jam with; nothing is written).
    """
    if is_silent(humans):
        raise InvalidArgument(
            "the humans' audio is silent throughout; give a recording of the band to jam with"
        )
    run = JamRun()
    clock = session.clock
    rate = session.options.sample_rate
    start = time.perf_counter()
    ready = 0.0  # fast: when the previous part was ready, on the performance's clock (seconds from bar 1)
    position, index = 0, 0
    try:
        while position < humans.shape[1]:
            captured = clock.captured(index)
            sent = (position + captured) / rate  # the moment the cycle's capture ends, lead before its end
            deadline = sent + clock.budget(index)  # its part's bar line
            if realtime:
                wait = sent - (time.perf_counter() - start)
                if wait > 0:
                    sleep(wait)
                now = max(sent, time.perf_counter() - start)
            else:  # the cycle waits for the previous answer, as it would live
                now = max(sent, ready)
            began = time.perf_counter()
            part = _answer(session, index, humans[:, position : position + captured], deadline - now)
            ready = now + (time.perf_counter() - began)
            run.parts.append(part)
            if on_part is not None:
                on_part(part)
            position += clock.samples(index)
            index += 1
    finally:
        run.performance = session.stop()
    return run


def _answer(session: JamSession, index: int, humans: np.ndarray, left: float) -> JamPart:
    """The session's answer with ``left`` seconds to the part's line; a cycle sent already past its line gets
    no time and is reported as late as it is."""
    part = session.answer(index, humans, budget=max(0.0, left))
    if left < 0:
        part = replace(part, margin_ms=part.margin_ms + left * 1000.0)
    return part
