"""The sound card's side of a live jam: what the duplex stream's callback does, and nothing more.

A :class:`Duplex` is the callback of a duplex stream in sounddevice's contract
(``callback(indata, outdata, frames, time, status)``, ``indata`` ``[frames, in_channels]`` and ``outdata``
``[frames, out_channels]`` float32). It only copies: the band's input channels into a capture ring, and the
count-in click, the part playing or silence into ``outdata``. Every buffer is allocated before the stream
starts; the callback takes no lock, calls no engine, writes no file and allocates no audio buffer (only the
small view objects numpy slicing makes). Its one decision is at the bar line where a cycle starts: the part
handed over for that cycle if it is there at that moment, else the part before it again (``repeat``) or
silence (``rest``). A part handed over later is never played.

Positions are stream frames counted from the first callback (input and output advance together):
the count-in is output frames ``[0, C)`` and cycle ``k`` of the performance is ``[C + k*L, C + (k+1)*L)``.

Hand-over with the session thread goes through single stores of ints (atomic under the GIL, so neither side
waits): the session fills a free slot of :attr:`parts`, then sets ``slot_cycle[slot] = cycle``; the callback
notes what it chose for each cycle in :attr:`played`, and counts the frames it has done in :attr:`frames`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.audio.timing import Grid

HISTORY = 64  # cycles of "what played" kept for the session thread to check
CLICK_SECONDS = 0.03


def click_track(grid: Grid, bars: int, channels: int) -> np.ndarray:
    """``[C, channels]`` float32: ``bars`` bars of a click on every beat, higher on each bar's first beat.

    A beat is the time signature's (a quarter in x/4, an eighth in x/8); ``C = grid.samples_for_bars(bars)``.
    """
    length = grid.samples_for_bars(bars)
    track = np.zeros((length, channels), dtype=np.float32)
    beats = grid.time_signature.numerator
    n = int(CLICK_SECONDS * grid.sample_rate)
    t = np.arange(n) / grid.sample_rate
    envelope = np.exp(-t / (CLICK_SECONDS / 5.0))
    for bar in range(bars):
        for beat in range(beats):
            at = grid.position(bars=bar + beat / beats)
            tone = 0.5 * envelope * np.sin(2 * np.pi * (1760.0 if beat == 0 else 880.0) * t)
            end = min(length, at + n)
            track[at:end] += tone[: end - at, None].astype(np.float32)
    return track


class Duplex:
    """Preallocated buffers and the stream callback of a live jam.

    Args:
        cycle: samples per cycle (L).
        count_in: ``[C, out_channels]`` float32 played before cycle 0 (``C`` may be 0).
        channels: the input channels (0-based) that are the band, in the order they are recorded.
        out_channels: channels of the output (the part is stereo; one channel gets its mix).
        slots: parts the buffers hold at once (the one playing, the ones waiting for their line).
        capture_frames: length of the capture ring (how far the session thread may fall behind).
        cycles: stop after this many cycles of the performance (silence and :attr:`finished` after).
        repeat: a cycle with no part repeats the one before (True) or rests (False).
    """

    def __init__(
        self,
        *,
        cycle: int,
        count_in: np.ndarray,
        channels: Sequence[int],
        out_channels: int,
        slots: int,
        capture_frames: int,
        cycles: int | None,
        repeat: bool,
    ) -> None:
        self.cycle = int(cycle)
        self.click = np.ascontiguousarray(count_in, dtype=np.float32)
        self.start = len(self.click)
        self.channels = tuple(int(c) for c in channels)
        self.parts = np.zeros((slots, self.cycle, out_channels), dtype=np.float32)
        self.slot_cycle = np.full(slots, -1, dtype=np.int64)  # the cycle each slot's part is for
        self.ring = np.zeros((capture_frames, len(self.channels)), dtype=np.float32)
        self.played = np.full(
            HISTORY, -2, dtype=np.int64
        )  # played[k % HISTORY]: slot played in cycle k, -1 rest
        self.played_cycle = np.full(HISTORY, -1, dtype=np.int64)
        self.end = None if cycles is None else self.start + int(cycles) * self.cycle
        self.repeat = bool(repeat)
        self.frames = 0  # frames done (in and out), written last in each callback
        self.block = 0  # the largest block seen
        self.playing = -1  # the slot playing now (-1: silence)
        self.cycle_now = -1  # the cycle playing now
        self.xruns = 0  # callbacks the host flagged (under- or overflow)
        self.finished = False  # the output passed the last cycle

    def __call__(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status:
            self.xruns += 1
        if frames > self.block:
            self.block = frames
        position = self.frames
        self._capture(indata, position, frames)
        done = 0
        while done < frames:
            done += self._play(outdata, done, position + done, frames - done)
        self.frames = position + frames
        if self.end is not None and self.frames >= self.end:
            self.finished = True

    def _capture(self, indata: np.ndarray, position: int, frames: int) -> None:
        size = len(self.ring)
        at = position % size
        first = min(frames, size - at)
        for j, channel in enumerate(self.channels):
            self.ring[at : at + first, j] = indata[:first, channel]
            if first < frames:
                self.ring[: frames - first, j] = indata[first:frames, channel]

    def _play(self, outdata: np.ndarray, done: int, position: int, wanted: int) -> int:
        """Fill ``outdata[done:]`` from stream frame ``position`` up to the next boundary; returns frames filled."""
        if self.end is not None and position >= self.end:
            outdata[done : done + wanted] = 0.0
            return wanted
        if position < self.start:
            n = min(wanted, self.start - position)
            outdata[done : done + n] = self.click[position : position + n]
            return n
        k, offset = divmod(position - self.start, self.cycle)
        if k != self.cycle_now:
            self._line(k)
        n = min(wanted, self.cycle - offset)
        if self.playing < 0:
            outdata[done : done + n] = 0.0
        else:
            outdata[done : done + n] = self.parts[self.playing, offset : offset + n]
        return n

    def _line(self, k: int) -> None:
        """Cycle ``k`` starts: play its part if it is there now, else repeat or rest."""
        slot = -1
        for s in range(len(self.slot_cycle)):
            if self.slot_cycle[s] == k:
                slot = s
        if slot < 0 and self.repeat:
            slot = self.playing
        self.playing = slot
        self.cycle_now = k
        self.played[k % HISTORY] = slot
        self.played_cycle[k % HISTORY] = k

    # ------------------------------------------------------------------ the session thread's side

    def line(self, k: int) -> int:
        """The output frame where cycle ``k`` starts."""
        return self.start + k * self.cycle

    def free_slot(self) -> int:
        """A slot neither playing nor waiting for its line (its cycle not yet started)."""
        now = self.cycle_now  # read before playing: the callback writes playing first
        playing = self.playing
        for s in range(len(self.slot_cycle)):
            if s != playing and self.slot_cycle[s] <= now:
                return s
        raise RuntimeError("no free part slot: more parts wait for their line than the jam allows")

    def hand_over(self, cycle: int, part: np.ndarray) -> int:
        """Put ``part`` ``[2, L]`` in a free slot for cycle ``cycle``; returns the slot."""
        slot = self.free_slot()
        target = self.parts[slot]
        if target.shape[1] == part.shape[0]:
            target[:] = part.T
        else:
            target[:, 0] = part.mean(axis=0)
        self.slot_cycle[slot] = cycle
        return slot

    def was_played(self, cycle: int, slot: int) -> bool | None:
        """Whether cycle ``cycle`` played ``slot``'s part; None while its line is still ahead."""
        if self.cycle_now < cycle:
            return None
        h = cycle % HISTORY
        if self.played_cycle[h] != cycle:
            return False  # so long ago its record is gone: it cannot have waited that long
        return bool(self.played[h] == slot)

    def captured(self, begin: int, end: int) -> np.ndarray | None:
        """Input frames ``[begin, end)`` as ``[channels, end - begin]`` (a copy), once the callback has them;
        None while it has not.

        Raises:
            OverflowError: they were overwritten (the session thread fell behind by more than the ring).
        """
        if self.frames < end:
            return None
        size = len(self.ring)
        out = np.empty((end - begin, len(self.channels)), dtype=np.float32)
        at, n = begin % size, end - begin
        first = min(n, size - at)
        out[:first] = self.ring[at : at + first]
        out[first:] = self.ring[: n - first]
        if self.frames + self.block - begin > size:
            raise OverflowError(f"{self.frames + self.block - begin - size} captured frames were overwritten")
        return np.ascontiguousarray(out.T)
