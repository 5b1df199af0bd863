"""Bar math in one place: tempo, time signature and sample rate -> exact sample positions.

Tempo is in quarter notes per minute, as Ableton Live, Reaper and Logic show it, whatever the time signature's
denominator: a bar of 6/8 at 120 bpm lasts 3 quarter notes = 1.5 s. Positions are computed from bar 1 each time
and rounded once, so a grid never drifts however many bars it spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bridge.errors import InvalidArgument

BPM_RANGE = (20.0, 400.0)
BARS_RANGE = (1, 256)
_DENOMINATORS = (1, 2, 4, 8, 16)
MAX_QUARTERS_PER_BAR = 16


def check_bpm(bpm: float) -> float:
    """Return ``bpm`` as a float or raise :class:`InvalidArgument` naming the value and the range."""
    try:
        value = float(bpm)
    except (TypeError, ValueError):
        raise InvalidArgument(f"bpm must be a number between 20 and 400, got {bpm!r}") from None
    if not np.isfinite(value) or not BPM_RANGE[0] <= value <= BPM_RANGE[1]:
        raise InvalidArgument(f"bpm must be between 20 and 400, got {bpm:g}")
    return value


def check_bars(bars: float) -> int:
    """Return ``bars`` as an int or raise :class:`InvalidArgument`; whole-number floats are accepted."""
    try:
        value = float(bars)
    except (TypeError, ValueError):
        raise InvalidArgument(f"bars must be a whole number between 1 and 256, got {bars!r}") from None
    if not np.isfinite(value) or value != int(value) or not BARS_RANGE[0] <= value <= BARS_RANGE[1]:
        raise InvalidArgument(f"bars must be a whole number between 1 and 256, got {bars:g}")
    return int(value)


@dataclass(frozen=True)
class TimeSignature:
    """A time signature such as 4/4, 3/4, 6/8 or 7/8."""

    numerator: int = 4
    denominator: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.numerator <= 32:
            raise InvalidArgument(
                f"time signature numerator must be between 1 and 32, got {self.numerator} "
                f"(write it like 4/4 or 6/8)"
            )
        if self.denominator not in _DENOMINATORS:
            raise InvalidArgument(
                f"time signature denominator must be one of 1, 2, 4, 8, 16, got {self.denominator} "
                f"(write it like 4/4 or 6/8)"
            )
        if self.quarters_per_bar > MAX_QUARTERS_PER_BAR:
            raise InvalidArgument(
                f"a bar of {self.numerator}/{self.denominator} lasts {float(self.quarters_per_bar):g} quarter notes; "
                f"bars of up to {MAX_QUARTERS_PER_BAR} quarter notes are supported (e.g. 16/4 or 32/8)"
            )

    @classmethod
    def parse(cls, text: str | TimeSignature) -> TimeSignature:
        """Parse ``"6/8"`` (also ``"6:8"``); an existing :class:`TimeSignature` is returned as is."""
        if isinstance(text, TimeSignature):
            return text
        parts = str(text).replace(":", "/").split("/")
        try:
            if len(parts) != 2:
                raise ValueError
            num, den = int(parts[0]), int(parts[1])
        except ValueError:
            raise InvalidArgument(f"time signature must look like 4/4 or 6/8, got {text!r}") from None
        return cls(num, den)

    @property
    def quarters_per_bar(self) -> Fraction:
        """Length of one bar in quarter notes (4/4 -> 4, 6/8 -> 3, 7/8 -> 7/2)."""
        return Fraction(self.numerator * 4, self.denominator)

    @property
    def sixteenths_per_bar(self) -> int:
        """Number of 16th-note steps in a bar (4/4 -> 16, 6/8 -> 12, 3/4 -> 12)."""
        return self.numerator * 16 // self.denominator

    @property
    def steps_per_beat(self) -> int:
        """16th-note steps in one beat of the signature (a quarter in x/4, an eighth in x/8)."""
        return max(1, 16 // self.denominator)

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Grid:
    """A bar/beat grid at one sample rate; bar 1 starts at sample 0.

    Example:
        >>> g = Grid(bpm=120, time_signature=TimeSignature(4, 4), sample_rate=44100)
        >>> g.samples_for_bars(8)
        705600
    """

    bpm: float
    time_signature: TimeSignature = TimeSignature()
    sample_rate: int = 44100

    def __post_init__(self) -> None:
        object.__setattr__(self, "bpm", check_bpm(self.bpm))
        if int(self.sample_rate) != self.sample_rate or not 1000 <= self.sample_rate <= 768000:
            raise InvalidArgument(f"sample rate must be between 1000 and 768000 Hz, got {self.sample_rate}")

    @property
    def seconds_per_quarter(self) -> float:
        return 60.0 / self.bpm

    @property
    def samples_per_quarter(self) -> float:
        return self.sample_rate * 60.0 / self.bpm

    @property
    def samples_per_step(self) -> float:
        """Samples in one 16th note (not rounded)."""
        return self.samples_per_quarter / 4.0

    @property
    def samples_per_bar(self) -> float:
        """Samples in one bar (not rounded)."""
        return self.samples_per_quarter * float(self.time_signature.quarters_per_bar)

    def samples_for_bars(self, bars: float) -> int:
        """Exact sample count of ``bars`` bars: bars x quarters-per-bar x 60/bpm x sample rate, rounded once."""
        return self.position(bars=bars)

    def position(self, bars: float = 0, steps: float = 0) -> int:
        """Sample index of a point ``bars`` whole bars plus ``steps`` 16th notes after bar 1, rounded once."""
        quarters = float(bars) * float(self.time_signature.quarters_per_bar) + float(steps) / 4.0
        return int(round(quarters * self.samples_per_quarter))

    def step_positions(self, bars: int) -> np.ndarray:
        """Sample index of every 16th-note step in ``bars`` bars, shape ``[bars * sixteenths_per_bar]``."""
        n = int(bars) * self.time_signature.sixteenths_per_bar
        return np.round(np.arange(n) * self.samples_per_step).astype(np.int64)

    def bar_positions(self, bars: int) -> np.ndarray:
        """Sample index of the start of each bar, shape ``[bars]``."""
        return np.array([self.position(bars=b) for b in range(int(bars))], dtype=np.int64)

    def bars_in(self, n_samples: int) -> float:
        """How many bars ``n_samples`` samples span (fractional)."""
        return n_samples / self.samples_per_bar

    def with_sample_rate(self, sample_rate: int) -> Grid:
        return Grid(self.bpm, self.time_signature, int(sample_rate))


def bpm_from_length(n_samples: int, sample_rate: int, bars: int, time_signature: TimeSignature) -> float:
    """The tempo at which ``bars`` bars last exactly ``n_samples`` samples (for loops cut to whole bars)."""
    quarters = bars * float(time_signature.quarters_per_bar)
    seconds = n_samples / sample_rate
    if seconds <= 0:
        raise InvalidArgument("cannot derive a tempo from empty audio")
    return check_bpm(quarters * 60.0 / seconds)
