"""The file-level edge of MIDI: ``.mid`` files for a job's audio outputs, and ``stembridge transcribe``.

The pipeline asks :func:`midi_of` for the file of a take whose notes the engine did not decide (audio models,
separated stems, variations); :func:`transcribe_file` reads one audio file, transcribes it and writes its
``.mid`` atomically, never over an existing file (the next free name instead).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bridge.audio import io as audio_io
from bridge.audio.analysis import is_silent
from bridge.audio.section import Section, cut
from bridge.audio.tempo import infer_grid
from bridge.audio.timing import Grid, TimeSignature
from bridge.audio.writer import Publisher
from bridge.engines.base import Progress, ProgressCallback
from bridge.errors import InvalidArgument
from bridge.midi.smf import encode
from bridge.midi.transcribe import METHODS, TRANSCRIBE_STEMS, check_stem, quantize_step, transcribe
from bridge.naming import output_name, split_source


def midi_of(
    audio: np.ndarray, sample_rate: int, stem: str, grid: Grid, quantize_to: str | None = None
) -> bytes:
    """The Standard MIDI File of ``audio`` ``[C, T]`` transcribed as ``stem`` on ``grid``."""
    return encode(transcribe(audio, sample_rate, stem, grid, quantize_to))


def stem_of_name(name: str) -> str | None:
    """The stem a file name says: stembridge's ``song__bass...`` form, or a stem word in it (``Bass 2.wav``)."""
    base = Path(name).stem
    _, named = split_source(base)
    candidates = [named.split("-")[0]] if named else []
    candidates += re.findall(r"[a-z]+", base.lower())
    return next((word for word in candidates if word in METHODS), None)


def part_stem(path: Path, given: str | None) -> str:
    """The stem to transcribe a variation of ``path`` as: ``given``, else what its name says.

    Raises:
        InvalidArgument: neither says it.
    """
    if given:
        return check_stem(given, tuple(METHODS))
    found = stem_of_name(Path(path).name)
    if found is None:
        raise InvalidArgument(
            f"cannot tell what part {Path(path).name} is, to write its MIDI; put the stem in the file name "
            f"(song__bass.wav) or pass --stem ({', '.join(TRANSCRIBE_STEMS)})"
        )
    return found


def transcribe_file(
    path: Path,
    out_dir: Path,
    *,
    stem: str,
    bpm: float | None = None,
    time_signature: TimeSignature | None = None,
    quantize_to: str | None = None,
    section: Section | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, object]]:
    """Transcribe the audio file ``path`` as ``stem``; write ``<source>__<stem>__<bpm>bpm__<bars>bars.mid``.

    Bar 1 is at the start of the file (or of ``section``); the tempo is ``bpm``, else estimated
    (:func:`bridge.audio.tempo.infer_grid`).

    Returns:
        The path written, and what to report: ``bpm``, ``bars``, ``time_signature``, ``notes`` (count),
        ``quantize`` and ``warnings`` (silence: an empty file).

    Raises:
        InvalidArgument: an unknown stem or quantize value (before anything is read).
    """
    report = Progress(progress)
    stem = check_stem(stem)
    quantize_step(quantize_to)
    audio, sample_rate = audio_io.read_audio(path)
    audio = cut(audio, sample_rate, section or Section(), Path(path).name)
    report(0.1, "read")
    grid = infer_grid(audio, sample_rate, bpm, None, time_signature or TimeSignature())
    report(0.3, "analyse")
    part = transcribe(audio, sample_rate, stem, grid, quantize_to)
    report(0.9, "transcribe")
    bars = max(1, int(round(grid.bars_in(audio.shape[-1]))))
    source = split_source(Path(path).stem)[0]
    name = output_name(source, stem, bpm=grid.bpm, bars=bars, ext="mid")
    with Publisher() as publisher:
        publisher.add_file(Path(out_dir) / name, encode(part))
        written = publisher.publish(retry=True)[0]
    report(1.0, "done")
    info: dict[str, object] = {
        "bpm": grid.bpm,
        "bars": bars,
        "time_signature": str(grid.time_signature),
        "notes": len(part.notes),
        "quantize": quantize_to,
        "source": str(path),
    }
    if not part.notes:
        why = "it is silent" if is_silent(audio) else "nothing in it reads as notes"
        info["warnings"] = [f"no notes found in {Path(path).name} ({why}); wrote an empty MIDI file"]
    return written, info
