"""Sound for the built-in generator: band-limited oscillators, envelopes, drum voices and one patch per stem.

Each ``render_<stem>(notes, n, grid, style, rng, progress)`` turns
:class:`~bridge.engines.builtin.parts.Note` lists into ``[2, n]`` audio: every note is synthesised as one
vectorised block and added into the buffer, then the bus goes through a few pedalboard effects, streamed in
chunks so ``progress`` can be reported. Nothing is cached between calls, and everything random comes from
``rng``, so the same notes and seed give the same samples. Monophonic patches (bass, lead) mute for
``MUTE_S`` before each note, so every note starts with a clean attack.

Patches: bass (sine body + polyBLEP saw "bite" through a ladder low-pass, centred; ``808``: a gliding sine
with a long decay and light drive), drums (kick with a pitch sweep, snare of tone + band-passed noise, hats of
high-passed noise; kick and snare centred; a bus compressor, then a soft clipper that keeps the peaks within
``DRUM_PLR_DB`` of the loudness), keys (two-operator FM electric piano, voices spread, chorus), pad
(three detuned saws per note, slow attack, wide chorus and reverb) and lead (saw + square through a resonant
low-pass with a dotted-8th delay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pedalboard as pb
from scipy import signal

from bridge.audio.loudness import integrated_loudness
from bridge.audio.timing import Grid
from bridge.engines.base import Progress
from bridge.engines.builtin.parts import CLOSED_HAT, KICK, OPEN_HAT, SNARE, Note, Style

TWO_PI = 2.0 * np.pi
MUTE_S = 0.01  # a monophonic voice falls silent this long before its next note
NOTES_SHARE = 0.6  # of a render's progress spent on notes; the effects take the rest
DRUM_PLR_DB = 14.0  # drum bus: a clipper keeps its peaks at most this far above its loudness (LUFS)
CLIP_KNEE_DB = 6.0  # the clipper leaves everything this far below its ceiling untouched


def midi_hz(pitch: float) -> float:
    """Frequency in Hz of a MIDI note (A4 = 69 = 440 Hz)."""
    return float(440.0 * 2.0 ** ((pitch - 69.0) / 12.0))


# ------------------------------------------------------------------------------------------ oscillators


def _blep(p: np.ndarray, dt: float) -> np.ndarray:
    """PolyBLEP residual at phases ``p`` (0..1) for a phase step ``dt``."""
    before = p > 1.0 - dt
    t = np.where(before, (p - 1.0) / dt, p / dt)
    return np.where(before, t * t + 2.0 * t + 1.0, np.where(p < dt, 2.0 * t - t * t - 1.0, 0.0))


def saw(freq: float, n: int, sample_rate: int, phase: float = 0.0) -> np.ndarray:
    """Band-limited (polyBLEP) sawtooth ``[n]`` float64 in -1..1 at a constant ``freq``.

    The phase wraps land on a computable set of samples, so the correction touches only those and the sample
    before each, instead of masking the whole signal.
    """
    dt = min(freq / sample_rate, 0.45)
    y = np.arange(n, dtype=np.float64)
    y *= dt
    y += phase
    y -= np.floor(y)  # the phase, 0..1
    m = np.arange(1, int(phase + n * dt) + 2)
    wraps = np.ceil((m - phase) / dt).astype(np.int64)
    idx = np.concatenate([wraps, wraps - 1])  # distinct: wraps are more than two samples apart
    idx = idx[(idx >= 0) & (idx < n)]
    residual = _blep(y[idx], dt)
    y *= 2.0
    y -= 1.0
    y[idx] -= residual
    return y


def sine(cycles: np.ndarray) -> np.ndarray:
    """``sin(2 pi cycles)`` as float32 ``[n]``: the phase is reduced to one cycle in float64 first, so the
    fast float32 sine stays exact however long the note."""
    frac = cycles - np.floor(cycles)
    out: np.ndarray = np.sin((TWO_PI * frac).astype(np.float32))
    return out


def phases(freq: float, n: int, sample_rate: int) -> np.ndarray:
    """Cycles elapsed at each of ``n`` samples of a constant ``freq``, float64 ``[n]``."""
    return np.arange(n) * (freq / sample_rate)


def square(freq: float, n: int, sample_rate: int, phase: float = 0.0) -> np.ndarray:
    """Band-limited square ``[n]`` float64 (difference of two polyBLEP saws half a cycle apart)."""
    out: np.ndarray = saw(freq, n, sample_rate, phase) - saw(freq, n, sample_rate, (phase + 0.5) % 1.0)
    return 0.5 * out


def adsr(
    gate: int, sample_rate: int, attack: float, decay: float, sustain: float, release: float
) -> np.ndarray:
    """Envelope float32 ``[gate + release samples]``: linear attack, exponential decay to ``sustain``, then a
    release that falls from wherever the envelope is at gate-off to exactly zero (times in seconds)."""
    rel = max(1, int(release * sample_rate))
    a = max(1, int(attack * sample_rate))
    env = np.empty(gate + rel, dtype=np.float32)
    head = min(a, gate)
    env[:head] = np.arange(head, dtype=np.float32) / np.float32(a)
    fall = np.arange(gate - head, dtype=np.float32) / np.float32(-max(decay, 1e-4) * sample_rate)
    env[head:gate] = np.float32(sustain) + np.float32(1.0 - sustain) * np.exp(fall)
    level = float(env[gate - 1]) if gate > 0 else 0.0
    env[gate:] = np.float32(level) * (1.0 - np.arange(rel, dtype=np.float32) / np.float32(rel)) ** 2
    return env


def pan(mono: np.ndarray, position: float) -> np.ndarray:
    """Constant-power pan of ``[T]`` to ``[2, T]``; ``position`` -1 (left) .. 1 (right); 0 keeps L = R."""
    theta = (float(np.clip(position, -1.0, 1.0)) + 1.0) * np.pi / 4.0
    return np.stack([mono * np.cos(theta), mono * np.sin(theta)])


def _add(buf: np.ndarray, x: np.ndarray, start: int) -> None:
    """Add ``x`` ``[2, L]`` into ``buf`` ``[2, n]`` at ``start``, cutting what falls past the end."""
    end = min(buf.shape[1], start + x.shape[1])
    if start < end:
        buf[:, start:end] += x[:, : end - start]


def mono_limits(notes: list[Note], gap: int) -> list[int]:
    """How long each note of a monophonic patch may sound: until ``gap`` samples before the next note starts
    (at most half the way there), so the voice is muted briefly and every note gets a clean attack; a huge
    number for the last note."""
    limits = [1 << 62] * len(notes)
    order = sorted(range(len(notes)), key=lambda k: notes[k].start)
    for a, b in zip(order, order[1:], strict=False):
        distance = notes[b].start - notes[a].start
        if distance > 0:
            limits[a] = max(distance // 2, distance - gap)
    return limits


def choke(env: np.ndarray, limit: int, sample_rate: int) -> np.ndarray:
    """``env`` cut to ``limit`` samples with a 5 ms fade, when it would sound longer."""
    if env.size <= limit:
        return env
    fade = min(limit, max(1, int(0.005 * sample_rate)))
    out: np.ndarray = env[:limit].copy()
    out[limit - fade :] *= np.linspace(1.0, 0.0, fade)
    return out


def _tone(style: Style, dark: float, normal: float, bright: float) -> float:
    return dark if style.dark else bright if style.bright else normal


def _lowpass(cutoff: float, resonance: float = 0.1) -> pb.LadderFilter:
    return pb.LadderFilter(mode=pb.LadderFilter.Mode.LPF24, cutoff_hz=cutoff, resonance=resonance)


def _fx(
    effects: Sequence[pb.Plugin], audio: np.ndarray, sample_rate: int, progress: Progress | None = None
) -> np.ndarray:
    """Run ``audio`` ``[C, T]`` through ``effects`` in order, from a clean state, in 10-second chunks (the
    plugins stream, so the result is the same as in one go) with ``progress`` 0..1 between chunks."""
    out = np.empty(audio.shape, dtype=np.float64)
    chunk = 10 * sample_rate
    for start in range(0, audio.shape[-1], chunk):
        y = audio[:, start : start + chunk].astype(np.float32)
        for effect in effects:
            y = effect.process(y, sample_rate, reset=start == 0)
        out[:, start : start + chunk] = y
        if progress is not None:
            progress(min(1.0, (start + chunk) / audio.shape[-1]), "render")
    return out


def soft_clip(audio: np.ndarray, ceiling: float, knee_db: float = CLIP_KNEE_DB) -> np.ndarray:
    """``audio`` with every sample above ``knee_db`` below ``ceiling`` bent smoothly (tanh, slope 1 at the
    knee) towards ``ceiling``, which it never reaches; quieter samples pass unchanged."""
    knee = ceiling * 10.0 ** (-knee_db / 20.0)
    mag = np.abs(audio)
    over = mag > knee
    out = np.array(audio, dtype=np.float64)
    out[over] = np.sign(audio[over]) * (
        knee + (ceiling - knee) * np.tanh((mag[over] - knee) / (ceiling - knee))
    )
    return out


def _each(notes: list[Note], progress: Progress) -> Iterator[Note]:
    """``notes`` in order, reporting ``progress`` from 0 to ``NOTES_SHARE`` every 32 notes."""
    for i, note in enumerate(notes):
        if i % 32 == 0:
            progress(NOTES_SHARE * i / len(notes), "render")
        yield note


# ------------------------------------------------------------------------------------------- drum voices


def kick_voice(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Kick ``[T]``: a sine swept from about 165 Hz down to 45 Hz, with a short noise click."""
    t = np.arange(int(0.45 * sample_rate)) / sample_rate
    freq = 45.0 + 120.0 * np.exp(-t / 0.03)
    body = sine(np.cumsum(freq) / sample_rate) * np.exp(-t / 0.22)
    click = rng.standard_normal(t.size) * np.exp(-t / 0.0015)
    return 0.9 * body + 0.12 * click


