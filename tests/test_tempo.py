"""Tempo estimation and grid inference on synthetic loops with known tempo."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio.tempo import estimate_bars, estimate_tempo, infer_grid
from bridge.audio.timing import Grid, TimeSignature
from bridge.errors import InvalidArgument
from tests import synth

SR = synth.SR


def _loop(bpm: float, bars: int = 4) -> np.ndarray:
    mono, _ = synth.drum_loop(bpm, bars)
    return np.stack([mono, mono]).astype(np.float32)


@pytest.mark.parametrize("bpm", [90.0, 120.0, 140.0, 174.0])
def test_drum_loop_tempo_within_one_bpm(bpm: float) -> None:
    estimate = estimate_tempo(_loop(bpm), SR)
    assert abs(estimate - bpm) < 1.0, f"{bpm} bpm loop estimated at {estimate:.2f}"


def test_tempo_has_sub_integer_precision() -> None:
    estimate = estimate_tempo(_loop(127.5), SR)
    assert abs(estimate - 127.5) < 0.3


def test_song_mix_and_bass_alone(song: dict[str, np.ndarray], song_mix: np.ndarray) -> None:
    assert abs(estimate_tempo(song_mix, SR) - 120.0) < 1.0
    # even 8th notes pulse at 240; octave folding brings that into the range
    assert abs(estimate_tempo(song["bass"], SR) - 120.0) < 1.0


def test_long_audio_uses_windows() -> None:
    mono, _ = synth.drum_loop(128.0, 16)  # 30 s: scored in overlapping windows
    assert abs(estimate_tempo(mono, SR) - 128.0) < 1.0


def test_range_is_respected_and_silence_falls_back() -> None:
    estimate = estimate_tempo(_loop(174.0), SR, bpm_range=(60.0, 120.0))
    assert 60.0 <= estimate <= 120.0
    assert abs(estimate - 87.0) < 1.0  # the same pulse, an octave down
    assert estimate_tempo(np.zeros((2, SR * 4), np.float32), SR) == 120.0
    assert estimate_tempo(np.zeros((2, 100), np.float32), SR) == 120.0


@pytest.mark.parametrize("bad", [(200.0, 60.0), (10.0, 100.0), (100.0, 105.0), ("a", "b"), (60.0,)])
def test_bad_range_is_rejected(bad: tuple[float, ...]) -> None:
    with pytest.raises(InvalidArgument, match="bpm_range"):
        estimate_tempo(_loop(120.0, 1), SR, bpm_range=bad)  # type: ignore[arg-type]


def test_estimate_bars() -> None:
    assert estimate_bars(352800, SR, 120.0, TimeSignature(4, 4)) == 4
    assert estimate_bars(int(352800 * 1.1), SR, 120.0, TimeSignature(4, 4)) == 4
    assert estimate_bars(int(352800 * 1.15), SR, 120.0, "4/4") == 5
    assert estimate_bars(100, SR, 120.0, "4/4") == 1
    assert estimate_bars(0, SR, 120.0, "4/4") == 1
    # 6/8 at 120 bpm: 3 quarters = 1.5 s per bar
    assert estimate_bars(6 * SR, SR, 120.0, "6/8") == 4
    with pytest.raises(InvalidArgument, match="bpm"):
        estimate_bars(1000, SR, 0.0, "4/4")


def test_infer_grid_bpm_given_wins() -> None:
    grid = infer_grid(_loop(120.0, 1), SR, bpm=97.5, bars=8, time_signature="3/4")
    assert grid == Grid(97.5, TimeSignature(3, 4), SR)


def test_infer_grid_from_bars() -> None:
    audio = np.zeros((2, 7 * SR), np.float32)
    grid = infer_grid(audio, SR, bars=4)
    assert grid.bpm == pytest.approx(4 * 4 * 60 / 7.0)
    assert grid.samples_for_bars(4) == 7 * SR
    with pytest.raises(InvalidArgument, match=r"100 bars .* outside 20 to 400; check the bar count"):
        infer_grid(audio, SR, bars=100)
    with pytest.raises(InvalidArgument, match="bars"):
        infer_grid(audio, SR, bars=0)


def test_infer_grid_snaps_loops_to_whole_bars() -> None:
    audio = _loop(174.0)
    grid = infer_grid(audio, SR)
    assert grid.samples_for_bars(4) == audio.shape[1]
    assert grid.bpm == pytest.approx(174.0, abs=0.01)
    # cut 3/4 of a bar long: no whole bar count within 2 %, the estimate stands
    longer = np.concatenate([_loop(120.0), _loop(120.0, 1)[:, : 3 * SR // 2]], axis=1)
    grid = infer_grid(longer, SR)
    assert abs(grid.bpm - 120.0) < 1.0
    assert abs(grid.bars_in(longer.shape[1]) - round(grid.bars_in(longer.shape[1]))) > 0.1
