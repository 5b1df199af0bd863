"""Bass pitch tracking for the built-in separation: which bins of the low and mid band belong to the bass line.

Per STFT frame the bass fundamental is the candidate (38-300 Hz, 1/8 semitone apart) whose harmonic comb
best explains the tonal magnitude below 2 kHz: a subharmonic-summation salience (square-root magnitudes summed
at ``k * f0`` with weights ``decay ** (k - 1)``) minus the same sum half a harmonic lower, so a candidate an
octave or a fifth below the true note (whose comb also hits the true partials) is penalised by the gaps it
predicts. The pick is refined by a parabola through the neighbouring candidates.

The tracked comb then decides per bin, up to ~2 kHz:

- **confidence** per frame: the share of tonal energy below 300 Hz that the comb explains, beyond what a comb
  that dense would explain of a flat spectrum. Where it is low (no bass, noise, a chord without a clear
  lowest note) the separation falls back to its plain 120-300 Hz crossover;
- **share** per bin: how much of the bin a bass partial accounts for, as a Wiener-like ratio of a modelled
  partial level to the bin's level. Partial ``k``'s level is read from the magnitude at ``k * f0`` and
  bounded (from partial 3 up) by (a) its neighbours ``k-2 .. k+2``: about the second loudest of them (a
  partial that towers over its neighbours is mostly a singer or another instrument on that pitch), (b) its
  level relative to the first three partials a few frames earlier within the same note (another part
  entering on a bass harmonic while the bass decays); then (c) above 100-200 Hz it is scaled by how centred
  the bin is (bass is mixed centre; a wide piano on a bass harmonic is not bass). Above ~300 Hz the comb only
  extends for a line in the bass register (lowest confident pitch within ~0.35 s under 150-250 Hz), so a
  piano's low notes do not claim a singer's partials when no bass plays;
- **onset weight**: on the comb of a confident, harmonic pitch the bass's own note attacks are judged against a
  short sustain (so they stay bass) instead of the long one that tells a kick from a held bass. A kick's low
  end (a gliding near-sine without overtones) does not count as harmonic.

Everything is computed from arrays ``[N, bins]`` of the first ``bins`` STFT bins (<= 2 kHz); the salience is a
sparse product, so results do not depend on how many frames are processed at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from bridge.audio.spectral import frequencies

_EPS = np.float32(1e-12)
_MIN_BINS = 8  # fewer bins below the comb's top than this (very low sample rates): no tracking


@dataclass(frozen=True)
class PitchSettings:
    """Tuning of the bass tracker (frames ~11.6 ms apart, bins ~21.5 Hz wide).

    Attributes:
        f0_range: Hz; the lowest and highest fundamental considered.
        steps_per_semitone: candidate spacing.
        harmonics: partials per comb.
        decay: weight of partial ``k`` in the salience is ``decay ** (k - 1)``.
        top: Hz; the comb fades out between these (nothing above the second).
        lobe: half-width (Gaussian sigma) of a partial in bins.
        spread: relative pitch uncertainty; widens the lobe of partial ``k`` by ``k * spread * f0``.
        explain_top: Hz; confidence is the share of tonal energy below this that the comb explains.
        confidence: explained share (beyond a flat spectrum's) at which confidence starts and is full.
        hold_frames: frames of the same note over which a partial's level relative to the first three is
            held to its lowest (about 70 ms).
        same_note: octaves; pitches closer than this count as the same note.
        register: Hz; the comb above ``register_band`` fades out as the lowest confident pitch nearby rises
            between these.
        register_frames: frames either side in which the lowest confident pitch is looked for (~0.35 s).
        register_band: Hz; where the comb starts to depend on the register.
        centre_floor: left/right agreement below which a bin gets none of the comb (stereo only).
        centre_band: Hz; the centre requirement fades in between these.
        onset: weight (0..1) of the short sustain for bins on a confident comb.
        neighbour_blend: a partial's level is bounded by the second loudest of its four neighbours plus this
            share of the step up to the loudest.
        harmonicity: louder of partials 2 and 3 relative to the first, at which a note starts to count as
            harmonic and is fully harmonic (for the onset weight).
    """

    f0_range: tuple[float, float] = (38.0, 300.0)
    steps_per_semitone: int = 8
    harmonics: int = 16
    decay: float = 0.8
    top: tuple[float, float] = (1000.0, 2000.0)
    lobe: float = 0.8
    spread: float = 0.01
    explain_top: float = 300.0
    confidence: tuple[float, float] = (0.2, 0.6)
    hold_frames: int = 6
    same_note: float = 0.04
    register: tuple[float, float] = (150.0, 250.0)
    register_frames: int = 30
    register_band: tuple[float, float] = (250.0, 350.0)
    centre_floor: float = 0.3
    centre_band: tuple[float, float] = (100.0, 200.0)
    onset: float = 0.8
    neighbour_blend: float = 0.3
    harmonicity: tuple[float, float] = (0.1, 0.3)

    @property
    def reach(self) -> int:
        """Frames either side that one frame's bass weights depend on (beyond its tonal estimate)."""
        return max(self.hold_frames, self.register_frames)


@dataclass(frozen=True)
class PitchTables:
    """What depends only on the sample rate, FFT size and settings: built once per separation.

    Attributes:
        bins: how many low STFT bins the tracker looks at (0: tracking disabled).
        bin_hz: width of a bin in Hz.
        freqs: float32 ``[bins]`` bin centres in Hz.
        candidates: float32 ``[J]`` candidate fundamentals in Hz.
        salience: sparse ``[J, bins]``: salience of each candidate from square-root magnitudes.
        taper: float32 ``[bins]`` fade-out of the comb towards ``top``.
        explain: bool ``[bins]``: bins below ``explain_top``.
        centre_ramp: float32 ``[bins]``: how much the centre requirement applies.
        register_ramp: float32 ``[bins]``: how much the register requirement applies.
        settings: the tuning they were built for.
    """

    bins: int
    bin_hz: float
    freqs: np.ndarray
    candidates: np.ndarray
    salience: sparse.csr_matrix
    taper: np.ndarray
    explain: np.ndarray
    centre_ramp: np.ndarray
    register_ramp: np.ndarray
    settings: PitchSettings

    @classmethod
    def build(cls, sample_rate: int, n_fft: int, settings: PitchSettings) -> PitchTables:
        f_all = frequencies(sample_rate, n_fft)
        bin_hz = float(sample_rate) / n_fft
        lo, hi = settings.f0_range
        bins = int(np.searchsorted(f_all, settings.top[1], side="right"))
        if bins < _MIN_BINS or hi <= lo or f_all[-1] < 2.0 * hi:
            bins = 0
        f = f_all[:bins].astype(np.float32)
        steps = 12 * settings.steps_per_semitone
        count = int(np.floor(np.log2(hi / lo) * steps)) + 1
        candidates = (lo * 2.0 ** (np.arange(count) / steps)).astype(np.float32)
        # +weight at each partial k * f0, -weight half a partial below; linear interpolation between bins
        f0 = candidates.astype(np.float64)[:, None]
        k = np.arange(1, settings.harmonics + 1, dtype=np.float64)[None, :]
        weight = np.where(k * f0 <= settings.top[1], settings.decay ** (k - 1), 0.0)  # [J, K]
        rows, cols, vals = [], [], []
        for pos, sign in ((k * f0 / bin_hz, 1.0), ((k - 0.5) * f0 / bin_hz, -1.0)):
            base = np.floor(pos).astype(np.int64)
            frac = pos - base
            for idx, part in ((base, 1.0 - frac), (base + 1, frac)):
                keep = (idx < bins) & (weight > 0)
                rows.append(np.broadcast_to(np.arange(candidates.size)[:, None], idx.shape)[keep])
                cols.append(idx[keep])
                vals.append((sign * weight * part)[keep])
        salience = sparse.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(candidates.size, bins),
            dtype=np.float32,
        )
        salience.sum_duplicates()
        return cls(
            bins=bins,
            bin_hz=bin_hz,
            freqs=f,
            candidates=candidates,
            salience=salience,
            taper=(1.0 - _ramp(f, *settings.top)).astype(np.float32),
            explain=f < settings.explain_top,
            centre_ramp=_ramp(f, *settings.centre_band).astype(np.float32),
            register_ramp=_ramp(f, *settings.register_band).astype(np.float32),
            settings=settings,
        )


