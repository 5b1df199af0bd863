"""The performance take: which part played in each cycle, and the whole AI performance from bar 1.

A cycle plays the part made for it; a cycle with none (its part was late, or never asked for) plays the
part before it again (``on_late="repeat"``) or silence (``"rest"``). Cycles before the AI's first part are
silence. The performance lays every cycle end to end, each as long as the clock says (its tempo), up to the
last cycle a part was answered for.
"""

from __future__ import annotations

import numpy as np

from bridge.jam.clock import CycleClock


class Take:
    """The parts that played, by cycle."""

    def __init__(self, on_late: str) -> None:
        self._repeat = on_late == "repeat"
        self._parts: dict[int, np.ndarray] = {}
        self.last = -1  # the last cycle any answer was for (late ones included)

    def reach(self, play_index: int) -> None:
        """Note that cycle ``play_index`` was answered (on time or not)."""
        self.last = max(self.last, play_index)

    def record(self, play_index: int, part: np.ndarray) -> None:
        self._parts[play_index] = part
        self.reach(play_index)

    def played(self, index: int) -> np.ndarray | None:
        """The part heard in cycle ``index`` (None: the AI rested)."""
        part = self._parts.get(index)
        if part is not None or not self._repeat:
            return part
        earlier = [i for i in self._parts if i < index]
        return self._parts[max(earlier)] if earlier else None

    def render(self, clock: CycleClock, channels: int = 2) -> np.ndarray:
        """``[channels, T]``: cycles ``0 .. last`` (at least cycle 0) end to end, silence where the AI did not
        play."""
        pieces = []
        for index in range(max(self.last, 0) + 1):
            length = clock.samples(index)
            cycle = np.zeros((channels, length), dtype=np.float32)
            part = self.played(index)
            if part is not None:
                n = min(length, part.shape[1])
                cycle[:, :n] = part[:, :n]
            pieces.append(cycle)
        return np.concatenate(pieces, axis=1)
