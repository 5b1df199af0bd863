"""Musical analysis of context audio: onsets, chroma, key, chords per bar, groove.

Pure functions on ``[C, T]`` float32 arrays (``[T]`` is accepted as mono); no I/O, no global state. Bar math
goes through :class:`bridge.audio.timing.Grid`, so bar 1 of the audio starts at sample 0.

Key estimation correlates the context's pitch-class profile with the Krumhansl-Kessler key profiles over all
24 keys. A relative pair (A minor / C major) shares its notes, so when the two score within
``RELATIVE_MARGIN`` of each other the tie is broken by the opening: the key whose tonic triad sounds more in
the first bar wins (songs usually open on their tonic chord). That is why an Am-F-C-G song reads as A minor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bridge.audio.spectral import Stft, stft
from bridge.audio.timing import Grid
from bridge.errors import InvalidArgument

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}
_SUFFIX = {"maj": "", "min": "m", "dim": "dim"}
# Krumhansl-Kessler probe-tone profiles, tonic first.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
RELATIVE_MARGIN = 0.15
DIATONIC_BONUS = 0.08
ONSET_LOOKBACK_S = 0.02  # an onset starts at most this long before its sharpest energy rise
MIN_RISE_DB = 3.0  # a flux peak without at least this sharp an energy rise near it is not an onset
SHARP_RISE_DB = 4.5  # a softer energy rise only times an onset when it is near the flux peak:
SOFT_SHIFT_S = 0.008  # within this many seconds
_CHUNK_FRAMES = 2048  # STFT frames per chunk between progress reports
TONAL_CLARITY = 0.6  # below this (see tonal_clarity) a context has no key or chords to follow
SILENCE_PEAK = 1e-4  # -80 dBFS: quieter than this is treated as silence
SILENT_BAR = 1e-3  # a bar whose chroma is 60 dB below the loudest bar's counts as silent


@dataclass(frozen=True)
class Chord:
    """A triad: ``root`` pitch class (C=0) and ``quality`` ``"maj"``, ``"min"`` or ``"dim"``."""

    root: int
    quality: str = "maj"

    def __post_init__(self) -> None:
        if self.quality not in _TRIADS:
            raise InvalidArgument(f"chord quality must be one of maj, min, dim, got {self.quality!r}")
        object.__setattr__(self, "root", int(self.root) % 12)

    @property
    def pitch_classes(self) -> tuple[int, int, int]:
        """Root, third and fifth as pitch classes."""
        a, b, c = ((self.root + i) % 12 for i in _TRIADS[self.quality])
        return a, b, c

    @property
    def name(self) -> str:
        """Chord symbol such as ``"Am"``, ``"F"`` or ``"Bdim"``."""
        return PITCH_NAMES[self.root] + _SUFFIX[self.quality]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Key:
    """A major or natural-minor key: ``tonic`` pitch class (C=0) and ``mode``."""

    tonic: int
    mode: str = "minor"

    def __post_init__(self) -> None:
        if self.mode not in ("major", "minor"):
            raise InvalidArgument(f"key mode must be 'major' or 'minor', got {self.mode!r}")
        object.__setattr__(self, "tonic", int(self.tonic) % 12)

    @property
    def name(self) -> str:
        """E.g. ``"A minor"``."""
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    @property
    def scale_pitch_classes(self) -> tuple[int, ...]:
        """The seven pitch classes of the scale, tonic first (natural minor for minor keys)."""
        steps = _MAJOR_STEPS if self.mode == "major" else _MINOR_STEPS
        return tuple((self.tonic + s) % 12 for s in steps)

    @property
    def relative(self) -> Key:
        """The relative key (A minor <-> C major)."""
        if self.mode == "minor":
            return Key((self.tonic + 3) % 12, "major")
        return Key((self.tonic + 9) % 12, "minor")

    def triad(self, degree: int) -> Chord:
        """The diatonic triad on scale degree ``degree`` (0 = tonic)."""
        scale = self.scale_pitch_classes
        root, third, fifth = (scale[(degree + i) % 7] for i in (0, 2, 4))
        intervals = ((third - root) % 12, (fifth - root) % 12)
        quality = {(4, 7): "maj", (3, 7): "min"}.get(intervals, "dim")
        return Chord(root, quality)

    def diatonic_chords(self) -> tuple[Chord, ...]:
        """The seven diatonic triads, tonic first."""
        return tuple(self.triad(d) for d in range(7))

    def __str__(self) -> str:
        return self.name


DEFAULT_KEY = Key(9, "minor")
ProgressFn = Callable[[float, str], None]


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``[C, T]`` or ``[T]`` -> ``[T]`` (mean of channels)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=0)


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


def is_silent(audio: np.ndarray | None) -> bool:
    """True when ``audio`` is missing, empty or peaks below -80 dBFS."""
    if audio is None or np.asarray(audio).size == 0:
        return True
    return bool(np.max(np.abs(audio)) < SILENCE_PEAK)


def context_bars(n_samples: int, grid: Grid) -> int:
    """Bars of audio in ``n_samples`` samples, counting a last partial bar if at least half of it is there."""
    return max(1, int(np.floor(grid.bars_in(int(n_samples)) + 0.5)))


def _pow2(x: float) -> int:
    return int(2 ** round(np.log2(max(x, 16.0))))


def _magnitude(mono: np.ndarray, n_fft: int, hop: int, progress: ProgressFn | None = None) -> np.ndarray:
    """STFT magnitude of ``mono`` ``[T]`` as float32 ``[frames, n_fft // 2 + 1]``, frame ``i`` centred on
    sample ``i * hop`` (the layout of :func:`bridge.audio.spectral.stft`, frames first), computed in chunks
    of frames with ``progress(fraction, "analyse")`` after each."""
    plan = Stft(n_fft, hop)
    padded = plan.pad(mono)
    total = plan.n_frames(mono.shape[-1])
    mag = np.empty((total, plan.bins), dtype=np.float32)
    for start in range(0, total, _CHUNK_FRAMES):
        stop = min(total, start + _CHUNK_FRAMES)
        mag[start:stop] = np.abs(plan.analyse(padded, start, stop))
        if progress is not None:
            progress(stop / total, "analyse")
    return mag


# ----------------------------------------------------------------------------------------------- chroma


def chroma(
    audio: np.ndarray,
    sample_rate: int,
    *,
    n_fft: int | None = None,
    hop: int | None = None,
    fmin: float = 50.0,
    fmax: float = 5000.0,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Pitch-class energy over time, tuned to A440.

    Spectral peaks of the STFT magnitude between ``fmin`` and ``fmax`` are located to a fraction of a bin
    (parabolic interpolation of the log magnitude), mapped onto the log-frequency (MIDI) axis and added to
    their nearest pitch class, weighted by magnitude and by ``cos^2`` of the distance to the semitone centre.

    Args:
        audio: ``[C, T]`` or ``[T]``.
        n_fft: window length; default about 93 ms (4096 at 44.1/48 kHz).
        hop: default ``n_fft // 4``.
        progress: ``callback(fraction, "analyse")`` between chunks of a long signal.

    Returns:
        ``[12, frames]`` float32, row 0 = C; frame ``i`` is centred on sample ``i * hop``.
    """
    n_fft = n_fft or _pow2(0.093 * sample_rate)
    hop = hop or n_fft // 4
    mono = to_mono(audio)
    if mono.size == 0:
        return np.zeros((12, 0), dtype=np.float32)
    mag = _magnitude(mono, n_fft, hop, progress)  # [frames, F]
    frames = mag.shape[0]
    mid = mag[:, 1:-1]
    floor = np.maximum(mag.max(axis=1, keepdims=True) * 10 ** (-50 / 20), 1e-6)
    f, k = np.nonzero((mid > mag[:, :-2]) & (mid >= mag[:, 2:]) & (mid > floor))
    k = k + 1
    a, b, c = (np.log(mag[f, k + d].astype(np.float64) + 1e-12) for d in (-1, 0, 1))
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1.0, denom), 0.0)
    freq = (k + np.clip(shift, -0.5, 0.5)) * sample_rate / n_fft
    keep = (freq >= fmin) & (freq <= fmax)
    freq, f, weight = freq[keep], f[keep], mag[f[keep], k[keep]].astype(np.float64)
    midi = 69.0 + 12.0 * np.log2(freq / 440.0)
    nearest = np.round(midi)
    weight = weight * np.cos(np.pi * (midi - nearest)) ** 2
    pc = nearest.astype(np.int64) % 12
    out = np.bincount(pc * frames + f, weights=weight, minlength=12 * frames)
    return out.reshape(12, frames).astype(np.float32)


