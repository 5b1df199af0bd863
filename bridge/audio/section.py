"""A section of an input file: the part of a longer recording that a DAW item actually plays.

A trimmed item in Reaper or a clip in Live plays ``length`` seconds of its file from ``start`` seconds in. Jobs
take such a section so that a variation of a four-bar item is four bars long and its bar 1 is where the item
starts, not where the file does. Sample positions are rounded once from the file's own rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bridge.errors import InvalidArgument

# Beyond a day of audio a "start" is a typo, and the sample arithmetic would still be exact in float64.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class Section:
    """``length`` seconds of a file from ``start`` seconds in (``length`` ``None``: to the end)."""

    start: float = 0.0
    length: float | None = None

    def __post_init__(self) -> None:
        start = float(self.start)
        if not math.isfinite(start) or not 0.0 <= start <= MAX_SECONDS:
            raise InvalidArgument(f"start must be between 0 and {MAX_SECONDS:g} seconds, got {self.start}")
        if self.length is not None:
            length = float(self.length)
            if not math.isfinite(length) or not 0.0 < length <= MAX_SECONDS:
                raise InvalidArgument(
                    f"length must be more than 0 and at most {MAX_SECONDS:g} seconds, got {self.length}"
                )

    @property
    def whole(self) -> bool:
        """Whether this is the whole file (nothing to cut)."""
        return float(self.start) == 0.0 and self.length is None

    def key(self) -> dict[str, float | None]:
        """For cache keys: two sections of one file are different inputs."""
        return {"start": float(self.start), "length": None if self.length is None else float(self.length)}


def span(total: int, sample_rate: int, section: Section | None, name: str = "the input") -> tuple[int, int]:
    """``(first, count)``: where ``section`` starts in audio of ``total`` samples and how many samples it plays
    (past the end of the audio it plays silence, as a DAW item longer than its file does).

    Raises:
        InvalidArgument: the section starts at or after the end of the audio.
    """
    if section is None or section.whole:
        return 0, total
    first = int(round(float(section.start) * sample_rate))
    if first >= total:
        raise InvalidArgument(
            f"start {float(section.start):g} s is past the end of {name} ({total / sample_rate:.3f} s); "
            "pick a start inside the file"
        )
    count = (
        total - first if section.length is None else max(1, int(round(float(section.length) * sample_rate)))
    )
    return first, count


def cut(audio: np.ndarray, sample_rate: int, section: Section | None, name: str = "the input") -> np.ndarray:
    """The samples of ``section`` of ``audio`` ``[C, T]`` (see :func:`span`), padded with silence past the end.

    Raises:
        InvalidArgument: the section starts at or after the end of the audio.
    """
    if section is None or section.whole:
        return audio
    first, count = span(audio.shape[-1], sample_rate, section, name)
    out = audio[:, first : first + count]
    if out.shape[-1] < count:
        out = np.pad(out, ((0, 0), (0, count - out.shape[-1])))
    return np.ascontiguousarray(out)
