"""Notes and parts in samples on a tempo grid, and their positions in MIDI ticks.

A :class:`Part` is what one ``.mid`` file holds: notes whose ``start`` and ``length`` are samples at the
grid's sample rate (bar 1 at sample 0), the grid (tempo, time signature), the part's exact length in samples
and whether it is a drum part (GM numbers on channel 10).

Ticks: :data:`PPQ` = 960 per quarter note. A sample ``s`` is tick ``round(s * PPQ / samples_per_quarter)``,
so every note start lands within half a tick of its sample position whatever the tempo. 960 rather than 480
because every position the built-in engine makes is then a whole tick or within half a tick of its sample:
16th steps are 240 ticks and a swing third of a step 80 (both exact, since 960 is divisible by 4 and 12), and
humanize offsets (whole samples, up to 4 ms) are read to half a tick, which is at most 1 ms at 32 bpm and
above (0.26 ms at 120 bpm; 480 would give 1 ms only from 63 bpm up). Bar lines are exact: a bar of ``n/d``
is ``n * 4 * PPQ / d`` ticks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from bridge.audio.timing import Grid
from bridge.errors import InvalidArgument

PPQ = 960
DRUM_CHANNEL = 9  # channel 10 as DAWs number them
# General MIDI programs (0-based) for the stems we write on melodic channels.
PROGRAMS = {
    "bass": 33,  # Electric Bass (finger)
    "lead": 81,  # Lead 2 (sawtooth)
    "vocals": 52,  # Choir Aahs
    "keys": 4,  # Electric Piano 1
    "piano": 0,  # Acoustic Grand Piano
    "pad": 89,  # Pad 2 (warm)
    "guitar": 27,  # Electric Guitar (clean)
    "other": 0,
}


@dataclass(frozen=True)
class Note:
    """One note: ``start`` and ``length`` in samples, MIDI ``pitch`` (drums: GM number), ``velocity`` 0..1."""

    start: int
    length: int
    pitch: int
    velocity: float


@dataclass(frozen=True)
class TickNote:
    """A note as a MIDI file holds it: ``start`` and ``length`` in ticks, ``velocity`` 1..127."""

    start: int
    length: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Part:
    """The notes of one part on ``grid``, ``length`` samples long (the end of the track).

    Attributes:
        notes: in any order; starts from 0, pitches 0..127.
        grid: tempo, time signature and the sample rate ``notes`` are counted in.
        length: samples; the end-of-track sits here.
        drums: GM drum numbers on channel 10 rather than pitches.
        name: the track name (the stem).
    """

    notes: tuple[Note, ...]
    grid: Grid
    length: int
    drums: bool = False
    name: str = ""
    program: int = field(default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", tuple(sorted(self.notes, key=lambda n: (n.start, n.pitch))))
        if self.length < 0:
            raise InvalidArgument(f"a part's length must be 0 or more samples, got {self.length}")
        for n in self.notes:
            if not 0 <= n.pitch <= 127 or n.start < 0 or n.length < 0:
                raise InvalidArgument(f"a note must have pitch 0..127, start and length >= 0, got {n}")

    @classmethod
    def of(cls, stem: str, notes: Iterable[Note], grid: Grid, length: int) -> Part:
        """A part of ``stem``: drums on channel 10, others with the stem's GM program."""
        return cls(tuple(notes), grid, int(length), stem == "drums", stem, PROGRAMS.get(stem, 0))


def samples_per_tick(grid: Grid) -> float:
    return grid.samples_per_quarter / PPQ


def to_tick(samples: float, grid: Grid) -> int:
    """The tick nearest sample position ``samples``."""
    return int(round(samples / samples_per_tick(grid)))


def to_sample(tick: int, grid: Grid) -> int:
    """The sample position of ``tick``."""
    return int(round(tick * samples_per_tick(grid)))


def ticks_per_bar(grid: Grid) -> int:
    """Ticks in one bar: quarters per bar x PPQ, always whole (``n * 3840 / d`` for ``n/d``)."""
    return int(grid.time_signature.quarters_per_bar * PPQ)


def end_tick(part: Part) -> int:
    """The end of the part in ticks; a whole number of bars lands exactly on its bar line wherever a tick
    spans more than one sample (from 8 kHz at up to 400 bpm)."""
    return to_tick(part.length, part.grid)


def velocity_127(velocity: float) -> int:
    """0..1 -> 1..127 (a note-on of velocity 0 would be a note-off)."""
    return max(1, min(127, int(round(float(velocity) * 127.0))))


def tick_notes(part: Part) -> list[TickNote]:
    """The notes in ticks, as the file holds them, ordered by start and pitch.

    A note ends no later than the end of the part, nor than the next note of the same pitch starts (MIDI cannot
    say which of two overlapping notes of one pitch a note-off ends); two notes of one pitch at one tick become
    one, the louder. Every note lasts at least one tick.
    """
    end = end_tick(part)
    out: list[TickNote] = []
    by_pitch: dict[int, list[TickNote]] = {}
    for n in part.notes:
        start = to_tick(n.start, part.grid)
        if start >= end:
            continue
        stop = min(end, max(start + 1, to_tick(n.start + n.length, part.grid)))
        note = TickNote(start, stop - start, n.pitch, velocity_127(n.velocity))
        same = by_pitch.setdefault(n.pitch, [])
        if same and same[-1].start == start:
            if note.velocity > same[-1].velocity or (
                note.velocity == same[-1].velocity and note.length > same[-1].length
            ):
                same[-1] = note
            continue
        same.append(note)
    for same in by_pitch.values():
        for i in range(len(same) - 1):
            a, b = same[i], same[i + 1]
            if a.start + a.length > b.start:
                same[i] = replace(a, length=b.start - a.start)
        out.extend(same)
    return sorted(out, key=lambda n: (n.start, n.pitch))


def from_ticks(notes: Sequence[TickNote], grid: Grid) -> list[Note]:
    """Tick notes back to samples on ``grid``; velocities to 0..1."""
    return [
        Note(
            to_sample(n.start, grid),
            to_sample(n.start + n.length, grid) - to_sample(n.start, grid),
            n.pitch,
            n.velocity / 127.0,
        )
        for n in notes
    ]
