"""Integrated loudness (LUFS) after ITU-R BS.1770-4, at any sample rate.

The K-weighting filter is two biquads: a high shelf (about +4 dB above 2 kHz, modelling the head) and the
RLB high-pass (about 38 Hz). BS.1770 publishes their coefficients for 48 kHz only; here both are derived from
their analog prototypes (centre frequency, Q and gain fitted to the published 48 kHz filters) with the
bilinear transform, pre-warped at the centre frequency, so any rate gets the same response and 48 kHz
reproduces the published coefficients. Loudness is measured on 400 ms blocks overlapping by 75 %, gated at
-70 LUFS absolute and -10 LU relative. True peak (Annex 2) is the sample peak of the signal oversampled to at
least 176.4 kHz.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import firwin, resample_poly, sosfilt

from bridge.errors import InvalidArgument

# Analog prototypes of the two K-weighting stages (fitted to the 48 kHz coefficients of BS.1770-4).
_SHELF_HZ = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_BAND_EXPONENT = 0.4996667741545416  # shelf mid-gain: Vb = Vh ** exponent
_HIGHPASS_HZ = 38.13547087602444
_HIGHPASS_Q = 0.5003270373238773

BLOCK_SECONDS = 0.4
STEP_SECONDS = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_OFFSET = -0.691
_TRUE_PEAK_BLOCK = 1 << 16  # samples oversampled at a time, so memory stays small whatever the length
_TRUE_PEAK_MARGIN = 64  # samples of context each side of a block: more than the interpolator's reach
_TRUE_PEAK_TAPS = 16  # interpolator half-length in input samples; flat to 0.01 % up to 0.9 x Nyquist


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """The K-weighting filter at ``sample_rate`` as second-order sections ``[2, 6]``: shelf, RLB high-pass.

    The high-pass keeps the published numerator ``[1, -2, 1]`` (its small high-frequency gain is part of the
    standard's -0.691 dB calibration).
    """
    if not 1000 <= sample_rate <= 768000:
        raise InvalidArgument(f"sample rate must be between 1000 and 768000 Hz, got {sample_rate}")
    k = math.tan(math.pi * _SHELF_HZ / sample_rate)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh**_SHELF_BAND_EXPONENT
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf = [
        (vh + vb * k / _SHELF_Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / _SHELF_Q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / _SHELF_Q + k * k) / a0,
    ]
    k = math.tan(math.pi * _HIGHPASS_HZ / sample_rate)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _HIGHPASS_Q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 channel weights: 1.0 for L, R, C; 1.41 for the surrounds of 5.0 (L R C Ls Rs) and 5.1
    (L R C LFE Ls Rs, LFE excluded); 1.0 for every channel of any other layout."""
    if channels == 5:
        return np.array([1.0, 1.0, 1.0, 1.41, 1.41])
    if channels == 6:
        return np.array([1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    return np.ones(channels)


def block_powers(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Weighted mean-square power of each 400 ms gating block (75 % overlap) of K-weighted ``audio``.

    Args:
        audio: ``[C, T]`` samples.

    Returns:
        ``[B]`` float64 powers (sum over channels of weight x mean square). A signal shorter than one block
        is measured as a single block over its whole length.
    """
    audio = np.atleast_2d(np.asarray(audio))
    channels, frames = audio.shape
    if frames == 0:
        return np.zeros(0)
    filtered = sosfilt(k_weighting_sos(sample_rate), audio.astype(np.float64), axis=-1)
    weighted = np.einsum("c,ct->t", channel_weights(channels), filtered * filtered)
    block = int(round(BLOCK_SECONDS * sample_rate))
    if frames < block:
        return np.array([weighted.mean()])
    step = int(round(STEP_SECONDS * sample_rate))
    starts = np.arange(0, frames - block + 1, step)
    cumulative = np.concatenate([[0.0], np.cumsum(weighted)])
    powers: np.ndarray = np.maximum((cumulative[starts + block] - cumulative[starts]) / block, 0.0)
    return powers


def _lufs(power: float | np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return _OFFSET + 10.0 * np.log10(power)


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of ``audio`` ``[C, T]`` in LUFS (ITU-R BS.1770-4), ``-inf`` for silence.

    A stereo 997 Hz sine with a peak of -23 dBFS in each channel measures -23.0 LUFS.
    """
    powers = block_powers(audio, sample_rate)
    if powers.size == 0:
        return float("-inf")
    gated = powers[_lufs(powers) > ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return float("-inf")
    relative = float(_lufs(gated.mean())) + RELATIVE_GATE_LU
    gated = gated[_lufs(gated) > relative]
    return float(_lufs(gated.mean()))


def loudness_gain_db(audio: np.ndarray, sample_rate: int, target_lufs: float) -> float:
    """Gain in dB that brings ``audio`` ``[C, T]`` to ``target_lufs``; 0.0 for silence (nothing to scale)."""
    if not np.isfinite(target_lufs) or not -70.0 <= target_lufs <= 0.0:
        raise InvalidArgument(f"target loudness must be between -70 and 0 LUFS, got {target_lufs!r}")
    loudness = integrated_loudness(audio, sample_rate)
    return 0.0 if not np.isfinite(loudness) else float(target_lufs) - loudness


def true_peak(audio: np.ndarray, sample_rate: int) -> float:
    """The true peak of ``audio`` ``[C, T]`` (ITU-R BS.1770-4 Annex 2), linear: the largest magnitude of the
    signal oversampled 4x (2x from 88.2 kHz, none from 176.4 kHz), which catches the peaks a DAC or a lossy
    encoder makes between samples. 0.0 for empty audio."""
    audio = np.atleast_2d(np.asarray(audio))
    k_weighting_sos(sample_rate)  # checks the rate
    factor = 4 if sample_rate < 88200 else 2 if sample_rate < 176400 else 1
    frames = audio.shape[-1]
    peak = float(np.max(np.abs(audio))) if frames else 0.0
    if factor == 1 or frames == 0:
        return peak
    interpolator = firwin(2 * _TRUE_PEAK_TAPS * factor + 1, 0.9 / factor, window=("kaiser", 8.0))
    for start in range(0, frames, _TRUE_PEAK_BLOCK):
        lo = max(0, start - _TRUE_PEAK_MARGIN)
        hi = min(frames, start + _TRUE_PEAK_BLOCK + _TRUE_PEAK_MARGIN)
        up = resample_poly(audio[:, lo:hi].astype(np.float64), factor, 1, axis=-1, window=interpolator)
        keep = up[:, (start - lo) * factor : (min(frames, start + _TRUE_PEAK_BLOCK) - lo) * factor]
        peak = max(peak, float(np.max(np.abs(keep))))
    return peak