def snare_voice(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Snare ``[T]``: 185 Hz and 330 Hz tones plus band-passed noise."""
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    sos = signal.butter(
        2, [1000.0, min(9000.0, 0.45 * sample_rate)], "bandpass", fs=sample_rate, output="sos"
    )
    noise: np.ndarray = signal.sosfilt(sos, rng.standard_normal(t.size)) * np.exp(-t / 0.07)
    tone = sine(185.0 * t) * np.exp(-t / 0.04)
    tone += 0.5 * sine(330.0 * t) * np.exp(-t / 0.03)
    return (0.9 * noise + 0.45 * tone) * np.minimum(1.0, t / 0.0005)


def hat_voice(sample_rate: int, rng: np.random.Generator, open_: bool = False) -> np.ndarray:
    """Hi-hat ``[T]``: high-passed noise, short (closed) or ringing (open)."""
    t = np.arange(int((0.5 if open_ else 0.08) * sample_rate)) / sample_rate
    sos = signal.butter(4, min(7000.0, 0.4 * sample_rate), "highpass", fs=sample_rate, output="sos")
    noise: np.ndarray = signal.sosfilt(sos, rng.standard_normal(t.size))
    return 0.5 * noise * np.exp(-t / (0.2 if open_ else 0.02))


# ----------------------------------------------------------------------------------------------- patches


def render_drums(
    notes: list[Note], n: int, grid: Grid, style: Style, rng: np.random.Generator, progress: Progress
) -> np.ndarray:
    """Drum notes (GM numbers 36, 38, 42, 46) -> ``[2, n]``; each voice is made once, in a few takes."""
    sr = grid.sample_rate
    voices: dict[int, tuple[list[np.ndarray], float]] = {
        KICK: ([kick_voice(sr, rng)], 0.0),
        SNARE: ([snare_voice(sr, rng) for _ in range(3)], 0.05),
        CLOSED_HAT: ([hat_voice(sr, rng) for _ in range(4)], 0.3),
        OPEN_HAT: ([hat_voice(sr, rng, open_=True) for _ in range(2)], 0.3),
    }
    stereo = {k: [pan(v, p) for v in takes] for k, (takes, p) in voices.items()}
    buf = np.zeros((2, n))
    for i, note in enumerate(_each(notes, progress)):
        takes = stereo.get(note.pitch, stereo[SNARE])
        _add(buf, note.velocity * takes[i % len(takes)], note.start)
    effects: list[pb.Plugin] = [pb.Compressor(threshold_db=-14.0, ratio=2.5, attack_ms=8.0, release_ms=120.0)]
    if style.dark:
        effects.append(_lowpass(5000.0, 0.0))
    bus = _fx(effects, buf, sr, progress.sub(NOTES_SHARE, 1.0))
    # Short hits with silence between them peak 15 to 21 dB above their loudness, so a part set to its
    # loudness would clip; shave the loudest transients (kick and snare peaks) as a drum-bus clipper does.
    loudness = integrated_loudness(bus, sr)
    if not np.isfinite(loudness):
        return bus
    return soft_clip(bus, 10.0 ** ((loudness + DRUM_PLR_DB) / 20.0))


def render_bass(
    notes: list[Note], n: int, grid: Grid, style: Style, rng: np.random.Generator, progress: Progress
) -> np.ndarray:
    """Bass notes -> ``[2, n]``, centred (L = R)."""
    sr = grid.sample_rate
    buf = np.zeros((1, n))
    for note, limit in zip(_each(notes, progress), mono_limits(notes, int(MUTE_S * sr)), strict=True):
        f0 = midi_hz(note.pitch)
        if style.sub808:
            env = choke(adsr(note.length, sr, 0.002, 1.2, 0.0, 0.05), limit, sr)
            t = np.arange(env.size) / sr
            freq = f0 * 2.0 ** (0.4 * np.exp(-t / 0.04))
            x = sine(np.cumsum(freq) / sr)
        else:
            env = choke(adsr(note.length, sr, 0.003, 0.3, 0.7, 0.03), limit, sr)
            bite = 0.3 + 0.7 * np.exp(np.arange(env.size, dtype=np.float32) / np.float32(-0.09 * sr))
            x = 0.75 * sine(phases(f0, env.size, sr)) + 0.45 * saw(f0, env.size, sr) * bite
        _add(buf, (note.velocity * env * x)[None, :], note.start)
    effects: list[pb.Plugin] = [pb.Distortion(drive_db=6.0)] if style.sub808 else []
    effects.append(_lowpass(_tone(style, 400.0, 900.0, 2000.0), 0.15))
    mono = _fx(effects, buf, sr, progress.sub(NOTES_SHARE, 1.0))[0]
    return np.stack([mono, mono])


def render_keys(
    notes: list[Note], n: int, grid: Grid, style: Style, rng: np.random.Generator, progress: Progress
) -> np.ndarray:
    """Chord notes -> ``[2, n]``: FM electric piano, voices spread by pitch, chorus and a little room.

    The tone goes through the low-pass; the tine's strike (a 10 ms noise tick) joins after it, so every
    attack stays crisp even when a chord is struck again over its own ringing.
    """
    sr = grid.sample_rate
    tone = np.zeros((2, n))
    ticks = np.zeros((2, n))
    tick_len = int(0.01 * sr)
    tick_env = np.exp(-np.arange(tick_len) / (0.0015 * sr))
    for note in _each(notes, progress):
        f0 = midi_hz(note.pitch)
        env = adsr(note.length, sr, 0.002, 0.9 + 0.02 * (80 - note.pitch), 0.2, 0.15)
        t = np.arange(env.size, dtype=np.float32) / np.float32(sr)
        cycles = phases(f0, env.size, sr)
        angle = (TWO_PI * (cycles - np.floor(cycles))).astype(np.float32)
        index = np.float32(0.6 + 1.6 * note.velocity) * np.exp(t / np.float32(-0.35)) + np.float32(0.15)
        x = np.sin(angle + index * np.sin(angle))  # two-operator FM, 1:1
        tine = min(env.size, int(0.25 * sr))  # a bright 4th harmonic that dies in a few tens of ms
        x[:tine] += (
            np.float32(0.1 * note.velocity) * sine(4.0 * cycles[:tine]) * np.exp(t[:tine] / np.float32(-0.04))
        )
        position = (note.pitch - 65) / 14.0
        _add(tone, pan(note.velocity * env * x, position), note.start)
        _add(
            ticks, pan(0.06 * note.velocity * rng.standard_normal(tick_len) * tick_env, position), note.start
        )
    tone = _fx(
        [_lowpass(_tone(style, 1500.0, 4000.0, 8000.0), 0.0)], tone, sr, progress.sub(NOTES_SHARE, 0.8)
    )
    space: list[pb.Plugin] = [
        pb.Chorus(rate_hz=0.6, depth=0.25, centre_delay_ms=3.0, mix=0.25),
        pb.Reverb(room_size=0.35, wet_level=0.12, dry_level=0.9),
    ]
    return _fx(space, tone + ticks, sr, progress.sub(0.8, 1.0))


def render_pad(
    notes: list[Note], n: int, grid: Grid, style: Style, rng: np.random.Generator, progress: Progress
) -> np.ndarray:
    """Chord notes -> ``[2, n]``: three detuned saws per note (left, centre, right), slow attack, wide."""
    sr = grid.sample_rate
    attack = min(0.8, 0.4 * grid.samples_per_bar / sr)
    buf = np.zeros((2, n))
    for note in _each(notes, progress):
        f0 = midi_hz(note.pitch)
        env = adsr(note.length, sr, attack, 1.0, 1.0, 0.8)
        phases = rng.random(3)
        left, mid, right = (
            saw(f0 * 2.0 ** (c / 1200.0), env.size, sr, ph) for c, ph in zip((-8, 0, 8), phases, strict=True)
        )
        x = np.stack([left + 0.6 * mid, right + 0.6 * mid]) * (0.5 * note.velocity * env)
        _add(buf, x, note.start)
    board: list[pb.Plugin] = [
        _lowpass(_tone(style, 700.0, 1400.0, 2800.0), 0.1),
        pb.Chorus(rate_hz=0.3, depth=0.3, mix=0.4),
        pb.Reverb(room_size=0.75, damping=0.5, wet_level=0.3, dry_level=0.8, width=1.0),
    ]
    return _fx(board, buf, sr, progress.sub(NOTES_SHARE, 1.0))


def render_lead(
    notes: list[Note], n: int, grid: Grid, style: Style, rng: np.random.Generator, progress: Progress
) -> np.ndarray:
    """Melody notes -> ``[2, n]``: saw + square, resonant low-pass, dotted-8th delay, centred."""
    sr = grid.sample_rate
    buf = np.zeros((1, n))
    for note, limit in zip(_each(notes, progress), mono_limits(notes, int(MUTE_S * sr)), strict=True):
        f0 = midi_hz(note.pitch)
        env = choke(adsr(note.length, sr, 0.004, 0.2, 0.7, 0.06), limit, sr)
        x = 0.6 * saw(f0, env.size, sr) + 0.4 * square(f0, env.size, sr)
        _add(buf, (note.velocity * env * x)[None, :], note.start)
    mono = _fx(
        [_lowpass(_tone(style, 1200.0, 2600.0, 5000.0), 0.25)], buf, sr, progress.sub(NOTES_SHARE, 0.8)
    )[0]
    space: list[pb.Plugin] = [
        pb.Delay(delay_seconds=0.75 * grid.seconds_per_quarter, feedback=0.3, mix=0.2),
        pb.Reverb(room_size=0.4, wet_level=0.12, dry_level=0.9, width=0.8),
    ]
    return _fx(space, np.stack([mono, mono]), sr, progress.sub(0.8, 1.0))


Renderer = Callable[[list[Note], int, Grid, Style, np.random.Generator, Progress], np.ndarray]
RENDERERS: dict[str, Renderer] = {
    "bass": render_bass,
    "drums": render_drums,
    "keys": render_keys,
    "pad": render_pad,
    "lead": render_lead,
}
