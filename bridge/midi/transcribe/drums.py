"""Drum parts to General MIDI notes: onsets, each classified as kick, snare and/or hat by its spectrum.

Onsets come from :func:`bridge.audio.onsets.onset_strengths` on the whole band and on the band below 150 Hz
(a kick under a hat is one onset on the whole band but its own in the lows). At each onset the energy the hit
adds in three bands is measured over :data:`WINDOW_S` after it against as long before it:

- **low** (30-150 Hz): the kick's body;
- **mid** (150-5000 Hz): the snare's body and its wires (a hat has little here);
- **high** (above 10 kHz): the hat; a snare's wires and a kick's click have little up there.

Each band's rise is divided by the largest rise that band shows anywhere in the part, so the decision does
not depend on the mix level. A hit is a kick when its low rise reaches :data:`PRESENT`, a snare when its mid
rise does and the mid carries more than :data:`SNARE_SHARE` of the mid + high rise (hats are thin below 5
kHz), a hat when its high rise reaches :data:`HAT_PRESENT`. A hit may be a kick or a snare and a hat at once. Notes are
GM kick 36, snare 38 and closed hat 42, one 16th long, velocity from the hit's loudest band.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from bridge.audio.analysis import to_mono
from bridge.audio.onsets import onset_strengths
from bridge.midi.notes import Note

KICK, SNARE, CLOSED_HAT = 36, 38, 42
WINDOW_S = 0.04
PRESENT = 0.2  # of the band's largest rise: a kick, a snare
HAT_PRESENT = 0.08  # a hat: its top is far above anything else's there, even under a snare
SNARE_SHARE = 0.35
MERGE_S = 0.03  # a low-band onset this close to a whole-band one is the same hit
BANDS = {"low": (30.0, 150.0), "mid": (150.0, 5000.0), "high": (10000.0, None)}


def _band(mono: np.ndarray, sample_rate: int, low: float, high: float | None) -> np.ndarray:
    nyquist = sample_rate / 2
    if high is None or high >= nyquist * 0.95:
        sos = signal.butter(4, min(low, nyquist * 0.9), "highpass", fs=sample_rate, output="sos")
    else:
        sos = signal.butter(4, [low, high], "bandpass", fs=sample_rate, output="sos")
    out: np.ndarray = signal.sosfiltfilt(sos, mono)
    return out


def _rises(band: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """Energy over ``width`` samples after each position less the energy over ``width`` before, 0 or more."""
    power = np.concatenate([[0.0], np.cumsum(band.astype(np.float64) ** 2)])
    n = band.size
    after = power[np.minimum(n, positions + width)] - power[np.minimum(n, positions)]
    before = power[np.minimum(n, positions)] - power[np.maximum(0, positions - width)]
    return np.asarray(np.maximum(after - before, 0.0))


def hit_positions(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onsets on the whole band, plus low-band onsets no whole-band onset is near; sorted samples."""
    every, _ = onset_strengths(mono, sample_rate)
    low, _ = onset_strengths(mono, sample_rate, max_hz=BANDS["low"][1])
    merge = MERGE_S * sample_rate
    extra = [p for p in low if every.size == 0 or np.min(np.abs(every - p)) > merge]
    return np.sort(np.concatenate([every, np.asarray(extra, dtype=np.int64)])).astype(np.int64)


def transcribe_drums(audio: np.ndarray, sample_rate: int, step: int | None = None) -> list[Note]:
    """GM drum notes (kick 36, snare 38, closed hat 42) of a drum part ``audio`` ``[C, T]``, in samples.

    Args:
        step: the length given to each note (samples; default 1/8 s). Drum notes are triggers: their length
            does not change how they sound.
    """
    mono = to_mono(audio).astype(np.float64)
    if mono.size == 0 or not np.any(np.abs(mono) > 1e-4):
        return []
    positions = hit_positions(mono, sample_rate)
    if positions.size == 0:
        return []
    width = max(1, int(WINDOW_S * sample_rate))
    rises = {
        name: _rises(_band(mono, sample_rate, lo, hi), positions, width) for name, (lo, hi) in BANDS.items()
    }
    scaled = {name: r / max(float(r.max()), 1e-20) for name, r in rises.items()}
    length = int(step or sample_rate // 8)
    notes: list[Note] = []
    for i, pos in enumerate(positions):
        low, mid, high = scaled["low"][i], scaled["mid"][i], scaled["high"][i]
        snare = mid >= PRESENT and rises["mid"][i] > SNARE_SHARE * (rises["mid"][i] + rises["high"][i])
        hits = []
        if low >= PRESENT:
            hits.append((KICK, low))
        if snare:
            hits.append((SNARE, mid))
        if high >= HAT_PRESENT:
            hits.append((CLOSED_HAT, high))
        for pitch, strength in hits:
            velocity = float(np.clip(0.35 + 0.65 * np.sqrt(strength), 0.1, 1.0))
            notes.append(Note(int(pos), length, pitch, velocity))
    return notes
