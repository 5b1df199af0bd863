"""Variation effects on long inputs: plugins run block by block give the one-call result and report progress."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pedalboard as pb
import pytest

from bridge.audio.timing import Grid
from bridge.engines.builtin.vary import vary
from bridge.engines.builtin.vary_effects import CHUNK, process_in_chunks
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


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_whole_song_effects_report_every_chunk(seed: int, song_mix: np.ndarray) -> None:
    """At strength 1 these seeds draw a whole-song effect on a 60 s input (1: filter sweep, 3: chorus,
    4: phaser); the variation then reports at least once per ``CHUNK`` samples, where a single call over
    the song would leave one long gap (before the effects ran in blocks, a variation made 7-12 calls)."""
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
        if len(calls) == 20:  # well inside the whole-song chorus of seed 3
            raise Cancelled()

    with pytest.raises(Cancelled):
        vary(audio, SR, 1, 1.0, 3, grid=GRID_120, progress=cancel_mid_effect)
    assert len(calls) == 20
    assert 0.3 < calls[-1] < 0.9  # during the timbre stage
