"""Variation effects: block-by-block plugins match one call and report progress; pitch shifts keep level and time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pedalboard as pb
import pytest

from bridge.audio.onsets import onset_strengths
from bridge.audio.timing import Grid
from bridge.engines.builtin.vary import vary
from bridge.engines.builtin.vary_context import analyse
from bridge.engines.builtin.vary_effects import CHUNK, _pitch_shift, _shift_notes, process_in_chunks
from bridge.errors import Cancelled
from tests import synth

SR = synth.SR
GRID_120 = Grid(120.0, sample_rate=SR)


@pytest.mark.parametrize(
    "make",
    [
        lambda: pb.Chorus(rate_hz=0.7, depth=0.3, mix=1.0),
        lambda: pb.Phaser(rate_hz=0.5, depth=0.6, mix=1.0),
        lambda: pb.LowpassFilter(cutoff_frequency_hz=800.0),
        lambda: pb.HighpassFilter(cutoff_frequency_hz=1500.0),
        lambda: pb.Distortion(drive_db=15.0),
        lambda: pb.Bitcrush(bit_depth=7.0),
    ],
    ids=["chorus", "phaser", "lowpass", "highpass", "distortion", "bitcrush"],
)
def test_chunked_plugin_equals_one_call(make: Callable[[], pb.Plugin]) -> None:
    noise = np.random.default_rng(1).standard_normal((2, 3 * CHUNK + 1234)).astype(np.float32) * 0.2
    one_call = make().process(noise, SR)
    ticks: list[float] = []
    chunked = process_in_chunks(make(), noise, SR, ticks.append)
    assert chunked.shape == noise.shape
    np.testing.assert_array_equal(chunked, one_call)  # state carried across blocks: not just close, equal
    assert ticks == [CHUNK / noise.shape[1], 2 * CHUNK / noise.shape[1], 3 * CHUNK / noise.shape[1]]


@pytest.mark.parametrize("seed", [24, 1, 4])
def test_whole_song_effects_report_every_chunk(seed: int, song_mix: np.ndarray) -> None:
    """At strength 1 these seeds draw a whole-song effect on a 60 s input (24: filter sweep, 1: chorus,
    4: bit reduction); the variation then reports at least once per ``CHUNK`` samples, where a single call
    over the song would leave one long gap (before the effects ran in blocks, a variation made 7-12 calls)."""
    audio = np.tile(song_mix, (1, 8))[:, : 60 * SR]
    seen: list[tuple[float, str]] = []
    vary(audio, SR, 1, 1.0, seed, grid=GRID_120, progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert sum(s == "vary 1/1" for _, s in seen) >= int(np.ceil(audio.shape[1] / CHUNK))


def test_cancel_inside_a_long_effect(song_mix: np.ndarray) -> None:
    audio = np.tile(song_mix, (1, 8))[:, : 60 * SR]
    calls: list[float] = []

    def cancel_mid_effect(fraction: float, stage: str) -> None:
        calls.append(fraction)
        if len(calls) == 20:  # well inside the whole-song chorus of seed 1
            raise Cancelled()

    with pytest.raises(Cancelled):
        vary(audio, SR, 1, 1.0, 1, grid=GRID_120, progress=cancel_mid_effect)
    assert len(calls) == 20
    assert 0.3 < calls[-1] < 0.9  # during the timbre stage


@pytest.mark.parametrize("semitones", [12, 7, -5, -12])
def test_pitch_shift_keeps_the_level(semitones: int) -> None:
    """Formants move with the pitch: a shifted bar of chords keeps its level within 1 dB (with Rubber Band's
    formant preservation it came out 7.4 dB quieter an octave down, 5.7 dB louder a fifth up)."""
    t = np.arange(2 * SR) / SR
    chord = sum(np.sin(2 * np.pi * synth.midi_hz(n) * t) for n in (57, 60, 64, 71)) * 0.15
    bar = np.stack([chord, chord]).astype(np.float32)
    shifted = _pitch_shift(bar, SR, semitones)
    assert shifted.shape == bar.shape
    change_db = 20 * np.log10(
        np.sqrt(np.mean(shifted[:, SR // 4 : -SR // 4] ** 2)) / np.sqrt(np.mean(bar**2))
    )
    assert abs(change_db) <= 1.0


@pytest.mark.parametrize("semitones", [12, 7, -7, -12])
def test_notes_keep_their_place_through_a_pitch_shift(semitones: int) -> None:
    """Shifted note by note, a bass line's attacks stay within 3 ms of the grid; shifted in one piece (with
    formants kept, as before), the phase vocoder put them 6 to 26 ms off (an octave down worst)."""
    step = GRID_120.samples_per_step
    line = [45, 48, 52, 47, 41, 43, 38, 40]
    n = int(round(2 * step * 0.8))
    t = np.arange(n) / SR
    env = np.exp(-5 * t) * np.minimum(1.0, 1000 * t) * np.minimum(1.0, (n - np.arange(n)) / 150)
    mono = np.zeros(GRID_120.samples_for_bars(2))
    for k, note in enumerate(line * 2):
        tone = sum(np.sin(2 * np.pi * synth.midi_hz(note) * m * t) / m**0.7 for m in (1, 2, 4, 8, 16))
        mono[int(round(2 * k * step)) :][:n] += 0.25 * tone * env
    audio = np.stack([mono, mono]).astype(np.float32)
    shifted = _shift_notes(analyse(audio, SR, GRID_120), audio, 0, semitones)
    positions, accents = onset_strengths(shifted, SR)
    found = positions[accents >= 0.5 * accents.max()]
    assert found.size >= 14  # 16 notes
    assert np.max(np.abs(found - np.round(found / step) * step)) / SR <= 0.003
