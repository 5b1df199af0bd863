"""Monophonic lines (bass, lead, vocals) to notes: the pitch tracker plus onsets.

1. **Pitch** per STFT frame (46 ms windows, 11.6 ms apart) from the harmonic-comb tracker of the built-in
   separation (:mod:`bridge.engines.builtin.bass_pitch`), with a range per register: 38-400 Hz for bass,
   90-1400 Hz for leads and vocals. Frames where the comb explains little of the tonal energy, or quieter
   than :data:`FLOOR_DB` below the part's loudest frame, are unvoiced.
2. **Onsets** (:func:`bridge.audio.onsets.onset_strengths`, timed to about a millisecond) cut the line into
   segments; a segment also ends where it falls silent, and is cut again where the pitch moves by a
   semitone or more for at least :data:`MIN_NOTE_S` (a slide or a legato phrase without an attack).
3. Each piece becomes a note: its start the onset (or the pitch change), its pitch the median of its voiced
   frames rounded to the nearest semitone, its end where its level falls :data:`RELEASE_DB` below its peak
   or the next note starts, and its velocity from its peak level.

A pure function on arrays: ``[C, T]`` audio in, :class:`~bridge.midi.notes.Note` list (samples) out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.audio.analysis import stft_magnitude, to_mono
from bridge.audio.onsets import onset_strengths
from bridge.engines.builtin.bass_pitch import PitchSettings, PitchTables, track
from bridge.midi.notes import Note

FLOOR_DB = 40.0  # frames this far below the loudest are silence
RELEASE_DB = 24.0  # a note ends where its level falls this far below its own peak
MIN_NOTE_S = 0.06  # shorter pieces are not notes of their own
VOICED = 0.35  # pitch confidence from which a frame counts as voiced


@dataclass(frozen=True)
class Register:
    """Where a line lives: the tracker's fundamental range and the top of its comb, in Hz."""

    f0_range: tuple[float, float]
    top: tuple[float, float]
    explain_top: float


REGISTERS = {
    "bass": Register((38.0, 400.0), (1000.0, 2000.0), 400.0),
    "lead": Register((90.0, 1400.0), (4000.0, 6000.0), 2000.0),
}


def _frames(
    mono: np.ndarray, sample_rate: int, register: Register
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per frame: MIDI pitch (float, NaN unvoiced), level in dB, and the hop in samples."""
    scale = sample_rate / 44100.0
    n_fft = int(2 ** round(np.log2(2048 * scale)))
    hop = n_fft // 4
    mag = stft_magnitude(mono, n_fft, hop)
    settings = PitchSettings(f0_range=register.f0_range, top=register.top, explain_top=register.explain_top)
    tables = PitchTables.build(sample_rate, n_fft, settings)
    pitch = track(mag, tables)
    energy = np.sqrt(np.mean(mag.astype(np.float64) ** 2, axis=1)) + 1e-12
    level = 20.0 * np.log10(energy)
    level -= level.max()
    midi = 69.0 + 12.0 * np.log2(np.maximum(pitch.f0.astype(np.float64), 1.0) / 440.0)
    voiced = (pitch.confidence >= VOICED) & (level > -FLOOR_DB)
    return np.where(voiced, midi, np.nan), level, voiced, hop


def _split_by_pitch(first: int, last: int, midi: np.ndarray, min_frames: int) -> list[int]:
    """Frame indices within ``[first, last)`` where the rounded pitch changes for at least ``min_frames``."""
    cuts: list[int] = []
    current = np.nan
    run_start, run_pitch, run = first, np.nan, 0
    for i in range(first, last):
        p = midi[i]
        if np.isnan(p):
            run = 0
            continue
        r = float(np.round(p))
        if np.isnan(current):
            current = r
            continue
        if r == current:
            run = 0
            continue
        if run and r == run_pitch:
            run += 1
        else:
            run_start, run_pitch, run = i, r, 1
        if run >= min_frames:
            cuts.append(run_start)
            current, run = r, 0
    return cuts


def transcribe_mono(audio: np.ndarray, sample_rate: int, register: str = "bass") -> list[Note]:
    """The notes of a monophonic line ``audio`` ``[C, T]`` (or ``[T]``), in samples at ``sample_rate``.

    Args:
        register: ``"bass"`` or ``"lead"`` (leads and vocals), see :data:`REGISTERS`.

    Returns:
        Notes in time order, none overlapping; empty for silence.
    """
    mono = to_mono(audio).astype(np.float32)
    n = mono.shape[-1]
    if n == 0 or not np.any(np.abs(mono) > 1e-4):
        return []
    midi, level, voiced, hop = _frames(mono, sample_rate, REGISTERS[register])
    frames = midi.size
    positions, _ = onset_strengths(mono, sample_rate)
    min_frames = max(1, int(round(MIN_NOTE_S * sample_rate / hop)))
    # segment starts: onsets, plus where sound starts again after silence, plus pitch changes inside
    starts = sorted({int(p) for p in positions})
    silent_before = True
    for i in range(frames):
        if voiced[i] and silent_before and not any(abs(s - i * hop) < 3 * hop for s in starts):
            starts.append(i * hop)
        silent_before = not voiced[i] and level[i] < -FLOOR_DB
    starts = sorted(starts)
    bounds = [min(frames, int(round(s / hop))) for s in starts] + [frames]
    pieces: list[tuple[int, int, int]] = []  # (start sample, first frame, end frame)
    for k, s in enumerate(starts):
        a, b = bounds[k], bounds[k + 1]
        cuts = _split_by_pitch(a + min_frames // 2, b, midi, min_frames)
        edges = [a, *cuts, b]
        for j in range(len(edges) - 1):
            pieces.append((s if j == 0 else edges[j] * hop, edges[j], edges[j + 1]))
    notes: list[Note] = []
    for start, a, b in pieces:
        body = midi[a + (1 if b - a > 2 else 0) : b]
        body = body[~np.isnan(body)]
        if body.size < max(2, min_frames // 2):
            continue
        pitch = int(np.round(np.median(body)))
        peak = float(level[a:b].max())
        below = np.nonzero(level[a:b] < peak - RELEASE_DB)[0]
        after_peak = below[below > int(np.argmax(level[a:b]))]
        end_frame = a + int(after_peak[0]) if after_peak.size else b
        end = min(n, end_frame * hop, bounds[-1] * hop)
        if notes and notes[-1].start + notes[-1].length > start:
            last = notes[-1]
            notes[-1] = Note(last.start, max(1, start - last.start), last.pitch, last.velocity)
        if end - start < MIN_NOTE_S * sample_rate / 2:
            continue
        velocity = float(np.clip(1.0 + peak / 40.0, 0.1, 1.0))
        notes.append(Note(int(start), int(end - start), pitch, velocity))
    return notes
