"""What the AI hears: the humans' cycles it remembers and its own parts, laid out as one engine context.

Engines take a context whose bar 1 is at sample 0 and read what lies under the part from its first bars (the
built-in engine analyses key, chords and groove there; MusicGen takes its chroma there). MusicGen continues
audio, and treats the context as a loop: the prompt before bar 1 is the context's last bars. So the context is
two cycles long, laid out as a loop (:meth:`Hearing.context`) from these:

1. **What the humans will play under the part**, predicted from what they just played: their cycles laid over
   each other on the bar grid, the newest weighted most (each earlier cycle :data:`MEMORY_DECAY` times less),
   and an earlier cycle the less the more its harmony differs from the newest's (the cosine of their
   pitch-class profiles, from :data:`SAME_HARMONY` down to :data:`OTHER_HARMONY`): while the humans repeat
   themselves the AI hears their last cycles together and stays steady; when they change key or chords it
   hears the newest alone and follows at once. Samples of the newest cycle not heard yet (the last ``lead``)
   come from the earlier ones.
2. **The moment just before the part**: the humans' newest cycle with the AI's own part that plays right
   before it, so an engine that continues audio continues its own previous cycle under the humans. Its
   last bar comes first: engines render one bar before the part (see :mod:`.seams`), over that bar.

Cycles at another tempo than the part's are left out: a cycle that changed tempo is heard from there on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from bridge.audio.analysis import chroma
from bridge.audio.io import conform_channels

MEMORY_DECAY = 0.35  # weight of a cycle relative to the one after it
SAME_HARMONY = 0.9  # pitch-class profiles this alike (cosine) or more: an earlier cycle keeps its full weight
OTHER_HARMONY = 0.6  # this alike or less: the humans changed, the earlier cycle gets no weight
CHANNELS = 2
_PROFILE_FFT = 4096
_PROFILE_HOP = _PROFILE_FFT  # a coarse look is enough to tell one harmony from another, and cheap


@dataclass(frozen=True)
class Cycle:
    """One cycle of the humans: ``audio`` ``[2, L]`` (zeros past what was heard), ``heard`` samples of it, and
    its pitch-class ``profile`` ``[12]`` (unit length; zeros when it holds no pitch)."""

    audio: np.ndarray
    heard: int
    profile: np.ndarray

    @property
    def length(self) -> int:
        return int(self.audio.shape[1])


class Hearing:
    """The humans' recent cycles (the newest plus ``memory`` earlier ones)."""

    def __init__(self, memory: int, sample_rate: int) -> None:
        self._memory = int(memory)
        self._rate = int(sample_rate)
        self._cycles: OrderedDict[int, Cycle] = OrderedDict()

    def add(self, index: int, humans: np.ndarray, length: int) -> Cycle:
        """Remember the humans' audio ``[C, n]`` (n <= ``length``) of cycle ``index``, ``length`` samples long."""
        audio = np.zeros((CHANNELS, length), dtype=np.float32)
        heard = min(int(humans.shape[1]), length)
        audio[:, :heard] = conform_channels(np.asarray(humans, dtype=np.float32), CHANNELS)[:, :heard]
        cycle = Cycle(audio, heard, self._profile(audio[:, :heard]))
        self._cycles[index] = cycle
        while len(self._cycles) > self._memory + 1:
            self._cycles.popitem(last=False)
        return cycle

    def _profile(self, audio: np.ndarray) -> np.ndarray:
        if audio.shape[1] < _PROFILE_FFT:
            return np.zeros(12)
        profile = (
            chroma(audio, self._rate, n_fft=_PROFILE_FFT, hop=_PROFILE_HOP).sum(axis=1).astype(np.float64)
        )
        norm = float(np.linalg.norm(profile))
        return profile / norm if norm > 0 else profile

    def weights(self) -> list[float]:
        """The weight of each remembered cycle, oldest first (the newest's is 1)."""
        cycles = list(self._cycles.values())
        if not cycles:
            return []
        newest = cycles[-1].profile
        out = []
        for age, cycle in enumerate(reversed(cycles)):
            if age == 0:
                out.append(1.0)
                continue
            if newest.any() and cycle.profile.any():
                alike = float(np.dot(newest, cycle.profile))
                harmony = float(np.clip((alike - OTHER_HARMONY) / (SAME_HARMONY - OTHER_HARMONY), 0.0, 1.0))
            else:  # no pitch on one side (drums, silence): nothing to tell apart
                harmony = 1.0
            out.append(MEMORY_DECAY**age * harmony)
        return out[::-1]

    def newest(self) -> Cycle | None:
        return next(reversed(self._cycles.values()), None)

    def prediction(self, length: int) -> np.ndarray:
        """``[2, length]``: the remembered cycles of that length laid over each other, newest weighted most."""
        total = np.zeros((CHANNELS, length), dtype=np.float64)
        weight = np.zeros(length, dtype=np.float64)
        for w, cycle in zip(self.weights(), self._cycles.values(), strict=True):
            if cycle.length == length and w > 0:
                total[:, : cycle.heard] += w * cycle.audio[:, : cycle.heard]
                weight[: cycle.heard] += w
        out = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
        return out.astype(np.float32)

    def context(self, length: int, bar: int, own: np.ndarray | None) -> np.ndarray:
        """The engine's context for a part ``length`` samples long, with bars ``bar`` samples long.

        Laid out as a loop that ends where the part's pre-roll bar begins: ``[last bar of the newest cycle |
        prediction (length) | the newest cycle up to its last bar]``, the newest cycle with ``own`` (the AI's
        part playing just before, ``[2, m]``, None when it rests) over it, their ends aligned. Bar 1 (the
        pre-roll) and bars 2.. (the part) lie over the humans' last bar and the prediction; a continuing
        engine's prompt is the newest cycle up to the pre-roll.

        Raises:
            ValueError: no cycle heard yet.
        """
        newest = self.newest()
        if newest is None:
            raise ValueError("the humans have not played a cycle yet")
        under = self.prediction(length)
        heard = newest.audio.copy()
        if newest.heard < newest.length and newest.length == length:
            heard[:, newest.heard :] = under[:, newest.heard :]
        if own is not None:
            n = min(heard.shape[1], own.shape[1])
            heard[:, heard.shape[1] - n :] += own[:, own.shape[1] - n :]
        cut = max(0, heard.shape[1] - bar)
        return np.concatenate([heard[:, cut:], under, heard[:, :cut]], axis=1)