def _bar_chroma_raw(
    audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, progress: ProgressFn | None = None
) -> np.ndarray:
    """Chroma ``[12, bars]`` summed over the frames whose whole window lies in each bar (frames centred in
    the bar when bars are shorter than a window); frames centred past the end of ``audio`` are left out."""
    n_fft = _pow2(0.093 * sample_rate)
    hop = n_fft // 4
    frames = chroma(audio, sample_rate, n_fft=n_fft, hop=hop, progress=progress)
    centres = np.arange(frames.shape[1]) * hop
    edges = grid.bar_positions(bars + 1)
    bar_of = np.searchsorted(edges, centres, side="right") - 1
    first = np.searchsorted(edges, centres - n_fft // 2, side="right") - 1
    last = np.searchsorted(edges, centres + n_fft // 2 - 1, side="right") - 1
    inside = (first == bar_of) & (last == bar_of)
    short = np.diff(edges) < n_fft
    ok = (bar_of >= 0) & (bar_of < bars) & (centres < np.asarray(audio).shape[-1])
    ok &= inside | short[np.clip(bar_of, 0, bars - 1)]
    out = np.zeros((12, bars), dtype=np.float64)
    for pc in range(12):
        out[pc] = np.bincount(bar_of[ok], weights=frames[pc, ok], minlength=bars)[:bars]
    return out


def chroma_per_bar(
    audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, *, progress: ProgressFn | None = None
) -> np.ndarray:
    """Chroma summed over each bar (frames centred in the bar) and normalised to sum 1 per bar.

    Returns:
        ``[12, bars]`` float32; a silent bar (60 dB below the loudest, or past the end of ``audio``) is all
        zeros.
    """
    raw = _bar_chroma_raw(audio, sample_rate, grid, int(bars), progress)
    total = raw.sum(axis=0, keepdims=True)
    heard = total > max(SILENT_BAR * float(total.max(initial=0.0)), 1e-30)
    return np.where(heard, raw / np.maximum(total, 1e-30), 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- key, chords


def _key_scores(profile: np.ndarray) -> np.ndarray:
    """Correlation of a 12-bin profile with the 24 rotated key profiles: ``[2 (major, minor), 12 tonics]``."""
    scores = np.zeros((2, 12))
    for m, template in enumerate((_KK_MAJOR, _KK_MINOR)):
        for tonic in range(12):
            scores[m, tonic] = np.corrcoef(profile, np.roll(template, tonic))[0, 1]
    return scores


def estimate_key(chroma_: np.ndarray) -> Key:
    """Most likely key of a chroma profile (Krumhansl-Kessler correlation over 24 keys).

    Args:
        chroma_: ``[12]`` or ``[12, frames_or_bars]`` in time order; each column is normalised first, so every
            bar (or frame) counts the same. The first column is the "opening" used to break a tie between
            relative keys (see the module docstring).

    Returns:
        The key; :data:`DEFAULT_KEY` (A minor) when the chroma holds no energy.
    """
    c = np.asarray(chroma_, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != 12:
        raise InvalidArgument(f"chroma must be shaped [12] or [12, frames], got {list(c.shape)}")
    totals = c.sum(axis=0)
    c = c[:, totals > 0] / totals[totals > 0]
    if c.shape[1] == 0:
        return DEFAULT_KEY
    profile = c.sum(axis=1)
    if np.ptp(profile) <= 0:
        return DEFAULT_KEY
    scores = _key_scores(profile)
    mode_i, tonic = np.unravel_index(int(np.argmax(scores)), scores.shape)
    best = Key(int(tonic), ("major", "minor")[int(mode_i)])
    rel = best.relative
    rel_score = scores[0 if rel.mode == "major" else 1, rel.tonic]
    if scores[mode_i, tonic] - rel_score < RELATIVE_MARGIN:
        opening = c[:, 0]
        if opening[list(rel.triad(0).pitch_classes)].sum() > opening[list(best.triad(0).pitch_classes)].sum():
            return rel
    return best


def tonal_clarity(bar_chroma: np.ndarray) -> float:
    """How pitched the audio is: the share of the three strongest pitch classes, averaged over heard bars.

    About 0.8 to 1 for chords, bass lines and melodies; about 0.3 to 0.45 for drums and noise, whose chroma
    is spread over all twelve classes (below ``TONAL_CLARITY`` there is no key to read). 0 when silent.

    Args:
        bar_chroma: ``[12, bars]`` from :func:`chroma_per_bar`.
    """
    c = np.asarray(bar_chroma, dtype=np.float64)
    heard = c.sum(axis=0) > 0
    if not heard.any():
        return 0.0
    c = c[:, heard] / c[:, heard].sum(axis=0)
    return float(np.sort(c, axis=0)[-3:].sum(axis=0).mean())


def _chord_candidates(key: Key) -> list[tuple[Chord, float]]:
    diatonic = set(key.diatonic_chords())
    out = [
        (Chord(r, q), DIATONIC_BONUS if Chord(r, q) in diatonic else 0.0)
        for q in ("maj", "min")
        for r in range(12)
    ]
    out += [(ch, DIATONIC_BONUS) for ch in diatonic if ch.quality == "dim"]
    return out


def match_chord(bar_chroma: np.ndarray, key: Key) -> Chord:
    """The triad whose template best matches ``bar_chroma`` ``[12]``, diatonic chords of ``key`` preferred."""
    v = np.asarray(bar_chroma, dtype=np.float64)
    v = v / max(float(np.linalg.norm(v)), 1e-30)
    best, best_score = key.triad(0), -np.inf
    for chord, bonus in _chord_candidates(key):
        score = float(v[list(chord.pitch_classes)].sum()) / np.sqrt(3.0) + bonus
        if score > best_score:
            best, best_score = chord, score
    return best


def default_chords(key: Key, bars: int) -> list[Chord]:
    """A pleasant diatonic progression, one chord per bar: i-VI-III-VII in minor, I-V-vi-IV in major."""
    degrees = (0, 5, 2, 6) if key.mode == "minor" else (0, 4, 5, 3)
    return [key.triad(degrees[b % 4]) for b in range(int(bars))]


def chords_from_chroma(bar_chroma: np.ndarray, key: Key, bars: int) -> list[Chord]:
    """One chord per bar for ``bars`` bars from :func:`chroma_per_bar` output ``[12, n]``.

    Bars past ``n`` repeat the first ``n`` (cycle); an all-zero (silent) bar holds the previous chord; no
    heard bar at all gives :func:`default_chords`.
    """
    c = np.asarray(bar_chroma, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != 12 or c.shape[1] == 0:
        raise InvalidArgument(f"bar chroma must be shaped [12, bars >= 1], got {list(c.shape)}")
    found = [match_chord(c[:, b], key) if c[:, b].sum() > 0 else None for b in range(c.shape[1])]
    heard = [ch for ch in found if ch is not None]
    if not heard:
        return default_chords(key, bars)
    filled: list[Chord] = []
    for ch in found:
        filled.append(ch if ch is not None else (filled[-1] if filled else heard[0]))
    return [filled[b % len(filled)] for b in range(int(bars))]


def chords_per_bar(audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, key: Key) -> list[Chord]:
    """One chord per bar for ``bars`` bars, read from ``audio`` ``[C, T]``.

    Uses the first ``bars`` bars of a longer ``audio``; a shorter one's chords repeat (cycle) over its bars.
    A silent bar holds the previous chord; silent audio gives :func:`default_chords`.

    Returns:
        ``bars`` chords.
    """
    n_ctx = min(int(bars), context_bars(np.asarray(audio).shape[-1], grid))
    return chords_from_chroma(chroma_per_bar(audio, sample_rate, grid, n_ctx), key, bars)


# ------------------------------------------------------------------------------------------ onsets, groove


def _onset_spectrum(
    mono: np.ndarray, sample_rate: int, progress: ProgressFn | None = None
) -> tuple[np.ndarray, int, int]:
    """Log magnitude ``[frames, F]`` for onset detection, with ``hop`` and ``n_fft``.

    ``n_fft`` zeros are put before sample 0 (rather than the STFT's mirrored edge) so an onset at 0 is a rise
    like any other; frame ``i`` is centred on sample ``i * hop - n_fft``.
    """
    hop = _pow2(sample_rate / 172.0)
    n_fft = 8 * hop
    padded = np.concatenate([np.zeros(n_fft, dtype=np.float32), mono.astype(np.float32, copy=False)])
    return np.log1p(100.0 * _magnitude(padded, n_fft, hop, progress)), hop, n_fft


def _superflux(logmag: np.ndarray, lag: int = 2, progress: ProgressFn | None = None) -> np.ndarray:
    """Onset function ``[frames]``: each bin's rise over the loudest of itself and its two neighbours ``lag``
    frames back, so vibrato, chorus and beating voices do not read as onsets (after SuperFlux). Computed in
    chunks of frames with ``progress(fraction, "analyse")`` after each."""
    total = logmag.shape[0]
    flux = np.zeros(total)
    for start in range(0, total, _CHUNK_FRAMES):
        stop = min(total, start + _CHUNK_FRAMES)
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
