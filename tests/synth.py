"""Synthetic test audio with known content: faded sines, drum hits, bass lines, chords, a sung-like voice.

Everything is built from numpy in memory, deterministic for a given seed, so tests can check content against
known stems (onset times, pitches, levels) rather than only "no error".
"""

from __future__ import annotations

import numpy as np

SR = 44100
A4 = 440.0


def midi_hz(note: float) -> float:
    return float(A4 * 2.0 ** ((note - 69) / 12.0))


def faded_sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5, fade: float = 0.01) -> np.ndarray:
    """Mono sine ``[T]`` with raised-cosine fades so it starts and ends without clicks."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    f = min(int(fade * sr), n // 2)
    if f:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))
        x[:f] *= ramp
        x[n - f :] *= ramp[::-1]
    return x.astype(np.float32)


def _place(out: np.ndarray, hit: np.ndarray, start: int) -> None:
    end = min(out.shape[-1], start + hit.shape[-1])
    if start < end:
        out[..., start:end] += hit[..., : end - start]


def kick(sr: int = SR) -> np.ndarray:
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    freq = 50 + 90 * np.exp(-t * 30)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return (0.9 * np.sin(phase) * np.exp(-t * 9)).astype(np.float32)


def snare(sr: int = SR, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng or np.random.default_rng(1)
    n = int(0.2 * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n) * np.exp(-t * 22)
    tone = np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
    return (0.35 * noise + 0.3 * tone).astype(np.float32)


def hat(sr: int = SR, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng or np.random.default_rng(2)
    n = int(0.05 * sr)
    t = np.arange(n) / sr
    noise = np.diff(rng.standard_normal(n + 1))  # crude high-pass
    return (0.12 * noise * np.exp(-t * 80)).astype(np.float32)


def drum_loop(bpm: float, bars: int, sr: int = SR, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Kick on 1 and 3, snare on 2 and 4, hats on 8ths, 4/4. Returns (mono [T], kick+snare onset samples)."""
    rng = np.random.default_rng(seed)
    step = sr * 60.0 / bpm / 4
    n = int(round(bars * 16 * step))
    out = np.zeros(n, dtype=np.float32)
    onsets = []
    for s in range(bars * 16):
        pos = int(round(s * step))
        if s % 8 == 0:
            _place(out, kick(sr), pos)
            onsets.append(pos)
        elif s % 8 == 4:
            _place(out, snare(sr, rng), pos)
            onsets.append(pos)
        if s % 2 == 0:
            _place(out, hat(sr, rng), pos)
    return out, onsets


def bass_line(bpm: float, bars: int, roots: list[int], sr: int = SR) -> np.ndarray:
    """Mono bass ``[T]``: 8th notes on each bar's root (MIDI notes, one per bar, cycled), saw-ish, decaying."""
    step = sr * 60.0 / bpm / 4
    n = int(round(bars * 16 * step))
    out = np.zeros(n, dtype=np.float32)
    for s in range(0, bars * 16, 2):
        freq = midi_hz(roots[(s // 16) % len(roots)])
        length = int(round(2 * step))
        t = np.arange(length) / sr
        tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
        env = np.exp(-t * 6) * np.minimum(1.0, t * 400) * np.minimum(1.0, (length - np.arange(length)) / 200)
        _place(out, (0.35 * tone * env).astype(np.float32), int(round(s * step)))
    return out


def chord_pad(bpm: float, bars: int, chords: list[list[int]], sr: int = SR) -> np.ndarray:
    """Mono sustained chords ``[T]``, one chord (MIDI notes) per bar, cycled."""
    bar = sr * 60.0 / bpm * 4
    n = int(round(bars * bar))
    out = np.zeros(n, dtype=np.float32)
    for b in range(bars):
        start, end = int(round(b * bar)), int(round((b + 1) * bar))
        t = np.arange(end - start) / sr
        x = sum(np.sin(2 * np.pi * midi_hz(note) * t) for note in chords[b % len(chords)])
        env = np.minimum(1.0, t * 20) * np.minimum(1.0, (end - start - np.arange(end - start)) / 800)
        out[start:end] += (0.08 * x * env).astype(np.float32)
    return out


def voice(bpm: float, bars: int, notes: list[int], sr: int = SR) -> np.ndarray:
    """Mono sung-like line ``[T]``: vibrato, harmonics with a formant tilt, one note per half bar."""
    half = sr * 60.0 / bpm * 2
    n = int(round(bars * 2 * half))
    out = np.zeros(n, dtype=np.float32)
    for i in range(bars * 2):
        start, end = int(round(i * half)), int(round((i + 1) * half))
        t = np.arange(end - start) / sr
        f0 = midi_hz(notes[i % len(notes)]) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) * (1.0 / k) * (1.5 if 3 <= k <= 5 else 1.0) for k in range(1, 9))
        env = np.minimum(1.0, t * 15) * np.minimum(1.0, (end - start - np.arange(end - start)) / 2000)
        out[start:end] += (0.12 * x * env).astype(np.float32)
    return out


def song_stems(bpm: float = 120.0, bars: int = 4, sr: int = SR) -> dict[str, np.ndarray]:
    """Stereo ``[2, T]`` stems of a short song in A minor (Am F C G): drums, bass, vocals (centre), other.

    Drums and bass sit in the centre, the vocal dead centre, the chords ("other") spread wide, as in a mix.
    """
    drums, _ = drum_loop(bpm, bars, sr)
    bass = bass_line(bpm, bars, [45, 41, 48, 43], sr)
    other = chord_pad(bpm, bars, [[57, 60, 64], [53, 57, 60], [60, 64, 67], [55, 59, 62]], sr)
    vocals = voice(bpm, bars, [69, 72, 65, 69, 64, 67, 62, 67], sr)
    n = min(len(drums), len(bass), len(other), len(vocals))
    stereo = {
        "drums": np.stack([drums[:n], drums[:n]]),
        "bass": np.stack([bass[:n], bass[:n]]),
        "vocals": np.stack([vocals[:n], vocals[:n]]),
        # wide: different level and a slight delay per side, so it is not centre-panned
        "other": np.stack([other[:n] * 1.0, np.roll(other[:n], 331) * 0.45]),
    }
    # scaled so the mix peaks below 0 dBFS
    return {k: (0.45 * v).astype(np.float32) for k, v in stereo.items()}


def mix(stems: dict[str, np.ndarray]) -> np.ndarray:
    return np.sum(list(stems.values()), axis=0).astype(np.float32)


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-distortion ratio in dB (plain, not scale-invariant)."""
    num = float(np.sum(reference.astype(np.float64) ** 2))
    den = float(np.sum((reference.astype(np.float64) - estimate) ** 2)) + 1e-12
    return 10.0 * np.log10(num / den + 1e-12)
