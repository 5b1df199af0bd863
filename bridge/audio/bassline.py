"""The bass line of context audio, for naming chords: the pitch class the lowest voice plays in each bar,
and which spectral peaks are its overtones.

A chord's root is usually its lowest note, and a 7th chord's upper notes fit two triads (Am7 = A C E G holds
Am and C), so the bass decides between them. The bass also pollutes the chroma: its 3rd and 5th partials
sound a fifth and a major third above the root (a D bass puts F# into a Dm7 bar). This module tracks the line
with the separation's bass tracker (:mod:`bridge.engines.builtin.bass_pitch`) on a plain harmonic/percussive
split of the low band, counting only notes with overtones (not a kick's low end), and gives
:mod:`bridge.audio.analysis` both.

Pure functions on ``[C, T]`` float32 arrays; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bridge.audio.spectral import Stft
from bridge.audio.timing import Grid
from bridge.engines.builtin import bass_pitch

_HARMONIC_FRAMES = 9  # time median, ~0.1 s at 44.1/48 kHz: held notes stay, drum hits go
_PERCUSSIVE_BINS = 9  # frequency median, ~190 Hz: broadband hits stay, partials go
_PARTIAL_CENTS = 30.0  # a peak this close to a partial of the bass (Gaussian sigma) counts as the bass's
_MAX_PARTIAL = 16
_CHUNK_FRAMES = 2048
_ROOT_PARTIALS = (1, 2, 4, 8, 16)  # partials on the root's own pitch class: they stay in the chroma


@dataclass(frozen=True)
class BassLine:
    """The tracked bass of some audio: frame ``i`` is centred on sample ``i * hop``.

    Attributes:
        f0: float32 ``[N]`` fundamental in Hz (meaningful where ``confidence`` > 0).
        confidence: float32 ``[N]`` 0..1 (0 where no bass line is heard, or the rate is too low to track).
        hop: samples between frames.
    """

    f0: np.ndarray
    confidence: np.ndarray
    hop: int

    def at(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f0, confidence)`` at sample positions ``samples`` ``[M]`` (interpolated, f0 on a log scale)."""
        if self.f0.size == 0:
            zeros = np.zeros(len(samples), dtype=np.float32)
            return zeros + np.float32(1.0), zeros
        frames = np.arange(self.f0.size, dtype=np.float64) * self.hop
        f0 = np.exp2(np.interp(samples, frames, np.log2(np.maximum(self.f0, 1.0))))
        return f0.astype(np.float32), np.interp(samples, frames, self.confidence).astype(np.float32)


def track_bass(audio: np.ndarray, sample_rate: int) -> BassLine:
    """Track the bass line of ``audio`` ``[C, T]`` or ``[T]`` (frames ~46 ms long, a quarter apart)."""
    mono = np.asarray(audio, dtype=np.float32)
    mono = mono if mono.ndim == 1 else mono.mean(axis=0)
    n_fft = int(2 ** round(np.log2(max(0.0464 * sample_rate, 16.0))))  # 2048 at 44.1/48 kHz, as separation
    plan = Stft(n_fft, n_fft // 4)
    tables = bass_pitch.PitchTables.build(sample_rate, n_fft, bass_pitch.PitchSettings())
    frames = plan.n_frames(mono.size) if mono.size else 0
    if tables.bins == 0 or frames == 0:
        return BassLine(np.zeros(frames, np.float32), np.zeros(frames, np.float32), plan.hop)
    padded = plan.pad(mono)
    mag = np.empty((frames, tables.bins), dtype=np.float32)
    for start in range(0, frames, _CHUNK_FRAMES):  # bounded memory on a long song: only the low bins are kept
        stop = min(frames, start + _CHUNK_FRAMES)
        mag[start:stop] = np.abs(plan.analyse(padded, start, stop)[:, : tables.bins])
    harmonic = ndimage.median_filter(mag, size=(_HARMONIC_FRAMES, 1), mode="nearest")
    percussive = ndimage.median_filter(mag, size=(1, _PERCUSSIVE_BINS), mode="nearest")
    h2, p2 = harmonic * harmonic, percussive * percussive
    tonal = mag * (h2 / (h2 + p2 + np.float32(1e-12)))
    pitch = bass_pitch.track(tonal, tables)
    # a kick's low end is a gliding near-sine: only a line with overtones counts as bass
    return BassLine(pitch.f0, pitch.confidence * pitch.harmonicity, plan.hop)


def bass_per_bar(line: BassLine, n_samples: int, grid: Grid, bars: int) -> np.ndarray:
    """How much each pitch class is the bass in each bar: ``[12, bars]`` float32, each column summing to the
    bar's mean confidence (0 to 1: 1 when a confident bass plays throughout, 0 when none plays).

    Frames centred in a bar (and before ``n_samples``, the length of the tracked audio) count.
    """
    out = np.zeros((12, int(bars)), dtype=np.float64)
    centres = np.arange(line.f0.size, dtype=np.int64) * line.hop
    bar_of = np.searchsorted(grid.bar_positions(int(bars) + 1), centres, side="right") - 1
    ok = (bar_of >= 0) & (bar_of < bars) & (centres < n_samples)
    if not ok.any():
        return out.astype(np.float32)
    pc = np.round(69.0 + 12.0 * np.log2(np.maximum(line.f0[ok], 1.0) / 440.0)).astype(np.int64) % 12
    np.add.at(out, (pc, bar_of[ok]), line.confidence[ok])
    counts = np.bincount(bar_of[ok], minlength=int(bars))[: int(bars)]
    return (out / np.maximum(counts, 1)).astype(np.float32)


def overtone_share(line: BassLine, samples: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """0..1 per spectral peak: how surely the peak at ``freq`` Hz (in a frame centred on ``samples``) is an
    overtone of the bass line on another pitch class than its root (partials 3, 5, 6, 7, 9, ... up to 15):
    the tracker's confidence times the closeness to the partial.

    Args:
        line: from :func:`track_bass`.
        samples: ``[P]`` centre sample of each peak's frame.
        freq: ``[P]`` peak frequency in Hz.
    """
    f0, confidence = line.at(samples)
    ratio = np.asarray(freq, dtype=np.float64) / f0
    partial = np.rint(ratio)
    near = (partial >= 3) & (partial <= _MAX_PARTIAL) & ~np.isin(partial, _ROOT_PARTIALS)
    cents = 1200.0 * np.log2(np.maximum(ratio, 1e-9) / np.maximum(partial, 1.0))
    closeness = np.exp(-0.5 * (cents / _PARTIAL_CENTS) ** 2)
    return np.where(near, confidence * closeness, 0.0).astype(np.float32)