@dataclass(frozen=True)
class BassPitch:
    """The tracked bass line of ``N`` frames.

    Attributes:
        f0: float32 ``[N]`` fundamental in Hz (meaningful where confidence > 0).
        confidence: float32 ``[N]`` 0..1.
        comb: float32 ``[N, bins]`` 0..1: closeness of each bin to a partial of ``f0``.
        partial: int64 ``[N, bins]``: the partial number nearest each bin (0: below the fundamental).
        harmonicity: float32 ``[N]`` 0..1: whether the second or third partial is there at all (a kick's
            low end is a near-pure sine, a bass note has overtones).
    """

    f0: np.ndarray
    confidence: np.ndarray
    comb: np.ndarray
    partial: np.ndarray
    harmonicity: np.ndarray


def track(tonal: np.ndarray, tables: PitchTables) -> BassPitch:
    """The bass line of a tonal magnitude estimate ``[N, >= bins]`` (float32; only the first bins are read)."""
    settings = tables.settings
    n = tonal.shape[0]
    if tables.bins == 0 or n == 0:
        zeros = np.zeros(n, dtype=np.float32)
        return BassPitch(
            np.full(n, tables.candidates[0] if tables.candidates.size else 1.0, dtype=np.float32),
            zeros,
            np.zeros((n, tables.bins), dtype=np.float32),
            np.zeros((n, tables.bins), dtype=np.int64),
            zeros,
        )
    m = np.ascontiguousarray(tonal[:, : tables.bins], dtype=np.float32)
    salience = np.asarray((tables.salience @ np.sqrt(m).T).T, dtype=np.float32)  # [N, J]
    best = salience.argmax(axis=1)
    f0 = tables.candidates[best]
    # parabolic refinement between neighbouring candidates (in log frequency)
    inner = (best > 0) & (best < tables.candidates.size - 1)
    i = np.clip(best, 1, max(1, tables.candidates.size - 2))
    rows = np.arange(n)
    a, b, c = salience[rows, i - 1], salience[rows, i], salience[rows, i + 1]
    curve = a - 2.0 * b + c
    ok = inner & (curve < 0)
    offset = np.where(ok, 0.5 * (a - c) / np.where(ok, curve, -1.0), 0.0)
    f0 = (f0 * 2.0 ** (np.clip(offset, -0.5, 0.5) / (12 * settings.steps_per_semitone))).astype(np.float32)

    comb, partial = _comb(f0, tables, settings)
    levels = _levels(m, f0, 3, tables)
    lo, hi = settings.harmonicity
    overtones = np.maximum(levels[:, 1], levels[:, 2]) / (levels[:, 0] + _EPS)
    harmonicity = np.clip((overtones - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    energy = m * m
    low = tables.explain
    explained = (comb[:, low] * energy[:, low]).sum(axis=1) / (energy[:, low].sum(axis=1) + _EPS)
    coverage = comb[:, low].mean(axis=1)  # what the comb would explain of a flat spectrum
    explained = np.maximum(explained - coverage, 0.0) / (1.0 - coverage + np.float32(1e-6))
    lo, hi = settings.confidence
    confidence = np.clip((explained - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return BassPitch(f0, confidence, comb, partial, harmonicity)


def onset_weight(pitch: BassPitch, tables: PitchTables) -> np.ndarray:
    """``[N, bins]`` 0..1: how much a bin's note attacks are judged against the short sustain.

    Only for harmonic notes: a kick's low end (a gliding, decaying near-sine) keeps the long sustain.
    """
    per_frame = pitch.confidence * pitch.harmonicity * np.float32(tables.settings.onset)
    weight: np.ndarray = pitch.comb * per_frame[:, None]
    return weight


def bass_weight(
    tonal: np.ndarray,
    pitch: BassPitch,
    crossover: np.ndarray,
    centre: np.ndarray | None,
    tables: PitchTables,
) -> np.ndarray:
    """Share of each low bin's tonal part that is bass, 0..1 ``[N, bins]``.

    Args:
        tonal: float32 ``[N, >= bins]`` tonal magnitude (the input less its drums).
        pitch: from :func:`track`.
        crossover: float32 ``[bins]`` the plain crossover weights, used where confidence is low.
        centre: float32 ``[N, >= bins]`` left/right agreement (1 = identical), or None for mono.
        tables: from :meth:`PitchTables.build`.
    """
    settings = tables.settings
    bins = tables.bins
    conf = pitch.confidence[:, None]
    if bins == 0:
        return np.zeros((pitch.confidence.size, 0), dtype=np.float32)
    m = tonal[:, :bins]
    share = _partial_share(m, pitch, tables, settings) * tables.taper
    if centre is not None:
        floor = np.float32(settings.centre_floor)
        centred = np.clip((centre[:, :bins] - floor) / (np.float32(1.0) - floor), 0.0, 1.0)
        share *= np.float32(1.0) - (np.float32(1.0) - centred) * tables.centre_ramp
    share *= np.float32(1.0) - np.outer(_register(pitch, settings), tables.register_ramp)
    weight: np.ndarray = conf * share + (np.float32(1.0) - conf) * crossover
    return weight


def _comb(f0: np.ndarray, tables: PitchTables, settings: PitchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Closeness ``[N, bins]`` of each bin to the nearest partial of ``f0`` ``[N]``, and that partial's number."""
    ratio = tables.freqs[None, :] / f0[:, None]
    partial = np.rint(ratio)
    distance = (ratio - partial) * f0[:, None]  # Hz
    sigma_sq = (
        np.float32((settings.lobe * tables.bin_hz) ** 2)
        + (partial * np.float32(settings.spread) * f0[:, None]) ** 2
    )
    comb = np.exp(-0.5 * distance * distance / sigma_sq)
    comb *= (partial >= 1) & (partial <= settings.harmonics)
    return comb.astype(np.float32), partial.astype(np.int64)


def _partial_share(
    m: np.ndarray, pitch: BassPitch, tables: PitchTables, settings: PitchSettings
) -> np.ndarray:
    """Soft share ``[N, bins]`` of each bin that a bass partial accounts for (before centre and register)."""
    n = m.shape[0]
    count = settings.harmonics
    level = _levels(m, pitch.f0, count + 2, tables)  # two extra partials as neighbours of the last
    # (a) no louder than its neighbours k-2, k-1, k+1, k+2 allow: the second loudest of them plus a part of the
    # step to the loudest (a partial towering over its neighbours is mostly another instrument on that pitch)
    padded = np.zeros((n, count + 6), dtype=np.float32)
    padded[:, 2 : count + 4] = level
    a, b = padded[:, 0 : count + 2], padded[:, 1 : count + 3]
    c, d = padded[:, 3 : count + 5], padded[:, 4 : count + 6]
    low_ab, high_ab = np.minimum(a, b), np.maximum(a, b)
    low_cd, high_cd = np.minimum(c, d), np.maximum(c, d)
    loudest = np.maximum(high_ab, high_cd)
    second = np.maximum(np.minimum(high_ab, high_cd), np.maximum(low_ab, low_cd))
    around = second + (loudest - second) * np.float32(settings.neighbour_blend)
    bound = np.minimum(level, around)
    bound[:, :2] = level[:, :2]
    # (b) relative to the first three partials, no higher than a few frames earlier in the same note
    reference = np.sqrt((level[:, :3] ** 2).sum(axis=1, keepdims=True)) + np.float32(1e-9)
    relative = bound / reference
    held = relative.copy()
    log_f0 = np.log2(pitch.f0)
    for lag in range(1, min(settings.hold_frames, n - 1) + 1):
        same = np.abs(log_f0[lag:] - log_f0[:-lag]) < settings.same_note
        np.minimum(held[lag:], np.where(same[:, None], relative[:-lag], np.inf), out=held[lag:])
    bound = np.minimum(bound, reference * held)
    bound[:, :2] = level[:, :2]
    # each bin: the bounded level of its partial, shaped by the partial's lobe
    index = np.clip(pitch.partial - 1, 0, count + 1)
    model = np.take_along_axis(bound, index, 1) * pitch.comb
    ratio = np.minimum(np.float32(1.0), model / (m + _EPS))
    rest = (np.float32(1.0) - ratio) ** 2
    ratio *= ratio
    share: np.ndarray = ratio / (ratio + rest + _EPS)  # Wiener-like, as the other masks (power 2)
    return share.astype(np.float32, copy=False)


def _levels(m: np.ndarray, f0: np.ndarray, count: int, tables: PitchTables) -> np.ndarray:
    """Level ``[N, count]`` of partials 1..count of ``f0`` ``[N]``: the larger of the two bins around each."""
    k = np.arange(1, count + 1, dtype=np.float32)
    pos = f0[:, None] * k[None, :] / np.float32(tables.bin_hz)
    base = np.floor(pos).astype(np.int64)
    inside = base + 1 < m.shape[1]
    base = np.clip(base, 0, m.shape[1] - 2)
    level: np.ndarray = (
        np.maximum(np.take_along_axis(m, base, 1), np.take_along_axis(m, base + 1, 1)) * inside
    )
    return level


def _register(pitch: BassPitch, settings: PitchSettings) -> np.ndarray:
    """``[N]`` 0..1: 1 where the lowest confident pitch within ``register_frames`` lies above the register."""
    confident = np.where(pitch.confidence > 0.3, pitch.f0, np.float32(np.inf))
    lowest = ndimage.minimum_filter1d(confident, 2 * settings.register_frames + 1, mode="nearest")
    lowest = np.minimum(lowest, pitch.f0)
    return _ramp(lowest, *settings.register).astype(np.float32)


def _ramp(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, raised cosine in between."""
    t = np.clip((f - lo) / (hi - lo), 0.0, 1.0)
    out: np.ndarray = 0.5 - 0.5 * np.cos(np.pi * t)
    return out
