"""Musical analysis of context audio: chroma, key, chords per bar, and the helpers every analysis shares.

Pure functions on ``[C, T]`` float32 arrays (``[T]`` is accepted as mono); no I/O, no global state. Bar math
goes through :class:`bridge.audio.timing.Grid`, so bar 1 of the audio starts at sample 0. Onsets, groove and
density are in :mod:`bridge.audio.onsets`.

Key estimation correlates the context's pitch-class profile with the Krumhansl-Kessler key profiles over all
24 keys. A relative pair (A minor / C major) shares its notes, so when the two score within
``RELATIVE_MARGIN`` of each other the tie is broken by the opening: the key whose tonic triad sounds more in
the first bar wins (songs usually open on their tonic chord). That is why an Am-F-C-G song reads as A minor.

Chords follow the bass (:mod:`bridge.audio.bassline`): the tracked bass line's overtones leave the chroma (a D
bass no longer adds the F# of its 5th partial to a Dm7 bar), and a bar's root is weighted towards the pitch
class the bass plays, since a 7th chord's notes fit two triads (Am7 = A C E G holds Am and C).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bridge.audio.bassline import BassLine, bass_per_bar, overtone_share, track_bass
from bridge.audio.spectral import Stft
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
BASS_BONUS = 0.2  # added to a chord's score for a bar whose confident bass plays its root throughout
CHUNK_FRAMES = 2048  # STFT frames per chunk between progress reports
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


# ------------------------------------------------------------------------------------------- shared helpers


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``[C, T]`` or ``[T]`` -> ``[T]`` (mean of channels)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def is_silent(audio: np.ndarray | None) -> bool:
    """True when ``audio`` is missing, empty or peaks below -80 dBFS."""
    if audio is None or np.asarray(audio).size == 0:
        return True
    return bool(np.max(np.abs(audio)) < SILENCE_PEAK)


def context_bars(n_samples: int, grid: Grid) -> int:
    """Bars of audio in ``n_samples`` samples, counting a last partial bar if at least half of it is there."""
    return max(1, int(np.floor(grid.bars_in(int(n_samples)) + 0.5)))


def nearest_pow2(x: float) -> int:
    """The power of two nearest to ``x`` on a log scale, at least 16 (window and hop lengths)."""
    return int(2 ** round(np.log2(max(x, 16.0))))


def stft_magnitude(mono: np.ndarray, n_fft: int, hop: int, progress: ProgressFn | None = None) -> np.ndarray:
    """STFT magnitude of ``mono`` ``[T]`` as float32 ``[frames, n_fft // 2 + 1]``, frame ``i`` centred on
    sample ``i * hop`` (the layout of :func:`bridge.audio.spectral.stft`, frames first), computed in chunks
    of frames with ``progress(fraction, "analyse")`` after each."""
    plan = Stft(n_fft, hop)
    padded = plan.pad(mono)
    total = plan.n_frames(mono.shape[-1])
    mag = np.empty((total, plan.bins), dtype=np.float32)
    for start in range(0, total, CHUNK_FRAMES):
        stop = min(total, start + CHUNK_FRAMES)
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
    bass: BassLine | None = None,
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
        bass: the tracked bass of ``audio`` (:func:`bridge.audio.bassline.track_bass`): peaks on its overtones
            that sound another pitch class than its root (the 3rd partial's fifth, the 5th's major third) are
            left out, as far as the tracker is confident.
        progress: ``callback(fraction, "analyse")`` between chunks of a long signal.

    Returns:
        ``[12, frames]`` float32, row 0 = C; frame ``i`` is centred on sample ``i * hop``.
    """
    n_fft = n_fft or nearest_pow2(0.093 * sample_rate)
    hop = hop or n_fft // 4
    mono = to_mono(audio)
    if mono.size == 0:
        return np.zeros((12, 0), dtype=np.float32)
    # frame by frame, so a chunk of frames at a time: memory follows the chunk, not the context's length
    plan = Stft(n_fft, hop)
    padded = plan.pad(mono)
    total = plan.n_frames(mono.shape[-1])
    out = np.empty((12, total), dtype=np.float32)
    for start in range(0, total, CHUNK_FRAMES):
        stop = min(total, start + CHUNK_FRAMES)
        mag = np.abs(plan.analyse(padded, start, stop))  # [frames, F]
        centres = (start + np.arange(stop - start)) * hop  # the frames' centres, in samples
        out[:, start:stop] = _peak_chroma(mag, sample_rate, n_fft, fmin, fmax, bass, centres)
        if progress is not None:
            progress(stop / total, "analyse")
    return out


def _peak_chroma(
    mag: np.ndarray,
    sample_rate: int,
    n_fft: int,
    fmin: float,
    fmax: float,
    bass: BassLine | None,
    centres: np.ndarray,
) -> np.ndarray:
    """:func:`chroma` of the magnitude frames ``mag`` ``[frames, F]`` centred on samples ``centres`` ->
    ``[12, frames]``."""
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
    if bass is not None:
        weight = weight * (1.0 - overtone_share(bass, centres[f], freq))
    pc = nearest.astype(np.int64) % 12
    out = np.bincount(pc * frames + f, weights=weight, minlength=12 * frames)
    return out.reshape(12, frames).astype(np.float32)


def _bar_chroma_raw(
    audio: np.ndarray,
    sample_rate: int,
    grid: Grid,
    bars: int,
    bass: BassLine | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Chroma ``[12, bars]`` summed over the frames whose whole window lies in each bar (frames centred in
    the bar when bars are shorter than a window); frames centred past the end of ``audio`` are left out."""
    n_fft = nearest_pow2(0.093 * sample_rate)
    hop = n_fft // 4
    frames = chroma(audio, sample_rate, n_fft=n_fft, hop=hop, bass=bass, progress=progress)
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
    audio: np.ndarray,
    sample_rate: int,
    grid: Grid,
    bars: int,
    *,
    bass: BassLine | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Chroma summed over each bar (frames centred in the bar) and normalised to sum 1 per bar.

    ``bass``: leave out the bass's overtones (see :func:`chroma`).

    Returns:
        ``[12, bars]`` float32; a silent bar (60 dB below the loudest, or past the end of ``audio``) is all
        zeros.
    """
    raw = _bar_chroma_raw(audio, sample_rate, grid, int(bars), bass, progress)
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


def match_chord(bar_chroma: np.ndarray, key: Key, bass: np.ndarray | None = None) -> Chord:
    """The triad whose template best matches ``bar_chroma`` ``[12]``, diatonic chords of ``key`` preferred.

    ``bass`` ``[12]``, a column of :func:`bridge.audio.bassline.bass_per_bar`, prefers the chord whose root
    the bass plays (a 7th chord holds two triads, Am7 = Am + C: its root is the one in the bass), and for
    such a chord lets the bar's own third, not the key, decide between major and minor.
    """
    v = np.asarray(bar_chroma, dtype=np.float64)
    v = v / max(float(np.linalg.norm(v)), 1e-30)
    low = np.zeros(12) if bass is None else np.asarray(bass, dtype=np.float64)
    best, best_score = key.triad(0), -np.inf
    for chord, bonus in _chord_candidates(key):
        # a root the bass confirms: the bar's own third decides the quality, not the key's preference
        score = float(v[list(chord.pitch_classes)].sum()) / np.sqrt(3.0) + bonus * (1.0 - low[chord.root])
        score += BASS_BONUS * low[chord.root]
        if score > best_score:
            best, best_score = chord, score
    return best


def default_chords(key: Key, bars: int) -> list[Chord]:
    """A pleasant diatonic progression, one chord per bar: i-VI-III-VII in minor, I-V-vi-IV in major."""
    degrees = (0, 5, 2, 6) if key.mode == "minor" else (0, 4, 5, 3)
    return [key.triad(degrees[b % 4]) for b in range(int(bars))]


def chords_from_chroma(
    bar_chroma: np.ndarray, key: Key, bars: int, bar_bass: np.ndarray | None = None
) -> list[Chord]:
    """One chord per bar for ``bars`` bars from :func:`chroma_per_bar` output ``[12, n]``.

    Bars past ``n`` repeat the first ``n`` (cycle); an all-zero (silent) bar holds the previous chord; no
    heard bar at all gives :func:`default_chords`. ``bar_bass`` ``[12, n]``, from
    :func:`bridge.audio.bassline.bass_per_bar`, weights each bar's root towards its bass (see
    :func:`match_chord`).
    """
    c = np.asarray(bar_chroma, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != 12 or c.shape[1] == 0:
        raise InvalidArgument(f"bar chroma must be shaped [12, bars >= 1], got {list(c.shape)}")
    low = np.zeros_like(c) if bar_bass is None else np.asarray(bar_bass, dtype=np.float64)
    if low.shape != c.shape:
        raise InvalidArgument(
            f"bar bass must be shaped like the bar chroma {list(c.shape)}, got {list(low.shape)}"
        )
    found = [match_chord(c[:, b], key, low[:, b]) if c[:, b].sum() > 0 else None for b in range(c.shape[1])]
    heard = [ch for ch in found if ch is not None]
    if not heard:
        return default_chords(key, bars)
    filled: list[Chord] = []
    for ch in found:
        filled.append(ch if ch is not None else (filled[-1] if filled else heard[0]))
    return [filled[b % len(filled)] for b in range(int(bars))]


def chords_per_bar(audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, key: Key) -> list[Chord]:
    """One chord per bar for ``bars`` bars, read from ``audio`` ``[C, T]``; the bass names each bar's root
    and its overtones are left out of the chroma (:mod:`bridge.audio.bassline`).

    Uses the first ``bars`` bars of a longer ``audio``; a shorter one's chords repeat (cycle) over its bars.
    A silent bar holds the previous chord; silent audio gives :func:`default_chords`.

    Returns:
        ``bars`` chords.
    """
    n_samples = np.asarray(audio).shape[-1]
    n_ctx = min(int(bars), context_bars(n_samples, grid))
    line = track_bass(audio, sample_rate)
    bar_chroma = chroma_per_bar(audio, sample_rate, grid, n_ctx, bass=line)
    return chords_from_chroma(bar_chroma, key, bars, bass_per_bar(line, n_samples, grid, n_ctx))


# ------------------------------------------------------------------------------------------- moved names
