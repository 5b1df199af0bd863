"""Tempo and bar-grid inference from audio: the bpm of a loop, how many bars it spans, and its :class:`Grid`.

The estimator works on an onset-strength envelope built per frequency band (lows for kicks and bass, mids for
snares and chords, highs for hats), each band normalised so that a quiet kick counts as much as a loud snare.
A comb-filter tempogram folds the envelope at every candidate beat period and scores each period by how well
its pulses stand out:

* ``on - off``: the envelope at the beat phase minus its highest value anywhere between beats. A period twice
  (or five times) the true one fails here, because some of its "off-beats" are real beats.
* ``evenness``: odd and even beats should be about as strong. A period half the true one (8th notes) fails
  here, because its pulses alternate between beats and weaker off-beats.

A log-normal prior around 120 bpm settles what evidence leaves open; the best period is refined by parabolic
interpolation and then by a least-squares fit of the onset peaks nearest each beat.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from bridge.audio.analysis import to_mono
from bridge.audio.onsets import onset_envelope
from bridge.audio.timing import BPM_RANGE, Grid, TimeSignature, bpm_from_length, check_bars, check_bpm
from bridge.errors import InvalidArgument

HOP = 512
PRIOR_BPM = 120.0
PRIOR_OCTAVES = 1.0  # standard deviation of the log2-tempo prior
COMMON_TIME = TimeSignature(4, 4)
SNAP_TOLERANCE = 0.02  # infer_grid snaps to whole bars when that moves the tempo by at most 2 %

_BANDS_HZ = ((None, 150.0), (150.0, 3000.0), (3000.0, None))
_STEP_OCTAVES = 0.004  # spacing of the candidate tempi (0.28 %); _refine does the fine work
_WINDOW_S = 16.0  # tempogram window; longer audio is scored window by window
_MAX_WINDOWS = 4
_EXCERPT_S = 40.0  # longer audio is judged on its middle 40 s (a song's tempo is taken as constant)
_LOCAL_MEAN_S = 0.4
_PEAKS_REFINED = 6


def estimate_tempo(
    audio: np.ndarray, sample_rate: int, bpm_range: tuple[float, float] = (60.0, 200.0)
) -> float:
    """Estimate the tempo of ``audio`` in quarter notes per minute.

    Args:
        audio: ``[C, T]`` or ``[T]`` samples.
        sample_rate: in Hz.
        bpm_range: the slowest and fastest tempo to consider; the result lies inside it.

    Returns:
        The tempo with sub-integer precision, e.g. ``173.96``; the prior's centre (120, clipped to the range)
        when the audio holds no rhythmic onsets.
    """
    lo, hi = _check_range(bpm_range)
    audio = np.asarray(audio)
    excerpt = int(_EXCERPT_S * sample_rate)
    if audio.shape[-1] > excerpt:
        start = (audio.shape[-1] - excerpt) // 2
        audio = audio[..., start : start + excerpt]
    env, frame_rate = _band_envelope(audio, sample_rate)
    fallback = float(min(hi, max(lo, PRIOR_BPM)))
    if env.size < 8 or not np.any(env > 0):
        return fallback
    # Pulse levels are scored an octave beyond the range on both sides and folded into it by octaves: a
    # bass line of even 8th notes at 120 bpm shows its clearest pulse at 240, which reads as 120.
    log_bpms = np.arange(np.log2(lo) - 1.0, np.log2(hi) + 1.0 + 1e-12, _STEP_OCTAVES)
    log_bpms = log_bpms[(log_bpms >= np.log2(BPM_RANGE[0] / 2)) & (log_bpms <= np.log2(BPM_RANGE[1]))]
    bpms = 2.0**log_bpms
    scores = np.zeros(bpms.size)
    windows = _windows(env.size, frame_rate)
    for start, stop in windows:
        scores += _pulse_scores(env[start:stop], frame_rate, bpms)
    scores *= _prior(bpms)
    if scores.max() <= 0:
        return fallback
    # Peaks are sharper than the candidate spacing: look closer around the best few before choosing.
    peaks = [
        i for i in range(1, scores.size - 1) if scores[i] > 0 and scores[i] >= scores[i - 1 : i + 2].max()
    ]
    best_score, bpm = -1.0, fallback
    for i in sorted(peaks, key=lambda i: -scores[i])[:_PEAKS_REFINED]:
        fine = log_bpms[i] + np.linspace(-1.0, 1.0, 9) * _STEP_OCTAVES
        near = np.zeros(fine.size)
        for start, stop in windows:
            near += _pulse_scores(env[start:stop], frame_rate, 2.0**fine)
        near *= _prior(2.0**fine)
        j = int(np.argmax(near))
        if near[j] > best_score:
            offset = _parabolic_offset(near, j) * (fine[1] - fine[0])
            best_score, bpm = float(near[j]), float(2.0 ** (fine[j] + offset))
    while bpm > hi * 1.0001 and bpm / 2 >= lo * 0.9999:
        bpm /= 2
    while bpm < lo * 0.9999 and bpm * 2 <= hi * 1.0001:
        bpm *= 2
    bpm = _refine(env, frame_rate, bpm)
    return float(min(hi, max(lo, bpm)))


def estimate_bars(
    n_samples: int, sample_rate: int, bpm: float, time_signature: TimeSignature | str = COMMON_TIME
) -> int:
    """The whole number of bars closest to ``n_samples`` samples at ``bpm`` (at least 1)."""
    if n_samples < 0:
        raise InvalidArgument(f"sample count must be zero or more, got {n_samples}")
    grid = Grid(check_bpm(bpm), TimeSignature.parse(time_signature), int(sample_rate))
    return max(1, int(round(grid.bars_in(int(n_samples)))))


def infer_grid(
    audio: np.ndarray,
    sample_rate: int,
    bpm: float | None = None,
    bars: int | None = None,
    time_signature: TimeSignature | str = COMMON_TIME,
) -> Grid:
    """The bar grid of ``audio`` ``[C, T]``, from what the user said and what the audio shows.

    * ``bpm`` given: that tempo (``bars`` is then ignored).
    * only ``bars`` given: the tempo at which the audio lasts exactly ``bars`` bars.
    * neither: :func:`estimate_tempo`, then snapped so the audio spans a whole number of bars when that
      moves the tempo by at most 2 % (loops are usually cut to bars).
    """
    ts = TimeSignature.parse(time_signature)
    sample_rate = int(sample_rate)
    n_samples = int(np.shape(audio)[-1])
    if bpm is not None:
        return Grid(check_bpm(bpm), ts, sample_rate)
    if bars is not None:
        whole = check_bars(bars)
        if n_samples == 0:
            raise InvalidArgument("cannot derive a tempo from empty audio; pass the bpm instead")
        quarters = whole * float(ts.quarters_per_bar)
        implied = quarters * 60.0 * sample_rate / n_samples
        if not BPM_RANGE[0] <= implied <= BPM_RANGE[1]:
            raise InvalidArgument(
                f"{whole} bars of {ts} in {n_samples / sample_rate:.3f} s would be {implied:.1f} bpm, "
                f"outside 20 to 400; check the bar count or pass the bpm"
            )
        return Grid(bpm_from_length(n_samples, sample_rate, whole, ts), ts, sample_rate)
    estimate = estimate_tempo(audio, sample_rate)
    whole = estimate_bars(n_samples, sample_rate, estimate, ts)
    if n_samples > 0:
        snapped = whole * float(ts.quarters_per_bar) * 60.0 * sample_rate / n_samples
        if abs(snapped / estimate - 1.0) <= SNAP_TOLERANCE and BPM_RANGE[0] <= snapped <= BPM_RANGE[1]:
            return Grid(bpm_from_length(n_samples, sample_rate, whole, ts), ts, sample_rate)
    return Grid(estimate, ts, sample_rate)


def _prior(bpms: np.ndarray) -> np.ndarray:
    """Log-normal tempo prior: 1 at 120 bpm, 0.61 an octave away."""
    prior: np.ndarray = np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    return prior


def _check_range(bpm_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in bpm_range)
    except (TypeError, ValueError):
        raise InvalidArgument(f"bpm_range must be two numbers like (60, 200), got {bpm_range!r}") from None
    if not (BPM_RANGE[0] <= lo < hi <= BPM_RANGE[1]) or hi / lo < 1.1:
        raise InvalidArgument(
            f"bpm_range must run from low to high within 20 to 400 and span at least 10 %, got {bpm_range!r}"
        )
    return lo, hi


def _band_envelope(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Onset strength per band, each scaled by its 99th percentile, combined by maximum -> ``[frames]``."""
    mono = to_mono(np.asarray(audio, dtype=np.float32)).astype(np.float64)
    n_frames = int(round(mono.size / HOP))
    frame_rate = sample_rate / HOP
    combined = np.zeros(n_frames)
    if n_frames < 8:
        return combined, frame_rate
    nyquist = sample_rate / 2.0
    width = min(int(round(frame_rate * _LOCAL_MEAN_S)), n_frames - 1) | 1
    kernel = np.ones(width) / width
    for low, high in _BANDS_HZ:
        if low is not None and low >= 0.9 * nyquist:
            continue
        if high is not None and high >= 0.9 * nyquist:
            high = None
        if low is None:
            sos = signal.butter(4, high, "lowpass", fs=sample_rate, output="sos")
        elif high is None:
            sos = signal.butter(4, low, "highpass", fs=sample_rate, output="sos")
        else:
            sos = signal.butter(2, (low, high), "bandpass", fs=sample_rate, output="sos")
        band = signal.sosfilt(sos, mono).astype(np.float32)
        env, _ = onset_envelope(band[None, :], sample_rate, hop=HOP)
        env = np.asarray(env, dtype=np.float64)[:n_frames]
        if env.size < n_frames:
            env = np.pad(env, (0, n_frames - env.size))
        env = np.maximum(0.0, env - np.convolve(env, kernel, mode="same"))
        scale = float(np.percentile(env, 99))
        if scale > 1e-9:
            combined = np.maximum(combined, env / scale)
    return combined, frame_rate


