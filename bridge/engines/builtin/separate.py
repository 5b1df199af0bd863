"""Built-in stem separation: soft spectral masks from one shared analysis, no model weights.

Each channel pair is analysed once (the power mean of its channels' STFTs) and split by soft masks:

- **drums**: the percussive part, all bands: where a median across frequency beats a median across time
  (harmonic/percussive separation). Below the bass crossover the percussive estimate is what rises above the
  sustained level, judged over ~1.45 s while drums play (so a kick's low end stands out from a held bass) and
  over ~0.5 s in passages without broadband transients (so a busy bass line there stays bass); on the partials
  of a tracked bass note, over ~0.3 s (so the bass's own attacks stay bass);
- **bass**: the tonal part of the bass line. :mod:`bridge.engines.builtin.bass_pitch` tracks its fundamental
  per frame (harmonic-sum salience over 38-300 Hz) and, where it is confident, bass is the share of each bin
  up to ~2 kHz that the line's partials account for (a fingered bass has strong partials up to 1-2 kHz; a
  piano chord tone between them is not bass). Where no line is found: the tonal part below a smooth 120-300 Hz
  crossover;
- **vocals**: the tonal part in the vocal band (above the bass crossover, fading out over 7-11 kHz) that the
  bass line does not claim and that is centre-panned: per bin, left and right must agree in level and phase.
  Mono has no centre cue, so the tonal (time-continuous) vocal band goes to vocals at a lower weight;
- **other**: the time-domain residual ``input - drums - bass - vocals``, so the stems always sum to the input.

The three masks add up to at most one in every bin. The running medians are approximated by cascades of
medians of 3 or 5 taps at growing strides (1, 5, 25 frames...), a few element-wise min/max passes instead of
a sort per bin; with the float32 STFT of :mod:`bridge.audio.spectral` this separates 30 s of stereo 44.1 kHz
in about 0.25-0.3 s on one core (the bass tracker adds ~10%). Long inputs are processed in chunks of frames
that overlap by the reach of the medians and of the tracker, so the result equals whole-signal processing (to
float rounding) while memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bridge.audio.spectral import Stft, frequencies
from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.builtin import bass_pitch
from bridge.engines.builtin.bass_pitch import PitchSettings
from bridge.errors import InvalidArgument, UnsupportedOperation

KNOWN_STEMS = ("drums", "bass", "vocals", "other")
_MASKED = ("drums", "bass", "vocals")  # "other" is the residual
_CHUNK_FRAMES = 1024  # ~12 s at 44.1 kHz; about 0.1 s of work per chunk
_EPS = np.float32(1e-12)

Passes = tuple[tuple[int, int], ...]  # median passes as (taps, stride), taps 3 or 5


@dataclass(frozen=True)
class Settings:
    """Tuning of the masks (frames are n_fft / 4 apart, ~11.6 ms; bins ~21.5 Hz wide at every rate).

    Attributes:
        power: exponent of the Wiener-like soft masks (higher: harder decisions).
        harmonic: time-median passes; (5, 1), (5, 5) spans 25 frames, ~0.29 s.
        low_harmonic: further passes below the bass crossover while drums play; (5, 25) extends the span to
            ~1.45 s, so a kick (a few hundred ms of low end every beat or two) stands out from a held bass.
        quiet_low_harmonic: the same where no drums play; (3, 10) extends the span to ~0.5 s, so short
            notes of a busy bass line are not mistaken for kicks.
        drum_gate: share of bins (300 Hz - 8 kHz) where percussion dominates, in the loudest frame within
            ``drum_gate_frames`` either side, below which no drums play and above which they do.
        drum_gate_frames: 45 frames, ~0.5 s.
        percussive: frequency-median passes; (3, 1), (5, 3) spans 15 bins, ~320 Hz.
        high_percussive: further passes blended in above 1-2 kHz (45 bins, ~970 Hz), for cymbals and hats.
        low_excess: below the crossover, level above ``low_excess * harmonic`` counts as percussive.
        bass_crossover: Hz; everything harmonic below the first goes to bass, nothing above the second.
        vocal_top: Hz; the vocal band fades out between these.
        centre_floor: left/right agreement (1 = identical) below which a bin counts as not centred.
        centre_exponent: sharpness of the centre weight above the floor.
        mono_vocal_weight: share of the harmonic vocal band given to vocals when there is no stereo cue.
        pitch: the bass tracker (:mod:`bridge.engines.builtin.bass_pitch`); ``None`` for the plain crossover.
    """

    power: float = 2.0
    harmonic: Passes = ((5, 1), (5, 5))
    low_harmonic: Passes = ((5, 25),)
    quiet_low_harmonic: Passes = ((3, 10),)
    drum_gate: tuple[float, float] = (0.4, 0.7)
    drum_gate_frames: int = 45
    percussive: Passes = ((3, 1), (5, 3))
    high_percussive: Passes = ((3, 15),)
    low_excess: float = 1.5
    bass_crossover: tuple[float, float] = (120.0, 300.0)
    vocal_top: tuple[float, float] = (7000.0, 11000.0)
    centre_floor: float = 0.6
    centre_exponent: float = 2.0
    mono_vocal_weight: float = 0.5
    pitch: PitchSettings | None = PitchSettings()


def separate(
    audio: np.ndarray,
    sample_rate: int,
    stems: Sequence[str],
    progress: ProgressCallback | None = None,
    settings: Settings | None = None,
) -> dict[str, np.ndarray]:
    """Split ``audio`` into drums, bass, vocals and other with spectral masks.

    Args:
        audio: float32 ``[C, T]`` (``[T]`` is accepted and answered with ``[T]`` stems). Channels are taken in
            pairs (0+1, 2+3, ...) that each use the centre cue; a lone last channel is separated as mono.
        sample_rate: in Hz.
        stems: any of ``drums, bass, vocals, other``; empty means all four.
        progress: ``callback(fraction, stage)`` with stages ``analyse``, ``drums``, ``bass``, ``vocals``,
            ``other``, ``done``; raising :class:`bridge.errors.Cancelled` from it stops the separation.
        settings: mask tuning; ``None`` for the defaults.

    Returns:
        ``{stem: float32 array shaped like audio}`` for the requested stems, in the order asked. Whatever
        subset is asked, each stem is the same as in a full separation, and drums + bass + vocals + other
        equals the input (other is the residual).

    Raises:
        UnsupportedOperation: a stem this engine does not know.
        InvalidArgument: a bad sample rate, shape, or non-finite samples.
    """
    wanted = _check_stems(stems)
    rate = _check_rate(sample_rate)
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise InvalidArgument(
            f"audio must be shaped [channels, samples] with at least one channel, got {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidArgument("audio holds NaN or infinite samples; clean or re-render the input")
    squeeze = x.ndim == 1
    x2 = x[None, :] if squeeze else x
    report = Progress(progress)
    settings = settings or Settings()
    masked = _MASKED if "other" in wanted else tuple(s for s in _MASKED if s in wanted)

    groups = [(c, min(c + 2, x2.shape[0])) for c in range(0, x2.shape[0], 2)]
    parts: dict[str, list[np.ndarray]] = {stem: [] for stem in masked}
    for g, (first, last) in enumerate(groups):
        sub = report.sub(0.98 * g / len(groups), 0.98 * (g + 1) / len(groups))
        for stem, y in _separate_group(x2[first:last], rate, masked, sub, settings).items():
            parts[stem].append(y)
    result = {stem: ys[0] if len(ys) == 1 else np.concatenate(ys, axis=0) for stem, ys in parts.items()}
    if "other" in wanted:
        report(0.98, "other")
        other = x2.copy()
        for stem in _MASKED:
            other -= result[stem]
        result["other"] = other
    report(1.0, "done")
    return {stem: (result[stem][0] if squeeze else result[stem]) for stem in wanted}


def _check_rate(sample_rate: object) -> int:
    """``sample_rate`` as an int, or InvalidArgument unless it is a positive whole number."""
    if isinstance(sample_rate, (int, float, np.integer, np.floating)) and not isinstance(sample_rate, bool):
        value = float(sample_rate)
        if np.isfinite(value) and value > 0 and value == int(value):
            return int(value)
    raise InvalidArgument(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")


def _check_stems(stems: Sequence[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated stem names; all four when none are given."""
    if isinstance(stems, str):
        stems = [stems]
    names = [str(s).strip().lower() for s in stems if str(s).strip()]
    for name in names:
        if name not in KNOWN_STEMS:
            hint = ""
            if name in ("guitar", "piano"):
                hint = " (guitar and piano need the demucs engine: --model htdemucs_6s)"
            raise UnsupportedOperation(
                f"the builtin engine cannot separate {name!r}; it knows {', '.join(KNOWN_STEMS)}{hint}"
            )
    return tuple(dict.fromkeys(names)) or KNOWN_STEMS


