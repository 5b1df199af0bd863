"""The performance take: which part played in each cycle, and the whole AI performance from bar 1.

A cycle plays the part made for it; a cycle with none (its part was late, or never asked for) plays the
part before it again (``on_late="repeat"``) or silence (``"rest"``). Cycles before the AI's first part are
silence. The performance lays every cycle end to end, each as long as the clock says (its tempo), up to the
last cycle a part was answered for.

Each part was joined to what plays before it when it was made (:func:`bridge.jam.seams.join`). Where the take
plays something else at a bar line (a part again, a rest after a part, or a part cut or padded because its
cycle's tempo changed after it was made), that join does not hold, so the take bends the cycle's head onto the
end of the cycle before it in the same way: a repeated part goes on from where it ended, and a rest eases from
the last sample to silence over :data:`~bridge.jam.seams.SEAM_MS`, never a step (clients repeating a part do the
same, see docs/PROTOCOL.md).
"""

from __future__ import annotations

import numpy as np

from bridge.jam import seams
from bridge.jam.clock import CycleClock


class Take:
    """The parts that played, by cycle.

    Args:
        on_late: ``repeat`` or ``rest``, for a cycle without a part of its own.
        sample_rate: the parts' rate (the joins' length in samples).
    """

    def __init__(self, on_late: str, sample_rate: int) -> None:
        self._repeat = on_late == "repeat"
        self._rate = sample_rate
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
        play, without a step at any bar line."""
        pieces: list[np.ndarray] = []
        whole = True  # the cycle before played its part whole: a part made after it was joined to its end
        for index in range(max(self.last, 0) + 1):
            length = clock.samples(index)
            cycle = np.zeros((channels, length), dtype=np.float32)
            part = self.played(index)
            n = 0 if part is None else min(length, part.shape[1])
            if part is not None:
                cycle[:, :n] = part[:, :n]
                if 0 < n < length:  # cut short by its cycle's slower tempo: ease into the silence after it
                    cycle[:, n:] = seams.join(cycle[:, n:], cycle[:, :n], self._rate)
            own = index in self._parts and n == length
            if pieces and not (own and whole):
                cycle = seams.join(cycle, pieces[-1], self._rate)
            whole = part is None or n == part.shape[1] == length
            pieces.append(cycle)
        return np.concatenate(pieces, axis=1)