def _windows(n_frames: int, frame_rate: float) -> list[tuple[int, int]]:
    """Frame ranges of the tempogram windows: the whole envelope, or up to 4 overlapping 16 s windows."""
    width = int(round(_WINDOW_S * frame_rate))
    if n_frames <= 1.5 * width:
        return [(0, n_frames)]
    count = min(_MAX_WINDOWS, int(np.ceil(2 * n_frames / width)) - 1)
    starts = np.linspace(0, n_frames - width, count).round().astype(int)
    return [(int(s), int(s) + width) for s in starts]


def _fold(env: np.ndarray, period: float) -> np.ndarray:
    """The envelope cut into beats of ``period`` frames: ``[beats, phases]``, one phase per frame or so."""
    beats = int(env.size // period)
    phases = int(np.ceil(period))
    positions = np.arange(beats)[:, None] * period + np.arange(phases)[None, :] * (period / phases)
    folded: np.ndarray = np.interp(positions, np.arange(env.size), env)
    return folded


def _pulse_scores(env: np.ndarray, frame_rate: float, bpms: np.ndarray) -> np.ndarray:
    """Score of each candidate tempo: ``max(0, on - off) * sqrt(evenness)`` (see the module docstring)."""
    scores = np.zeros(bpms.size)
    for i, bpm in enumerate(bpms):
        period = frame_rate * 60.0 / bpm
        if env.size < 2 * period:
            continue
        folded = _fold(env, period)
        profile = folded.mean(axis=0)
        phases = profile.size
        peak = int(np.argmax(profile))
        distance = np.abs((np.arange(phases) - peak + phases / 2) % phases - phases / 2) * (period / phases)
        between = profile[distance > max(2.5, period / 8)]
        on = float(profile[peak])
        off = float(between.max()) if between.size else 0.0
        even = float(folded[0::2, peak].mean())
        odd = float(folded[1::2, peak].mean())
        evenness = min(even, odd) / max(even, odd, 1e-12)
        scores[i] = max(0.0, on - off) * np.sqrt(max(0.0, evenness))
    return scores


def _parabolic_offset(values: np.ndarray, i: int) -> float:
    """Offset in ``[-0.5, 0.5]`` of the vertex of the parabola through ``values[i-1:i+2]``."""
    if i <= 0 or i >= values.size - 1:
        return 0.0
    y0, y1, y2 = (float(v) for v in values[i - 1 : i + 2])
    curvature = y0 - 2.0 * y1 + y2
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5))


