"""Onsets of context audio and the rhythm built on them: groove (accent per 16th of the bar) and density.

Pure functions on ``[C, T]`` float32 arrays (``[T]`` is accepted as mono); no I/O, no global state. Bar math
goes through :class:`bridge.audio.timing.Grid`, so bar 1 of the audio starts at sample 0.

Onsets are peaks of a SuperFlux-like spectral flux, each then timed in the time domain to about a
millisecond (see :func:`onset_strengths`); :func:`onset_envelope` is the plain spectral flux the tempo
estimator folds (:mod:`bridge.audio.tempo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bridge.audio.analysis import (
    CHUNK_FRAMES,
    ProgressFn,
    context_bars,
    is_silent,
    nearest_pow2,
    stft_magnitude,
    to_mono,
)
from bridge.audio.spectral import stft
from bridge.audio.timing import Grid

ONSET_LOOKBACK_S = 0.02  # an onset starts at most this long before its sharpest energy rise
MIN_RISE_DB = 3.0  # a flux peak without at least this sharp an energy rise near it is not an onset
SHARP_RISE_DB = 4.5  # a softer energy rise only times an onset when it is near the flux peak:
SOFT_SHIFT_S = 0.008  # within this many seconds


def onset_envelope(
    audio: np.ndarray, sample_rate: int, hop: int = 512, n_fft: int = 2048
) -> tuple[np.ndarray, float]:
    """Spectral-flux onset strength of ``audio`` ``[C, T]``.

    Returns:
        ``(envelope [frames], frame_rate_hz)``; frame ``i`` is centred on sample ``i * hop``.
    """
    mono = to_mono(audio)[None, :]
    mag = np.abs(stft(mono, n_fft=n_fft, hop=hop))[0]
    logmag = np.log1p(100.0 * mag)
    flux = np.maximum(0.0, np.diff(logmag, axis=1, prepend=logmag[:, :1])).sum(axis=0)
    return flux.astype(np.float32), sample_rate / hop


def _onset_spectrum(
    mono: np.ndarray, sample_rate: int, progress: ProgressFn | None = None
) -> tuple[np.ndarray, int, int]:
    """Log magnitude ``[frames, F]`` for onset detection, with ``hop`` and ``n_fft``.

    ``n_fft`` zeros are put before sample 0 (rather than the STFT's mirrored edge) so an onset at 0 is a rise
    like any other; frame ``i`` is centred on sample ``i * hop - n_fft``.
    """
    hop = nearest_pow2(sample_rate / 172.0)
    n_fft = 8 * hop
    padded = np.concatenate([np.zeros(n_fft, dtype=np.float32), mono.astype(np.float32, copy=False)])
    return np.log1p(100.0 * stft_magnitude(padded, n_fft, hop, progress)), hop, n_fft


def _superflux(logmag: np.ndarray, lag: int = 2, progress: ProgressFn | None = None) -> np.ndarray:
    """Onset function ``[frames]``: each bin's rise over the loudest of itself and its two neighbours ``lag``
    frames back, so vibrato, chorus and beating voices do not read as onsets (after SuperFlux). Computed in
    chunks of frames with ``progress(fraction, "analyse")`` after each."""
    total = logmag.shape[0]
    flux = np.zeros(total)
    for start in range(0, total, CHUNK_FRAMES):
        stop = min(total, start + CHUNK_FRAMES)
        back = np.arange(start - lag, stop - lag).clip(0)  # frames lag back (the first frame before 0)
        prev = logmag[back]
        ref = prev.copy()
        ref[:, 1:] = np.maximum(ref[:, 1:], prev[:, :-1])
        ref[:, :-1] = np.maximum(ref[:, :-1], prev[:, 1:])
        flux[start:stop] = np.maximum(0.0, logmag[start:stop] - ref).sum(axis=1)
        if progress is not None:
            progress(stop / total, "analyse")
    return flux


def _bins_below(hz: float, sample_rate: int, n_fft: int) -> int:
    return max(2, int(np.ceil(hz * n_fft / sample_rate)) + 1)


def _accent(mono: np.ndarray, pos: int, sample_rate: int) -> float:
    """RMS over the 20 ms from ``pos`` minus RMS over the 20 ms before it (0 when it falls)."""
    span = int(0.02 * sample_rate)
    after = mono[pos : pos + span].astype(np.float64)
    prior = mono[max(0, pos - span) : pos].astype(np.float64)
    gain = np.sqrt(np.mean(after**2)) if after.size else 0.0
    return max(0.0, float(gain - (np.sqrt(np.mean(prior**2)) if prior.size else 0.0)))


def _refine(mono: np.ndarray, centre: int, sample_rate: int, n_fft: int) -> tuple[int, float]:
    """Where an onset found near STFT frame ``centre`` starts, and how sharp it is.

    The onset is where the short-time energy (1.5 ms frames) of the pre-emphasised signal first rises to at
    least half its sharpest rise over the loudest of the preceding 10 ms (pre-emphasis and the 10 ms maximum
    keep the ripple of low tones from counting as a rise), at most ``ONSET_LOOKBACK_S`` before the sharpest.

    Returns:
        ``(position, sharpest rise in dB)``.
    """
    win = max(8, int(round(0.0015 * sample_rate)))
    hop = win // 2
    back = int(np.ceil(0.01 * sample_rate / hop))
    lead = back * hop + win  # audio before the search window that the first rise is measured against
    start = centre - n_fft // 2 - lead
    seg = mono[max(0, start) : max(0, centre + n_fft)].astype(np.float64)
    seg = np.concatenate([np.zeros(max(0, -start)), seg])  # zeros before the first sample
    seg[1:] -= 0.97 * seg[:-1].copy()
    cs = np.concatenate([[0.0], np.cumsum(seg**2)])
    starts = np.arange(0, seg.size - win + 1, hop)
    energy = (cs[starts + win] - cs[starts]) / win
    eps = 1e-4 * energy.max() + 1e-12
    before = np.lib.stride_tricks.sliding_window_view(energy, back).max(axis=1)  # [j] = max(energy[j:j+back])
    rise = np.log(energy[back:] + eps) - np.log(before[: energy.size - back] + eps)
    sharpest = int(np.argmax(rise))
    lookback = max(0, sharpest - int(ONSET_LOOKBACK_S * sample_rate / hop))
    j = lookback + int(np.argmax(rise[lookback : sharpest + 1] >= 0.5 * rise[sharpest])) + back
    return max(0, start + int(starts[j]) + win - hop // 2), float(rise.max()) * 10.0 / np.log(10.0)


def onset_strengths(
    audio: np.ndarray, sample_rate: int, *, max_hz: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Onsets with their accent.

    The onset function is a SuperFlux-like spectral flux (window about 46 ms, hop about 5.8 ms, each bin
    compared with the loudest of its neighbours two frames back). Its peaks that are the maximum within
    +-30 ms and exceed an adaptive threshold (three times the local median over +-100 ms plus a tenth of the
    99th percentile) are onsets. Each is then moved to where the short-time energy (1.5 ms frames) first
    rises sharply near it, which places it within about a millisecond. Where that rise is softer than
    ``SHARP_RISE_DB`` (a chord struck again over its own ringing) and more than ``SOFT_SHIFT_S`` from the
    flux frame's centre, the centre is kept (within about 7 ms); a peak with no rise of ``MIN_RISE_DB`` is
    dropped. Onsets closer than 30 ms are merged.

    Args:
        audio: ``[C, T]`` or ``[T]``.
        max_hz: only count flux below this frequency (``150`` finds kick- and bass-like onsets).

    Returns:
        ``(positions [n] int64 samples, accents [n] float64)`` in time order; the accent is the RMS the onset
        adds over the 20 ms before it.
    """
    mono = to_mono(audio)
    if mono.size == 0 or is_silent(mono):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    logmag, hop, n_fft = _onset_spectrum(mono, sample_rate)
    if max_hz is not None:
        logmag = logmag[:, : _bins_below(max_hz, sample_rate, n_fft)]
    return _pick(mono, _superflux(logmag), sample_rate, hop, n_fft)


def _pick(
    mono: np.ndarray, env: np.ndarray, sample_rate: int, hop: int, n_fft: int
) -> tuple[np.ndarray, np.ndarray]:
    """Peak-pick an onset function (see :func:`onset_strengths`) and refine each peak in the time domain."""
    rate = sample_rate / hop
    local_max = ndimage.maximum_filter1d(env, size=2 * int(0.03 * rate) + 1, mode="nearest")
    local_median = ndimage.median_filter(env, size=2 * int(0.1 * rate) + 1, mode="nearest")
    delta = 0.1 * float(np.percentile(env, 99))
    cand = np.nonzero((env == local_max) & (env > 3.0 * local_median + delta) & (env > 0))[0]
    positions: list[int] = []
    strengths: list[float] = []
    min_gap = int(0.03 * sample_rate)
    for i in cand:
        centre = max(0, int(i) * hop - n_fft)
        pos, rise_db = _refine(mono, centre, sample_rate, n_fft)
        if rise_db < MIN_RISE_DB:
            continue
        if rise_db < SHARP_RISE_DB and abs(pos - centre) > SOFT_SHIFT_S * sample_rate:
            pos = centre  # a soft rise far from the flux peak timed something else: keep the peak's time
        accent = _accent(mono, pos, sample_rate)
        if positions and pos - positions[-1] < min_gap:
            strengths[-1] = max(strengths[-1], accent)
            continue
        positions.append(pos)
        strengths.append(accent)
    return np.asarray(positions, dtype=np.int64), np.asarray(strengths)


def onsets(audio: np.ndarray, sample_rate: int, *, max_hz: float | None = None) -> np.ndarray:
    """Onset sample positions ``[n]`` int64 of ``audio`` ``[C, T]`` (see :func:`onset_strengths`)."""
    return onset_strengths(audio, sample_rate, max_hz=max_hz)[0]


def _groove_from(positions: np.ndarray, accents: np.ndarray, grid: Grid, bars: int) -> np.ndarray:
    spb = grid.time_signature.sixteenths_per_bar
    step = positions / grid.samples_per_step
    nearest = np.round(step).astype(np.int64)
    ok = (np.abs(step - nearest) <= 0.25) & (nearest < int(bars) * spb)
    out = np.bincount(nearest[ok] % spb, weights=accents[ok], minlength=spb)[:spb]
    peak = float(out.max(initial=0.0))
    return (out / peak if peak > 0 else out).astype(np.float32)


def groove(
    audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, *, max_hz: float | None = None
) -> np.ndarray:
    """The context's rhythmic profile: onset accent accumulated per 16th-note position within the bar.

    Each onset in the first ``bars`` bars that lies within a quarter step of a 16th-note step adds its accent
    to that step's position in the bar (so loud hits such as kicks and snares weigh most).

    Args:
        max_hz: only onsets found below this frequency (``150``: kick- and bass-like hits).

    Returns:
        ``[sixteenths_per_bar]`` float32 scaled to peak 1; all zeros when there are no onsets.
    """
    pos, acc = onset_strengths(audio, sample_rate, max_hz=max_hz)
    return _groove_from(pos, acc, grid, bars)


def density(audio: np.ndarray, sample_rate: int, grid: Grid, bars: int) -> float:
    """Onsets per beat (beat = the time signature's numerator unit) over the first ``bars`` bars present."""
    n_bars = min(int(bars), context_bars(np.asarray(audio).shape[-1], grid))
    end = grid.samples_for_bars(n_bars)
    count = int(np.sum(onsets(audio, sample_rate) < end))
    return count / (n_bars * grid.time_signature.numerator)


@dataclass(frozen=True, eq=False)
class Rhythm:
    """The rhythmic facts of a context (see :func:`rhythm`).

    Attributes:
        onsets: ``[n]`` onset sample positions; ``accents`` ``[n]`` their accents.
        groove: ``[sixteenths_per_bar]`` as :func:`groove`; ``low_groove``: the same below ``low_hz``.
        density: onsets per beat, as :func:`density`.
    """

    onsets: np.ndarray
    accents: np.ndarray
    groove: np.ndarray
    low_groove: np.ndarray
    density: float


def rhythm(
    audio: np.ndarray,
    sample_rate: int,
    grid: Grid,
    bars: int,
    *,
    low_hz: float = 150.0,
    progress: ProgressFn | None = None,
) -> Rhythm:
    """:func:`groove` (all onsets and those below ``low_hz``) and :func:`density` of the first ``bars`` bars
    of ``audio`` ``[C, T]``, from one spectrogram; ``progress(fraction, "analyse")`` between chunks."""

    def report(fraction: float) -> None:
        if progress is not None:
            progress(fraction, "analyse")

    n_bars = min(int(bars), context_bars(np.asarray(audio).shape[-1], grid))
    mono = to_mono(audio)[: grid.samples_for_bars(n_bars)]
    spb = grid.time_signature.sixteenths_per_bar
    if mono.size == 0 or is_silent(mono):
        zeros = np.zeros(spb, dtype=np.float32)
        return Rhythm(np.zeros(0, dtype=np.int64), np.zeros(0), zeros, zeros.copy(), 0.0)
    logmag, hop, n_fft = _onset_spectrum(mono, sample_rate, lambda f, _: report(0.5 * f))
    flux = _superflux(logmag, progress=lambda f, _: report(0.5 + 0.2 * f))
    pos, acc = _pick(mono, flux, sample_rate, hop, n_fft)
    report(0.8)
    low = logmag[:, : _bins_below(low_hz, sample_rate, n_fft)]
    low_pos, low_acc = _pick(mono, _superflux(low), sample_rate, hop, n_fft)
    report(1.0)
    return Rhythm(
        onsets=pos,
        accents=acc,
        groove=_groove_from(pos, acc, grid, n_bars),
        low_groove=_groove_from(low_pos, low_acc, grid, n_bars),
        density=pos.size / (n_bars * grid.time_signature.numerator),
    )
