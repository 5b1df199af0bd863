"""Keys and pads to chords: one chord per harmonic change, from the chroma analysis.

The chroma of the part (:func:`bridge.audio.analysis.chroma`) is summed over each beat of the grid; each beat
that sounds gets the triad that best matches it (:func:`bridge.audio.analysis.match_chord`, the diatonic chords
of the part's key preferred, the key from :func:`bridge.audio.analysis.estimate_key`). Beats with the same
triad in a row are one chord: it starts at the first beat's onset (the first onset within half a beat of the
beat line, else the beat line) and lasts until the next chord starts or the part falls silent. A restruck
chord therefore stays one chord: what a producer fixes is the harmony, not the comping rhythm.

Each chord is voiced with its root in the octave from C3 and its three tones in the octave from C4.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.analysis import Chord, chroma, estimate_key, match_chord, nearest_pow2, to_mono
from bridge.audio.onsets import onset_strengths
from bridge.audio.timing import Grid
from bridge.midi.notes import Note

SILENT_DB = 40.0  # beats this far below the loudest are silence
ROOT_LOW, TONES_LOW = 48, 60


def _beat_chroma(mono: np.ndarray, sample_rate: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chroma ``[12, beats]`` summed over the frames centred in each beat, and each beat's level in dB."""
    n_fft = nearest_pow2(0.093 * sample_rate)
    hop = n_fft // 4
    frames = chroma(mono, sample_rate, n_fft=n_fft, hop=hop)
    centres = np.arange(frames.shape[1]) * hop
    beat_of = np.searchsorted(edges, centres, side="right") - 1
    beats = edges.size - 1
    ok = (beat_of >= 0) & (beat_of < beats)
    out = np.zeros((12, beats))
    for pc in range(12):
        out[pc] = np.bincount(beat_of[ok], weights=frames[pc, ok], minlength=beats)[:beats]
    power = np.concatenate([[0.0], np.cumsum(mono.astype(np.float64) ** 2)])
    bounds = np.minimum(edges, mono.size)
    energy = (power[bounds[1:]] - power[bounds[:-1]]) / np.maximum(1, np.diff(bounds))
    level = 10.0 * np.log10(energy + 1e-20)
    return out, level - level.max(initial=-400.0)


def voicing(chord: Chord) -> list[int]:
    """The chord's notes: root from C3, tones from C4."""
    return [ROOT_LOW + chord.root % 12] + sorted(TONES_LOW + pc % 12 for pc in chord.pitch_classes)


def transcribe_chords(audio: np.ndarray, sample_rate: int, grid: Grid) -> list[Note]:
    """Chord notes of a keys or pad part ``audio`` ``[C, T]`` on ``grid`` (bar 1 at sample 0), in samples."""
    mono = to_mono(audio).astype(np.float32)
    n = mono.size
    if n == 0 or not np.any(np.abs(mono) > 1e-4):
        return []
    beat = (
        grid.samples_per_quarter * float(grid.time_signature.quarters_per_bar) / grid.time_signature.numerator
    )
    count = int(np.ceil(n / beat))
    edges = np.round(np.arange(count + 1) * beat).astype(np.int64)
    edges[-1] = max(edges[-1], n)
    beat_chroma, level = _beat_chroma(mono, sample_rate, edges)
    sounding = (level > -SILENT_DB) & (beat_chroma.sum(axis=0) > 0)
    if not sounding.any():
        return []
    key = estimate_key(beat_chroma[:, sounding])
    labels: list[Chord | None] = [
        match_chord(beat_chroma[:, b], key) if sounding[b] else None for b in range(count)
    ]
    onsets, _ = onset_strengths(mono, sample_rate)
    runs: list[tuple[int, int, Chord]] = []  # (first beat, end beat, chord)
    for b, chord in enumerate(labels):
        if chord is None:
            continue
        if runs and runs[-1][1] == b and runs[-1][2] == chord:
            runs[-1] = (runs[-1][0], b + 1, chord)
        else:
            runs.append((b, b + 1, chord))
    notes: list[Note] = []
    starts = []
    for first, _, _ in runs:
        line = int(edges[first])
        near = onsets[np.abs(onsets - line) <= beat / 2] if onsets.size else onsets
        starts.append(int(near[0]) if near.size else line)
    for k, (first, end, chord) in enumerate(runs):
        start = starts[k]
        stop = min(n, starts[k + 1] if k + 1 < len(runs) and runs[k + 1][0] == end else int(edges[end]))
        if stop <= start:
            continue
        velocity = float(np.clip(1.0 + float(level[first:end].max()) / 40.0, 0.1, 1.0))
        notes.extend(Note(start, stop - start, pitch, velocity) for pitch in voicing(chord))
    return notes
