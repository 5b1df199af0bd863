"""Variations: exact shapes, determinism, grid-locked rearrangement, click-free joints, level, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from bridge.audio.timing import Grid
from bridge.engines.builtin import BuiltinEngine
from bridge.engines.builtin.vary import vary
from bridge.errors import Cancelled, InvalidArgument
from tests import synth

SR = synth.SR
GRID_120 = Grid(120.0, sample_rate=SR)


def _drums(bpm: float = 120.0, bars: int = 4, peak: float = 0.8) -> np.ndarray:
    """A stereo drum loop scaled to ``peak`` (the raw synth loop peaks above 0 dBFS)."""
    mono, _ = synth.drum_loop(bpm, bars)
    mono = mono / np.max(np.abs(mono)) * peak
    return np.stack([mono, mono]).astype(np.float32)


def _sine_loop(bpm: float = 120.0, bars: int = 4, freq: float = 220.0) -> np.ndarray:
    """A stereo sine that loops seamlessly over ``bars`` bars (a whole number of cycles)."""
    n = GRID_120.samples_for_bars(bars) if bpm == 120.0 else Grid(bpm, sample_rate=SR).samples_for_bars(bars)
    t = np.arange(n) / SR
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([tone, 0.8 * tone]).astype(np.float32)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _rms_db(a: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(a, dtype=np.float64)) + 1e-20))


def _hf_flux(audio: np.ndarray, hop: int = 128) -> np.ndarray:
    """Positive spectral flux above 1.5 kHz (attacks of snares and hats), one value per hop."""
    mono = audio.mean(axis=0).astype(np.float64)
    freqs, _, spec = signal.stft(mono, fs=SR, nperseg=512, noverlap=512 - hop, boundary="even", padded=True)
    mag = np.log1p(100 * np.abs(spec[freqs >= 1500.0]))
    return np.concatenate([[0.0], np.maximum(0.0, np.diff(mag, axis=1)).sum(axis=0)])


def _onsets(audio: np.ndarray, threshold: float, hop: int = 128) -> np.ndarray:
    """Sample positions of flux peaks above ``threshold`` that are the largest within +-25 ms."""
    flux = _hf_flux(audio, hop)
    reach = 8
    peaks = [
        i * hop
        for i in range(1, flux.size - 1)
        if flux[i] >= threshold and flux[i] == flux[max(0, i - reach) : i + reach + 1].max()
    ]
    return np.asarray(peaks)


def _off_grid_ms(onsets: np.ndarray, grid: Grid) -> np.ndarray:
    step = grid.samples_per_step
    return np.abs(onsets - np.round(onsets / step) * step) / SR * 1000.0


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("layout", ["1d", "mono", "stereo"])
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_shape_dtype_and_length_are_exact(layout: str, strength: float) -> None:
    stereo = _drums(bars=2)[:, : GRID_120.samples_for_bars(2) - 1237]  # an odd length, not whole bars
    audio = {"1d": stereo[0], "mono": stereo[:1], "stereo": stereo}[layout]
    outs = vary(audio, SR, 3, strength, seed=1, grid=GRID_120)
    assert len(outs) == 3
    for out in outs:
        assert out.shape == audio.shape
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out))
        assert np.max(np.abs(out)) <= 1.0
        assert not np.array_equal(out, audio)


def test_short_and_float64_input() -> None:
    tiny = np.random.default_rng(0).standard_normal((2, 1001)) * 0.1  # float64, shorter than a 16th
    outs = vary(tiny, SR, 2, 0.8, seed=3)
    assert [o.shape for o in outs] == [(2, 1001), (2, 1001)]
    assert all(o.dtype == np.float32 and np.all(np.isfinite(o)) for o in outs)


def test_strength_zero_is_bit_identical() -> None:
    audio = _drums()
    outs = vary(audio, SR, 4, 0.0, seed=9, grid=GRID_120)
    for out in outs:
        assert np.array_equal(out, audio)
        assert out is not audio


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_samples_and_prefix_property(song_mix: np.ndarray) -> None:
    a = vary(song_mix, SR, 2, 0.7, seed=42, grid=GRID_120)
    b = vary(song_mix, SR, 4, 0.7, seed=42, grid=GRID_120)
    for x, y in zip(a, b[:2], strict=True):
        assert np.array_equal(x, y)
    c = vary(song_mix, SR, 2, 0.7, seed=42, grid=GRID_120)
    assert all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("material", ["drums", "mix"])
def test_seeds_and_variations_differ(material: str, song_mix: np.ndarray) -> None:
    audio = _drums() if material == "drums" else song_mix
    strong = vary(audio, SR, 3, 1.0, seed=1, grid=GRID_120)
    other_seed = vary(audio, SR, 1, 1.0, seed=2, grid=GRID_120)[0]
    assert _corr(strong[0], strong[1]) < 0.6
    assert _corr(strong[1], strong[2]) < 0.6
    assert _corr(strong[0], other_seed) < 0.6
    assert max(_corr(v, audio) for v in strong) < 0.6
    # a light touch stays close to the original, yet every variation is different
    light = vary(audio, SR, 3, 0.1, seed=1, grid=GRID_120)
    for v in light:
        assert _corr(v, audio) > 0.6
    assert not np.array_equal(light[0], light[1])
    assert not np.array_equal(light[1], light[2])
    assert not np.array_equal(light[0], vary(audio, SR, 1, 0.1, seed=2, grid=GRID_120)[0])


# ---------------------------------------------------------------------------------------------- musical checks


@pytest.mark.parametrize("bpm", [90.0, 174.0])
def test_drum_onsets_stay_on_the_16th_grid(bpm: float) -> None:
    audio = _drums(bpm)
    grid = Grid(bpm, sample_rate=SR)
    threshold = 0.3 * _hf_flux(audio).max()
    reference = _onsets(audio, threshold)
    assert _off_grid_ms(reference, grid).max() < 3.0  # the detector itself is on time
    for seed in range(3):
        for out in vary(audio, SR, 2, 0.5, seed, grid=None):  # grid inferred from the loop
            found = _onsets(out, threshold)
            assert found.size >= 0.5 * reference.size
            assert _off_grid_ms(found, grid).max() <= 10.0
        # at full strength reversed slices swell into the grid: their rise starts a little early
        for out in vary(audio, SR, 2, 1.0, seed, grid=grid):
            found = _onsets(out, threshold)
            assert found.size >= 1
            assert _off_grid_ms(found, grid).max() <= 20.0


def test_joints_do_not_click() -> None:
    """A seamless sine loop, rearranged hard: no sample-to-sample step far beyond the sine's own slope.

    A hard cut between two phases of the sine would jump by up to twice its amplitude, 60 times its
    steepest slope; equal-power crossfades and gate ramps keep the steepest step under 2.5 times it.
    """
    audio = _sine_loop()
    steepest = np.max(np.abs(np.diff(audio, axis=1)))
    changed = 0
    for seed in range(4):
        for out in vary(audio, SR, 2, 0.6, seed, grid=GRID_120, pitch=False, effects=False):
            wrapped = np.concatenate([out, out[:, :1]], axis=1)  # the loop point is a joint too
            assert np.max(np.abs(np.diff(wrapped, axis=1))) < 2.5 * steepest
            changed += int(not np.array_equal(out, audio))
    assert changed == 8


def test_pitch_changes_are_musical_intervals() -> None:
    """Without pitch the energy of a 220 Hz loop stays at 220 Hz; with it, it moves by 4ths, 5ths, octaves.

    Energy is counted within half a semitone of each interval (cuts and gates spread a little around it).
    """
    audio = _sine_loop()
    freqs = np.fft.rfftfreq(audio.shape[1], 1 / SR)
    semitones = 12 * np.log2(np.maximum(freqs, 1.0) / 220.0)
    intervals = (0, 5, 7, 12, -5, -7, -12)

    def share(out: np.ndarray) -> dict[int, float]:
        power = np.abs(np.fft.rfft(out.mean(axis=0))) ** 2
        return {k: float(power[np.abs(semitones - k) < 0.5].sum() / power.sum()) for k in intervals}

    for out in vary(audio, SR, 3, 1.0, seed=0, grid=GRID_120, pitch=False, effects=False):
        assert share(out)[0] > 0.85
    moved = 0
    for out in vary(audio, SR, 6, 1.0, seed=0, grid=GRID_120, pitch=True, effects=False):
        shares = share(out)
        assert sum(shares.values()) > 0.6, shares
        moved += int(sum(v for k, v in shares.items() if k) > 0.05)
    assert moved >= 2


@pytest.mark.parametrize("material", ["drums", "mix", "hot"])
def test_level_within_3_db_and_below_full_scale(material: str, song_mix: np.ndarray) -> None:
    if material == "hot":  # the raw synth loop peaks at +3.4 dBFS: the output still must not
        mono, _ = synth.drum_loop(120.0, 4)
        audio = np.stack([mono, mono])
    else:
        audio = _drums() if material == "drums" else song_mix
    for strength in (0.3, 1.0):
        for out in vary(audio, SR, 4, strength, seed=5, grid=GRID_120):
            assert np.max(np.abs(out)) <= 1.0
            if material != "hot":
                assert abs(_rms_db(out) - _rms_db(audio)) <= 3.0


# ---------------------------------------------------------------------------------------------- errors, progress


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (0, "between 1 and 16, got 0"),
        (17, "between 1 and 16, got 17"),
        (2.5, "whole number"),
        (True, "whole"),
    ],
)
def test_bad_variation_count(n: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        vary(_sine_loop(bars=1), SR, n, 0.5, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "strong"])
def test_bad_strength(strength: object) -> None:
    with pytest.raises(InvalidArgument, match=r"strength must be (a number )?between 0 and 1, got"):
        vary(_sine_loop(bars=1), SR, 2, strength, seed=0)  # type: ignore[arg-type]


def test_bad_audio_and_seed() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        vary(np.zeros((2, 0), np.float32), SR, 1, 0.5, seed=0)
    with pytest.raises(InvalidArgument, match="NaN"):
        vary(np.full((2, 100), np.nan, np.float32), SR, 1, 0.5, seed=0)
    with pytest.raises(InvalidArgument, match=r"\[channels, samples\]"):
        vary(np.zeros((2, 2, 100), np.float32), SR, 1, 0.5, seed=0)
    with pytest.raises(InvalidArgument, match="seed must be a whole number, got 1.5"):
        vary(_sine_loop(bars=1), SR, 1, 0.5, seed=1.5)  # type: ignore[arg-type]


def test_progress_reports_each_variation_and_ends_at_one() -> None:
    seen: list[tuple[float, str]] = []
    vary(_drums(bars=1), SR, 3, 0.5, seed=0, grid=GRID_120, progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert seen[-1] == (1.0, "vary 3/3")
    assert [s for _, s in seen if s.startswith("vary")][0] == "vary 1/3"
    assert {s for _, s in seen} == {"analyse", "vary 1/3", "vary 2/3", "vary 3/3"}


def test_cancel_from_the_callback_propagates() -> None:
    calls: list[str] = []

    def cancel_on_second(fraction: float, stage: str) -> None:
        calls.append(stage)
        if stage == "vary 2/4":
            raise Cancelled()

    with pytest.raises(Cancelled):
        vary(_drums(bars=1), SR, 4, 0.5, seed=0, grid=GRID_120, progress=cancel_on_second)
    assert calls[-1] == "vary 2/4"
    assert "vary 3/4" not in calls


def test_builtin_engine_routes_here() -> None:
    audio = _drums(bars=1)
    outs = BuiltinEngine().vary(audio, SR, 2, 0.5, 7, GRID_120)
    direct = vary(audio, SR, 2, 0.5, 7, GRID_120)
    assert all(np.array_equal(a, b) for a, b in zip(outs, direct, strict=True))