def _refine(env: np.ndarray, frame_rate: float, bpm: float) -> float:
    """Fit a straight line through the onset peaks nearest each beat; its slope is the beat period.

    Peaks are located to a fraction of a frame (parabolic) and weighted by height squared; a fit that
    moves the tempo by more than 3 % is not trusted and the input tempo is returned.
    """
    for _ in range(2):
        period = frame_rate * 60.0 / bpm
        profile = _fold(env, period).mean(axis=0) if env.size >= period else None
        if profile is None:
            return bpm
        phase = float(np.argmax(profile)) * period / profile.size
        centres = np.arange(phase, env.size - 1, period)
        if centres.size < 2:
            return bpm
        reach = period / 4.0
        beats, peaks, weights = [], [], []
        for k, centre in enumerate(centres):
            lo = max(0, int(np.floor(centre - reach)))
            hi = min(env.size - 1, int(np.ceil(centre + reach)))
            segment = env[lo : hi + 1]
            j = int(np.argmax(segment))
            beats.append(k)
            peaks.append(lo + j + _parabolic_offset(segment, j))
            weights.append(float(segment[j]) ** 2)
        w = np.asarray(weights)
        if np.count_nonzero(w) < 2:
            return bpm
        x = np.asarray(beats, dtype=np.float64)
        y = np.asarray(peaks)
        xm, ym = np.average(x, weights=w), np.average(y, weights=w)
        slope = float(np.sum(w * (x - xm) * (y - ym)) / max(np.sum(w * (x - xm) ** 2), 1e-12))
        if slope <= 0:
            return bpm
        fitted = frame_rate * 60.0 / slope
        if abs(fitted / bpm - 1.0) > 0.03:
            return bpm
        bpm = fitted
    return bpm
