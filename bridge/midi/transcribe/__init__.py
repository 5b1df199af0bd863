"""Audio parts to notes: monophonic lines, drums and chords; optional quantizing to the grid.

:func:`transcribe` picks the method by stem (:data:`METHODS`): bass, lead and vocals are monophonic lines
(:mod:`.mono`), drums are classified hits (:mod:`.drums`), keys, pads and the other chordal parts are one chord
per harmonic change (:mod:`.chords`). Notes keep the times they were heard at unless ``quantize`` asks for a
grid (:func:`quantize`). Pure functions on arrays: ``[C, T]`` audio and a :class:`~bridge.audio.timing.Grid` in,
a :class:`~bridge.midi.notes.Part` out.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.timing import Grid
from bridge.errors import InvalidArgument
from bridge.midi.notes import Note, Part

METHODS = {
    "bass": "mono",
    "lead": "mono",
    "vocals": "mono",
    "drums": "drums",
    "keys": "chords",
    "pad": "chords",
    "piano": "chords",
    "guitar": "chords",
    "other": "chords",
}
TRANSCRIBE_STEMS = (
    "bass",
    "lead",
    "vocals",
    "drums",
    "keys",
    "pad",
)  # what `stembridge transcribe --stem` takes
QUANTIZE_VALUES = ("1/4", "1/8", "1/16", "1/32", "1/8t", "1/16t")


def check_stem(stem: str, known: tuple[str, ...] = TRANSCRIBE_STEMS) -> str:
    """``stem`` lower-cased, or :class:`InvalidArgument` naming the stems there are."""
    name = str(stem).strip().lower()
    if name not in known:
        raise InvalidArgument(f"cannot transcribe stem {stem!r}; use one of {', '.join(known)}")
    return name


def quantize_step(value: str | None) -> float | None:
    """Quarter notes per grid step of ``"1/16"`` (0.25), ``"1/8t"`` (1/3)...; ``None`` for no quantizing."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text not in QUANTIZE_VALUES:
        raise InvalidArgument(f"quantize must be one of {', '.join(QUANTIZE_VALUES)}, got {value!r}")
    triplet = text.endswith("t")
    division = int(text.rstrip("t").split("/")[1])
    return 4.0 / division * (2.0 / 3.0 if triplet else 1.0)


def quantize(notes: list[Note], grid: Grid, step_quarters: float, end: int) -> list[Note]:
    """Each note's start and end moved to the nearest step of ``step_quarters`` quarter notes (bar 1 at 0); a
    note keeps at least one step and ends by ``end``."""
    step = step_quarters * grid.samples_per_quarter
    out = []
    for n in notes:
        a = int(round(round(n.start / step) * step))
        b = int(round(max(round((n.start + n.length) / step), round(n.start / step) + 1) * step))
        b = min(b, end)
        if b > a:
            out.append(Note(a, b - a, n.pitch, n.velocity))
    return out


def transcribe(
    audio: np.ndarray, sample_rate: int, stem: str, grid: Grid, quantize_to: str | None = None
) -> Part:
    """The notes of ``audio`` ``[C, T]`` (bar 1 at sample 0) as a ``stem`` part on ``grid``.

    Args:
        stem: one of :data:`METHODS`' keys.
        grid: tempo and time signature (at ``sample_rate``); chords are read per beat of it.
        quantize_to: ``"1/16"`` etc. to move notes onto the grid (see :data:`QUANTIZE_VALUES`); ``None`` keeps
            them where they were heard.

    Returns:
        A part as long as ``audio``; without notes for silence.
    """
    name = check_stem(stem, tuple(METHODS))
    step = quantize_step(quantize_to)
    grid = grid.with_sample_rate(sample_rate)
    length = int(np.shape(audio)[-1])
    method = METHODS[name]
    if method == "mono":
        from bridge.midi.transcribe.mono import transcribe_mono

        notes = transcribe_mono(audio, sample_rate, "bass" if name == "bass" else "lead")
    elif method == "drums":
        from bridge.midi.transcribe.drums import transcribe_drums

        notes = transcribe_drums(audio, sample_rate, int(round(grid.samples_per_step)))
    else:
        from bridge.midi.transcribe.chords import transcribe_chords

        notes = transcribe_chords(audio, sample_rate, grid)
    if step is not None:
        notes = quantize(notes, grid, step, length)
    return Part.of(name, notes, grid, length)
