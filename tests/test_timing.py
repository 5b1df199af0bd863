from fractions import Fraction

import numpy as np
import pytest

from bridge.audio.timing import Grid, TimeSignature, bpm_from_length, check_bars, check_bpm
from bridge.errors import InvalidArgument


@pytest.mark.parametrize(
    ("bpm", "sig", "sr", "bars", "expected"),
    [
        (120, "4/4", 44100, 8, 705600),  # 16 s
        (120, "6/8", 44100, 2, 132300),  # 3 quarters a bar -> 1.5 s a bar
        (120, "7/8", 48000, 4, 336000),  # 3.5 quarters a bar
        (93, "4/4", 44100, 1, int(round(4 * 60 / 93 * 44100))),
        (174, "3/4", 48000, 16, int(round(16 * 3 * 60 / 174 * 48000))),
    ],
)
def test_samples_for_bars_is_exact(bpm: float, sig: str, sr: int, bars: int, expected: int) -> None:
    assert Grid(bpm, TimeSignature.parse(sig), sr).samples_for_bars(bars) == expected


def test_positions_do_not_drift() -> None:
    grid = Grid(93.7, TimeSignature(4, 4), 44100)
    steps = grid.step_positions(256)
    exact = np.arange(256 * 16) * 44100 * 60 / 93.7 / 4
    assert np.max(np.abs(steps - exact)) <= 0.5
    assert steps[-1] + round(grid.samples_per_step) == pytest.approx(grid.samples_for_bars(256), abs=1)
    assert list(grid.bar_positions(3)) == [0, grid.samples_for_bars(1), grid.samples_for_bars(2)]


def test_time_signature_math() -> None:
    assert TimeSignature.parse("6/8").quarters_per_bar == Fraction(3)
    assert TimeSignature.parse("7/8").sixteenths_per_bar == 14
    assert TimeSignature.parse("3:4").sixteenths_per_bar == 12
    assert TimeSignature.parse("6/8").steps_per_beat == 2
    assert str(TimeSignature(5, 4)) == "5/4"


@pytest.mark.parametrize("text", ["4", "4/3", "0/4", "a/b", "4/4/4", ""])
def test_bad_time_signature(text: str) -> None:
    with pytest.raises(InvalidArgument, match="time signature"):
        TimeSignature.parse(text)


@pytest.mark.parametrize("bpm", [0, 19.9, 400.1, float("nan"), float("inf"), -120])
def test_bpm_range_message(bpm: float) -> None:
    with pytest.raises(InvalidArgument, match="bpm must be between 20 and 400"):
        check_bpm(bpm)


def test_bpm_message_names_value() -> None:
    with pytest.raises(InvalidArgument, match=r"got 0$"):
        check_bpm(0)


@pytest.mark.parametrize("bars", [0, 257, 2.5, float("nan")])
def test_bars_range(bars: float) -> None:
    with pytest.raises(InvalidArgument, match="bars must be a whole number between 1 and 256"):
        check_bars(bars)


def test_bars_accepts_whole_floats() -> None:
    assert check_bars(8.0) == 8
    assert isinstance(check_bars(8.0), int)


def test_bpm_from_length_round_trip() -> None:
    ts = TimeSignature(4, 4)
    n = Grid(127.5, ts, 48000).samples_for_bars(4)
    assert bpm_from_length(n, 48000, 4, ts) == pytest.approx(127.5, abs=1e-3)
