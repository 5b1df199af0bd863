"""A file played as the humans' input: cycle after cycle into a session, in real time or as fast as possible.

Cycle ``k`` of the file is sent as it would be live: its first ``L - lead`` samples, at the moment ``lead``
before its last bar line. With ``realtime`` the player waits for that moment on the clock; without it the
cycles follow each other at once, and each part is still held to the deadline it would have had live (the
session measures its own time against ``lead`` plus ``lag`` cycles), so the figures are the live ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    start = time.perf_counter()
    position, index = 0, 0
    try:
        while position < humans.shape[1]:
            captured = clock.captured(index)
            if realtime:
                due = (position + captured) / session.options.sample_rate
                wait = due - (time.perf_counter() - start)
                if wait > 0:
                    sleep(wait)
            part = session.answer(index, humans[:, position : position + captured])
            run.parts.append(part)
            if on_part is not None:
                on_part(part)
            position += clock.samples(index)
            index += 1
    finally:
        run.performance = session.stop()
    return run
