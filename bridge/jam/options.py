"""What a jam session is asked to do: one frozen, validated options object (see docs in :mod:`bridge.jam`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bridge.audio.io import check_sample_rate
from bridge.audio.timing import Grid, TimeSignature, check_bpm
from bridge.errors import InvalidArgument

BARS_RANGE = (1, 16)
LAG_RANGE = (0, 2)
MEMORY_RANGE = (0, 8)
ON_LATE = ("repeat", "rest")


def _whole(value: object, name: str, low: int, high: int, fix: str) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"{name} must be a whole number between {low} and {high}, got {value!r}"
        ) from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InvalidArgument(f"{name} must be a whole number between {low} and {high}, got {value!r}; {fix}")
    return int(number)


@dataclass(frozen=True)
class JamOptions:
    """A jam session's settings, checked on creation.

    Attributes:
        stem: the part the AI plays (``bass``, ``drums``, ``keys``...; the engine says which it knows).
        bars: bars per cycle, 1..16.
        bpm: tempo in quarter notes per minute, 20..400 (a cycle may change it: :meth:`JamSession.answer`).
        time_signature: e.g. ``TimeSignature(4, 4)``; ``"6/8"`` is accepted too.
        seed: same seed and input, same parts.
        prompt: words for the engine ("dark sparse bass").
        lag: 0: the answer to cycle k plays in cycle k+1; 1: in k+2; 2: in k+3.
        lead: quarter notes before a cycle's last bar line at which its audio is sent (and the part for the
            next cycle must be ready within); more than 0, less than the cycle.
        memory: how many earlier cycles of the humans the AI hears, 0..8.
        sample_rate: of the humans' audio and of the parts.
        on_late: what plays when a part is late: ``repeat`` (the previous part again) or ``rest`` (silence).

    Raises:
        InvalidArgument: naming the bad value and the range.
    """

    stem: str
    bars: int = 4
    bpm: float = 120.0
    time_signature: TimeSignature = field(default_factory=TimeSignature)
    seed: int = 0
    prompt: str = ""
    lag: int = 0
    lead: float = 1.0
    memory: int = 2
    sample_rate: int = 44100
    on_late: str = "repeat"

    def __post_init__(self) -> None:
        stem = str(self.stem).strip().lower()
        if not stem:
            raise InvalidArgument("stem must name the part the AI plays, e.g. bass, drums or keys")
        set_ = object.__setattr__
        set_(self, "stem", stem)
        set_(self, "bars", _whole(self.bars, "bars", *BARS_RANGE, "a cycle is 1 to 16 bars"))
        set_(self, "bpm", check_bpm(self.bpm))
        set_(self, "time_signature", TimeSignature.parse(self.time_signature))
        set_(self, "seed", _whole(self.seed, "seed", -(2**63), 2**63 - 1, "use a whole number"))
        set_(self, "prompt", str(self.prompt))
        set_(
            self, "lag", _whole(self.lag, "lag", *LAG_RANGE, "use 0 (answer in the next cycle) or 1 on a GPU")
        )
        set_(
            self,
            "memory",
            _whole(self.memory, "memory", *MEMORY_RANGE, "the AI hears up to 8 earlier cycles"),
        )
        set_(self, "sample_rate", check_sample_rate(self.sample_rate))
        if str(self.on_late) not in ON_LATE:
            raise InvalidArgument(f"on_late must be 'repeat' or 'rest', got {self.on_late!r}")
        try:
            lead = float(self.lead)
        except (TypeError, ValueError):
            raise InvalidArgument(f"lead must be a number of quarter notes, got {self.lead!r}") from None
        quarters = self.bars * float(self.time_signature.quarters_per_bar)
        if not math.isfinite(lead) or not 0.0 < lead < quarters:
            raise InvalidArgument(
                f"lead must be more than 0 and less than the cycle's {quarters:g} quarter notes, got "
                f"{lead:g}; 1 (one beat) is the usual"
            )
        set_(self, "lead", lead)

    def grid(self, bpm: float | None = None) -> Grid:
        """The bar grid at ``bpm`` (default: the session's starting tempo) and the session's rate."""
        return Grid(self.bpm if bpm is None else bpm, self.time_signature, self.sample_rate)
