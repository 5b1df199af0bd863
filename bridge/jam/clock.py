"""The cycle clock: which tempo each cycle is at, how long it is to the sample, and its deadline.

Cycle ``k`` is bars ``k * bars + 1 .. (k + 1) * bars`` of the performance. A tempo given with cycle ``k``
applies from that cycle on, so each cycle's length is ``Grid(bpm_k).samples_for_bars(bars)`` exactly and the
performance is the cycles laid end to end.
"""

from __future__ import annotations

import bisect

from bridge.audio.timing import check_bpm
from bridge.jam.options import JamOptions


class CycleClock:
    """Tempo per cycle, cycle lengths, the humans' capture length and the time a part has to be made."""

    def __init__(self, options: JamOptions) -> None:
        self._options = options
        self._starts: list[int] = [0]  # cycle indices where a tempo starts
        self._bpms: list[float] = [options.bpm]

    def set_bpm(self, index: int, bpm: float) -> None:
        """Play cycle ``index`` and every later one at ``bpm`` (until the next change).

        Raises:
            InvalidArgument: ``bpm`` outside 20..400.
        """
        value = check_bpm(bpm)
        if value == self.bpm(index):
            return
        at = bisect.bisect_right(self._starts, index)
        del self._starts[at:], self._bpms[at:]
        self._starts.append(index)
        self._bpms.append(value)

    def bpm(self, index: int) -> float:
        """The tempo of cycle ``index``."""
        return self._bpms[max(0, bisect.bisect_right(self._starts, index) - 1)]

    def samples(self, index: int) -> int:
        """The exact length of cycle ``index`` in samples (L)."""
        return self._options.grid(self.bpm(index)).samples_for_bars(self._options.bars)

    def seconds(self, index: int) -> float:
        return self.samples(index) / self._options.sample_rate

    def lead_samples(self, index: int) -> int:
        """Samples of cycle ``index`` not yet heard when its audio is sent (``lead`` quarter notes)."""
        return int(round(self._options.lead * self._options.grid(self.bpm(index)).samples_per_quarter))

    def captured(self, index: int) -> int:
        """Samples of cycle ``index`` a client sends by default: up to ``lead`` before its last bar line."""
        return self.samples(index) - self.lead_samples(index)

    def budget(self, index: int) -> float:
        """Seconds from the moment cycle ``index`` is sent to the bar line its answer plays from: ``lead``,
        plus a whole cycle per step of ``lag``."""
        lead = self.lead_samples(index) / self._options.sample_rate
        return lead + sum(self.seconds(index + 1 + j) for j in range(self._options.lag))