def _plan(sample_rate: int) -> Stft:
    """An STFT with ~46 ms windows (2048 samples at 44.1/48 kHz, 4096 at 88.2/96 kHz, 1024 at 22.05 kHz)."""
    n_fft = 2 ** max(8, int(round(np.log2(2048.0 * sample_rate / 44100.0))))
    return Stft(n_fft, n_fft // 4)


def _margin(settings: Settings) -> int:
    """Frames of context each side of a chunk: the reach of the time medians plus the centre smoothing."""
    return (
        _reach(settings.harmonic)
        + max(_reach(settings.low_harmonic), _reach(settings.quiet_low_harmonic), settings.drum_gate_frames)
        + (settings.pitch.reach if settings.pitch else 0)
        + 2
    )


def block_context(sample_rate: int, settings: Settings | None = None) -> tuple[int, int]:
    """``(context, hop)`` in samples: a window of the input that starts on a multiple of ``hop`` and reaches
    ``context`` samples past both ends of a block separates that block as the whole input would (its frames
    are the whole input's frames, and every frame that touches the block sees all the frames its masks use)."""
    settings = settings or Settings()
    plan = _plan(_check_rate(sample_rate))
    frames = _margin(settings) + 2  # + the frames whose windows overlap the block's first and last samples
    return frames * plan.hop + plan.n_fft, plan.hop


def _separate_group(
    audio: np.ndarray, sample_rate: int, masked: tuple[str, ...], report: Progress, settings: Settings
) -> dict[str, np.ndarray]:
    """Masked stems of one mono or stereo group ``[C, T]`` (C = 1 or 2) -> ``{stem: [C, T]}``."""
    channels, length = audio.shape
    plan = _plan(sample_rate)
    weights = _BandWeights.build(sample_rate, plan.n_fft, settings)
    margin = _margin(settings)
    padded = plan.pad(audio)
    n_frames = plan.n_frames(length)
    buffers = [np.zeros((channels, padded.shape[-1]), dtype=np.float32) for _ in masked]
    starts = range(0, n_frames, _CHUNK_FRAMES)
    steps = len(masked) + 1
    for i, start in enumerate(starts):
        stop = min(n_frames, start + _CHUNK_FRAMES)
        lo, hi = max(0, start - margin), min(n_frames, stop + margin)
        report(i / len(starts), "analyse")
        spec = plan.analyse(padded, lo, hi)
        masks = _masks(spec, masked, weights, settings)
        core = spec[:, start - lo : stop - lo]
        for s, stem in enumerate(masked):
            report((i + (s + 1) / steps) / len(starts), stem)
            plan.overlap_add(buffers[s], core * masks[stem][start - lo : stop - lo], start)
    out: dict[str, np.ndarray] = {}
    for s, stem in enumerate(masked):
        out[stem] = plan.finish(buffers[s], length)
        buffers[s] = buffers[s][:, :0]  # release the padded buffer before finishing the next
    return out


@dataclass(frozen=True)
class _BandWeights:
    """Per-bin ``[F]`` weights (bass band, vocal band <= 1 - bass, where the wide frequency median acts) and the
    bass tracker's tables (``None`` when tracking is off)."""

    bass: np.ndarray
    vocal: np.ndarray
    wide_percussive: np.ndarray
    transient_band: np.ndarray
    pitch: bass_pitch.PitchTables | None = None

    @classmethod
    def build(cls, sample_rate: int, n_fft: int, settings: Settings) -> _BandWeights:
        f = frequencies(sample_rate, n_fft)
        bass = 1.0 - _ramp(f, *settings.bass_crossover)
        vocal = (1.0 - bass) * (1.0 - _ramp(f, *settings.vocal_top))
        wide = _ramp(f, 1000.0, 2000.0)
        band = np.flatnonzero((f > 300.0) & (f < 8000.0))
        tables = None
        if settings.pitch is not None:
            tables = bass_pitch.PitchTables.build(sample_rate, n_fft, settings.pitch)
            tables = tables if tables.bins else None  # too low a sample rate to track
        return cls(bass.astype(np.float32), vocal.astype(np.float32), wide.astype(np.float32), band, tables)


def _ramp(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, raised cosine in between."""
    t = np.clip((f - lo) / (hi - lo), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _masks(
    spec: np.ndarray, masked: tuple[str, ...], weights: _BandWeights, settings: Settings
) -> dict[str, np.ndarray]:
    """Soft masks ``{stem: [N, F]}`` for ``spec`` ``[C, N, F]`` (C = 1 or 2); their sum is <= 1 per bin."""
    power_c = spec.real * spec.real + spec.imag * spec.imag  # [C, N, F]
    mag = np.sqrt(power_c.mean(axis=0))

    harmonic = _median(mag, 0, settings.harmonic)
    percussive = _median(mag, 1, settings.percussive)
    if settings.high_percussive:
        wide = _median(percussive, 1, settings.high_percussive)
        percussive += (wide - percussive) * weights.wide_percussive
    tables = weights.pitch
    pitch = None
    if tables is not None:  # the bass line, tracked on a plain harmonic/percussive split of the low band
        pitch = bass_pitch.track(_tonal_low(mag, harmonic, percussive, tables.bins), tables)
    if settings.low_harmonic:
        # below the crossover, judge against a long context: ~1.45 s in drum passages (a kick's low end stands
        # out from held bass), ~0.5 s elsewhere (a busy bass line in a drumless passage stays bass)
        gate = _drum_activity(mag, harmonic, percussive, weights, settings)[:, None]
        quiet = _median(harmonic, 0, settings.quiet_low_harmonic)
        low = quiet + (_median(harmonic, 0, settings.low_harmonic) - quiet) * gate
        if pitch is not None and tables is not None:
            # on a confident bass comb, the bass's own attacks are judged against the short sustain
            on = bass_pitch.onset_weight(pitch, tables)
            low[:, : tables.bins] += (harmonic[:, : tables.bins] - low[:, : tables.bins]) * on
        harmonic += (low - harmonic) * weights.bass
    # below the crossover: what rises above the sustained level (the kick over a held bass) is percussive
    excess = np.maximum(mag - harmonic * np.float32(settings.low_excess), np.float32(0.0))
    percussive += (excess - percussive) * weights.bass

    hp = harmonic ** np.float32(settings.power)
    pp = percussive ** np.float32(settings.power)
    drums = pp / (hp + pp + _EPS)
    tonal = 1.0 - drums
    stereo = spec.shape[0] == 2
    wants_centre = "vocals" in masked or ("bass" in masked and pitch is not None)
    agreement = _agreement(spec, power_c) if stereo and wants_centre else None
    low_bass = None  # [N, bins]: near the bass line's partials (up to ~2 kHz) the tracked line decides
    if pitch is not None and tables is not None and ("bass" in masked or "vocals" in masked):
        bins = tables.bins
        low_bass = bass_pitch.bass_weight(
            mag[:, :bins] * tonal[:, :bins], pitch, weights.bass[:bins], agreement, tables
        )
    masks: dict[str, np.ndarray] = {}
    if "drums" in masked:
        masks["drums"] = drums
    if "bass" in masked:
        masks["bass"] = tonal * weights.bass
        if low_bass is not None:
            masks["bass"][:, : low_bass.shape[1]] = tonal[:, : low_bass.shape[1]] * low_bass
    if "vocals" in masked:
        # the vocal band less what the bass line claims, centred (stereo) or at a lower weight (mono)
        band = weights.vocal if stereo else weights.vocal * np.float32(settings.mono_vocal_weight)
        vocal = tonal * band
        if low_bass is not None:
            vocal[:, : low_bass.shape[1]] *= np.float32(1.0) - low_bass
        if agreement is not None:
            vocal *= _centre(agreement, settings)
        masks["vocals"] = vocal
    return masks


def _tonal_low(mag: np.ndarray, harmonic: np.ndarray, percussive: np.ndarray, bins: int) -> np.ndarray:
    """Tonal magnitude ``[N, bins]`` of the first ``bins`` bins from a plain harmonic/percussive soft mask."""
    h2 = harmonic[:, :bins] ** 2
    p2 = percussive[:, :bins] ** 2
    tonal: np.ndarray = mag[:, :bins] * (h2 / (h2 + p2 + _EPS))
    return tonal


def _drum_activity(
    mag: np.ndarray, harmonic: np.ndarray, percussive: np.ndarray, weights: _BandWeights, settings: Settings
) -> np.ndarray:
    """0..1 per frame ``[N]``: 1 within ~0.5 s of broadband transients (hats, snares, clicks) above 300 Hz."""
    band = weights.transient_band
    if band.size == 0:  # sample rates below 600 Hz
        return np.zeros(mag.shape[0], dtype=np.float32)
    level = mag[:, band]
    floor = np.maximum(level.max(axis=1, keepdims=True) * np.float32(1e-3), np.float32(1e-7))  # 60 dB down
    struck = (percussive[:, band] > harmonic[:, band]) & (level > floor)
    share = struck.mean(axis=1, dtype=np.float32)
    share = ndimage.maximum_filter1d(share, 2 * settings.drum_gate_frames + 1, mode="constant", cval=0.0)
    lo, hi = settings.drum_gate
    gate: np.ndarray = np.clip((share - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    return gate


def _reach(passes: Passes) -> int:
    """How many frames either side a cascade of median passes looks."""
    return sum((taps // 2) * stride for taps, stride in passes)


def _agreement(spec: np.ndarray, power_c: np.ndarray) -> np.ndarray:
    """Left/right agreement ``[N, F]`` of ``spec`` ``[2, N, F]``: 1 when L == R, 0 or less when one-sided or
    opposed (level and phase), over three frames."""
    left, right = spec[0], spec[1]
    cross = _smooth_time(left.real * right.real + left.imag * right.imag)
    total = _smooth_time(power_c[0] + power_c[1])
    agreement: np.ndarray = 2.0 * cross / (total + _EPS)
    return agreement


def _centre(agreement: np.ndarray, settings: Settings) -> np.ndarray:
    """How centred each bin is, 0..1 ``[N, F]``, from its left/right agreement."""
    floor = np.float32(settings.centre_floor)
    weight = np.clip((agreement - floor) / (np.float32(1.0) - floor), 0.0, 1.0)
    centred: np.ndarray = weight ** np.float32(settings.centre_exponent)
    return centred


def _smooth_time(x: np.ndarray) -> np.ndarray:
    """Three-frame moving sum along axis 0 of ``[N, F]`` (edges repeated)."""
    out: np.ndarray = x.copy()
    if x.shape[0] > 1:
        out[1:] += x[:-1]
        out[:-1] += x[1:]
    out[0] += x[0]
    out[-1] += x[-1]
    return out


def _median(x: np.ndarray, axis: int, passes: Passes) -> np.ndarray:
    """Approximate running median along ``axis`` of ``x`` ``[N, F]``: a cascade of 3- or 5-tap medians.

    Each pass takes the median of ``taps`` samples ``stride`` apart, so 5-tap passes at strides 1 and 5
    approximate a 25-sample median. Along time (axis 0) the signal is extended with silence (a sound at the
    very start is judged against the quiet before it); along frequency with its edge values.
    """
    out = x
    for taps, stride in passes:
        out = _median_pass(out, taps, stride, axis)
    return out if out is not x else x.copy()


def _median_pass(x: np.ndarray, taps: int, stride: int, axis: int) -> np.ndarray:
    if x.shape[axis] < 2:
        same: np.ndarray = x.copy()
        return same
    v = x if axis == 0 else x.T
    edge = axis != 0
    if taps == 3:
        out = _med3(_shifted(v, stride, edge), v, _shifted(v, -stride, edge))
    elif taps == 5:
        a, b = _shifted(v, 2 * stride, edge), _shifted(v, stride, edge)
        c, d = _shifted(v, -stride, edge), _shifted(v, -2 * stride, edge)
        low = np.maximum(np.minimum(a, b), np.minimum(c, d))
        high = np.minimum(np.maximum(a, b), np.maximum(c, d))
        out = _med3(v, low, high)  # the median of five, without sorting
    else:
        raise InvalidArgument(f"median passes take 3 or 5 taps, got {taps}")
    return out if axis == 0 else out.T


def _shifted(v: np.ndarray, shift: int, edge: bool) -> np.ndarray:
    """``v`` moved along axis 0 (``out[i] = v[i - shift]``); the gap is filled with edge values or zeros."""
    n = v.shape[0]
    out = np.empty_like(v)
    if shift == 0:
        out[...] = v
    elif abs(shift) >= n:
        out[...] = (v[:1] if shift > 0 else v[-1:]) if edge else 0.0
    elif shift > 0:
        out[shift:] = v[:-shift]
        out[:shift] = v[:1] if edge else 0.0
    else:
        out[:shift] = v[-shift:]
        out[shift:] = v[-1:] if edge else 0.0
    return out


def _med3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Element-wise median of three arrays."""
    low: np.ndarray = np.minimum(a, b)
    high = np.maximum(a, b)
    np.minimum(high, c, out=high)
    np.maximum(low, high, out=low)
    return low
