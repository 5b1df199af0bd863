"""Loudness (BS.1770-4) and post-processing of generated parts: length, fades, loudness match, limiter."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio.loudness import integrated_loudness, k_weighting_sos, loudness_gain_db, true_peak
from bridge.audio.post import apply_fades, finish, fit_length, match_loudness, peak_limit
from bridge.errors import InvalidArgument
from tests.synth import drum_loop, faded_sine

CEILING = 10 ** (-1.0 / 20)


def stereo_sine(freq: float, seconds: float, sr: int, peak_dbfs: float) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = 10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.stack([x, x]).astype(np.float32)


def noise(seconds: float, sr: int, rms_dbfs: float, seed: int = 0, channels: int = 2) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((channels, int(seconds * sr)))
    return (x * 10 ** (rms_dbfs / 20)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ loudness


def test_k_weighting_matches_published_48k_coefficients() -> None:
    published = np.array(
        [
            [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
            [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
        ]
    )
    np.testing.assert_allclose(k_weighting_sos(48000), published, atol=1e-6, rtol=0)


def test_k_weighting_response_is_the_same_at_44k1() -> None:
    from scipy.signal import sosfreqz

    freqs = np.array([20.0, 50.0, 100.0, 997.0, 2000.0, 5000.0, 10000.0])
    responses = [
        20 * np.log10(np.abs(sosfreqz(k_weighting_sos(sr), worN=freqs, fs=sr)[1])) for sr in (44100, 48000)
    ]
    np.testing.assert_allclose(responses[0], responses[1], atol=0.05)
    assert 3.5 < responses[1][-1] < 4.5 and responses[1][0] < -10  # +4 dB shelf, RLB high-pass


@pytest.mark.parametrize("sr", [44100, 48000])
def test_reference_sine_measures_minus_23_lufs(sr: int) -> None:
    assert integrated_loudness(stereo_sine(997.0, 10.0, sr, -23.0), sr) == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_relative_gate_ignores_the_quiet_half(sr: int) -> None:
    # EBU Tech 3341 style: -20 dBFS then -40 dBFS; the quiet half falls under the -10 LU relative gate.
    x = np.concatenate([stereo_sine(997.0, 10.0, sr, -20.0), stereo_sine(997.0, 10.0, sr, -40.0)], axis=1)
    assert integrated_loudness(x, sr) == pytest.approx(-20.0, abs=0.1)
    # Silence is under the absolute gate; only the 3 blocks straddling the end of the tone (75, 50, 25 % tone)
    # count beside the 47 blocks of pure tone.
    with_silence = np.concatenate(
        [stereo_sine(997.0, 5.0, sr, -23.0), np.zeros((2, 5 * sr), np.float32)], axis=1
    )
    expected = -23.0 + 10 * np.log10((47 + 0.75 + 0.5 + 0.25) / 50)
    assert integrated_loudness(with_silence, sr) == pytest.approx(expected, abs=0.01)


def test_loudness_of_silence_short_audio_and_mono() -> None:
    assert integrated_loudness(np.zeros((2, 48000), np.float32), 48000) == float("-inf")
    short = stereo_sine(997.0, 0.2, 48000, -23.0)  # shorter than one 400 ms block: measured whole
    assert integrated_loudness(short, 48000) == pytest.approx(-23.0, abs=0.1)
    mono = stereo_sine(997.0, 2.0, 48000, -23.0)[:1]  # one channel carries half the power of two
    assert integrated_loudness(mono, 48000) == pytest.approx(-26.0, abs=0.1)


def test_loudness_gain() -> None:
    x = stereo_sine(997.0, 3.0, 48000, -23.0)
    assert loudness_gain_db(x, 48000, -14.0) == pytest.approx(9.0, abs=0.1)
    assert loudness_gain_db(np.zeros((2, 1000), np.float32), 48000, -14.0) == 0.0
    with pytest.raises(InvalidArgument, match="target loudness must be between -70 and 0 LUFS, got 5"):
        loudness_gain_db(x, 48000, 5)


def test_true_peak_finds_the_crest_between_samples() -> None:
    """A sine at a quarter of the rate, sampled 45 degrees off its crests: every sample is at 0.707 of its
    amplitude, the waveform between them reaches all of it (across the blocks it is measured in, too)."""
    sr = 48000
    n = np.arange(200_000)
    x = 0.5 * np.sin(np.pi / 2 * n + np.pi / 4) * np.clip(np.minimum(n, n[-1] - n) / 2000, 0, 1)  # faded
    audio = np.stack([x, 0.5 * x]).astype(np.float32)
    assert np.max(np.abs(audio)) == pytest.approx(0.5 * np.sqrt(0.5), abs=1e-6)
    assert true_peak(audio, sr) == pytest.approx(0.5, abs=0.0005)
    assert true_peak(audio, 192000) == np.max(np.abs(audio))  # at 176.4 kHz and up the samples are enough
    assert true_peak(np.zeros((2, 0), np.float32), sr) == 0.0


def test_finish_keeps_true_peaks_under_the_ceiling() -> None:
    """Samples limited to the ceiling can still draw a waveform 3 dB over it (a quarter-rate tone off its
    crests); finish brings that under the ceiling too."""
    sr = 44100
    tone = 1.5 * np.sin(np.pi / 2 * np.arange(sr) + np.pi / 4).astype(np.float32)  # samples at +0.5 dBFS
    out = finish(np.stack([tone, tone]), sr, sr)
    assert np.max(np.abs(out)) <= CEILING and true_peak(out, sr) <= CEILING
    assert true_peak(out, sr) == pytest.approx(CEILING, rel=0.01)  # brought down to the ceiling, no further


# ------------------------------------------------------------------------------------------ length, fades


def test_fit_length_trims_with_a_fade_and_pads_with_silence() -> None:
    sr = 48000
    x = np.ones((2, 1000), np.float32)
    cut = fit_length(x, 700, sr, fade_ms=5.0)  # 240-sample fade ending at the cut
    assert cut.shape == (2, 700)
    assert np.all(cut[:, :460] == 1.0) and np.all(cut[:, -1] < 1e-3)
    assert np.all(np.diff(cut[0, 460:]) <= 0)
    padded = fit_length(x, 1500, sr)
    assert padded.shape == (2, 1500)
    assert np.all(padded[:, :1000] == 1.0) and np.all(padded[:, 1000:] == 0.0)
    assert np.array_equal(fit_length(x, 1000, sr), x)
    with pytest.raises(InvalidArgument, match="n_samples must be a whole number >= 1, got 0"):
        fit_length(x, 0, sr)


def test_apply_fades_raised_cosine() -> None:
    sr = 1000
    x = np.ones((1, 100), np.float32)
    y = apply_fades(x, sr, fade_in_ms=10.0, fade_out_ms=20.0)
    assert y[0, 0] == 0.0 and y[0, -1] < 0.01
    np.testing.assert_allclose(y[0, :10], 0.5 - 0.5 * np.cos(np.pi * np.arange(10) / 10), atol=1e-7)
    assert np.all(y[0, 10:80] == 1.0)
    assert np.all(np.diff(y[0, 80:]) < 0)
    assert np.array_equal(x, np.ones((1, 100), np.float32))  # input untouched
    with pytest.raises(InvalidArgument, match="fade_in_ms must be between 0 and 60000 ms, got -1"):
        apply_fades(x, sr, -1, 0)


# ------------------------------------------------------------------------------------------------- limiter


def test_limiter_holds_the_ceiling_on_hot_material() -> None:
    sr = 44100
    loop, _ = drum_loop(120.0, 2, sr=sr)
    hot = (np.atleast_2d(loop) * 8.0).astype(np.float32)  # peaks far over full scale
    hot = np.concatenate([hot, noise(1.0, sr, 0.0, channels=hot.shape[0])], axis=1)
    assert np.abs(hot).max() > 4.0
    out = peak_limit(hot, sr, ceiling_db=-1.0)
    assert out.shape == hot.shape and out.dtype == np.float32
    assert np.abs(out).max() <= CEILING
    assert np.abs(out).max() > CEILING * 0.99  # limited to the ceiling, not far under it
    assert np.abs(peak_limit(hot, sr, ceiling_db=-6.0)).max() <= 10 ** (-6 / 20)


def test_limiter_leaves_quiet_audio_bit_identical() -> None:
    x = noise(1.0, 48000, -20.0)
    x *= np.float32(CEILING / np.abs(x).max())  # peak exactly at the ceiling
    y = peak_limit(x, 48000, ceiling_db=-1.0)
    assert np.array_equal(y, x) and y is not x


def test_limiter_does_not_distort_a_steady_tone() -> None:
    sr = 48000
    x = stereo_sine(1000.0, 1.0, sr, +6.0)  # 7 dB over the ceiling
    y = peak_limit(x, sr, ceiling_db=-1.0)
    steady = slice(sr // 4, 3 * sr // 4)
    gain = y[0, steady] / np.where(np.abs(x[0, steady]) > 0.1, x[0, steady], np.nan)
    gain = gain[np.isfinite(gain)]
    assert 20 * np.log10(np.median(gain)) == pytest.approx(-7.0, abs=0.05)
    assert np.ptp(gain) < 1e-3  # a constant gain, not a clipper's flattened tops
    spectrum = np.abs(np.fft.rfft(y[0, steady] * np.hanning(sr // 2)))
    harmonics = spectrum[[3000 // 2, 5000 // 2]].max() / spectrum[1000 // 2]  # 2 Hz bins
    assert 20 * np.log10(harmonics + 1e-12) < -80


def test_limiter_looks_ahead_and_releases() -> None:
    sr = 48000
    x = stereo_sine(200.0, 1.0, sr, -12.0)
    spike = sr // 2
    x[:, spike] = 2.0  # one hot sample
    y = peak_limit(x, sr, ceiling_db=-1.0, lookahead_ms=5.0, release_ms=100.0)
    assert np.all(np.abs(y) <= CEILING)
    reduction = np.abs(y[0]) / np.maximum(np.abs(x[0]), 1e-9)
    active = np.abs(x[0]) > 0.05
    assert np.all(
        reduction[: spike - 300][active[: spike - 300]] == pytest.approx(1.0, abs=1e-6)
    )  # untouched before
    assert reduction[spike - 60] < 0.99  # the gain is already falling 1.25 ms before the spike
    after = spike + int(0.35 * sr)  # 7 dB needs ~117 ms to recover at 6 dB / 100 ms (plus the look-ahead)
    assert np.all(reduction[after:][active[after:]] == pytest.approx(1.0, abs=1e-6))


def test_limiter_is_deterministic_and_validates() -> None:
    x = noise(0.5, 44100, 0.0)
    assert np.array_equal(peak_limit(x, 44100), peak_limit(x, 44100))
    with pytest.raises(InvalidArgument, match="ceiling_db must be between -60 and 0 dBFS, got 3"):
        peak_limit(x, 44100, ceiling_db=3)


# ------------------------------------------------------------------------------------- loudness match, finish


def test_match_loudness() -> None:
    sr = 48000
    x = noise(3.0, sr, -40.0)
    y = match_loudness(x, sr, -20.0)
    assert integrated_loudness(y, sr) == pytest.approx(-20.0, abs=0.05)
    quiet = noise(3.0, sr, -65.0)
    clamped = match_loudness(quiet, sr, -10.0, max_gain_db=20.0)
    gain_db = integrated_loudness(clamped, sr) - integrated_loudness(quiet, sr)
    assert gain_db == pytest.approx(20.0, abs=1e-3)
    silence = np.zeros((2, sr), np.float32)
    assert np.array_equal(match_loudness(silence, sr, -14.0), silence)


@pytest.mark.parametrize("frames", [30000, 44100, 60000])
def test_finish_exact_length_never_clips(frames: int) -> None:
    sr = 44100
    x = (
        np.stack([faded_sine(110.0, frames / sr, sr=sr, amp=1.5)] * 2)
        + noise(frames / sr, sr, -10.0)[:, :frames]
    )
    out = finish(x, sr, 44100, target_lufs=-8.0, ceiling_db=-1.0, fade_in_ms=2.0, fade_out_ms=10.0)
    assert out.shape == (2, 44100) and out.dtype == np.float32
    assert np.abs(out).max() <= CEILING
    assert np.all(out[:, 0] == 0.0) and np.abs(out[:, -1]).max() < 1e-3
    if frames < 44100:
        assert np.all(out[:, frames:] == 0.0)


def test_finish_without_target_keeps_level() -> None:
    sr = 48000
    x = stereo_sine(997.0, 2.0, sr, -23.0)
    out = finish(x, sr, sr * 2)
    assert integrated_loudness(out, sr) == pytest.approx(-23.0, abs=0.05)
    np.testing.assert_array_equal(out[:, :sr], x[:, :sr])
