"""Musical variations of any part (a drum loop, a bass line, chords, a full mix) on its bar grid.

A variation is built in two passes:

1. **Rearrangement.** The audio is cut into slices on the grid (16ths, 8ths or beats, chosen by strength and
   seed; each cut moved to just before a transient that lands a few ms early, else to a zero crossing). The
   slices are re-sequenced: each bar's downbeat stays more often than not; other slices are copied from
   elsewhere, swapped, repeated, stuttered on 16ths, muted, reversed (rarely) or re-pitched like a sampler
   (the slice's first 16th as a one-shot, varispeed by a fourth, fifth or octave). About ``strength`` of
   the slices change. Every joint where the audio does not simply continue gets a 3 ms equal-power
   crossfade that ends on the cut, so attacks keep their full edge; stretches left alone are copied sample
   for sample. A seamless loop is treated as circular; other audio is mirrored at its ends.
2. **Timbre.** With probabilities growing with strength: a pitch shift by a musical interval of a bar, half
   a bar or two beats (from strength 0.5, on tonal material, with Rubber Band through ``pedalboard``; drums
   are re-pitched slice by slice instead, so their attacks stay on the grid), a filter sweep or filter drop,
   a touch of drive or bit reduction, chorus or phaser, a tempo-synced delay throw, and a 16th-note gate.
   Region effects fade in and out over 8 ms and may not take more than 4 dB off their region's level.

The result is set back to the input's RMS level with a safety gain that keeps peaks below 0 dBFS.
Variation ``k`` draws from a generator seeded by ``(seed, k)``, so it is the same whatever ``n`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pedalboard as pb
from scipy import signal

from bridge.audio.analysis import to_mono
from bridge.audio.tempo import COMMON_TIME, infer_grid
from bridge.audio.timing import Grid
from bridge.engines.base import Progress, ProgressCallback
from bridge.errors import InvalidArgument

MAX_VARIATIONS = 16
XFADE_S = 0.003  # crossfade at every joint
EDGE_S = 0.008  # wet/dry ramps at the edges of an effect region
SNAP_S = 0.006  # how far a cut may move to sit before an early transient
PEAK_CEILING = 0.999
REGION_DROP_DB = 4.0  # an effect may lower its region's RMS by at most this much (else it is mixed back)
INTERVALS = (12, 7, 5, -5, -7, -12)
WHOLE_PITCH_S = 4.5  # longest part that may be pitch-shifted as a whole
# Varispeed ratios as resample_poly (up, down): pitch factor = down / up (a fifth is 3/2, 2 cents sharp).
_RESAMPLE = {12: (1, 2), 7: (2, 3), 5: (3, 4), -5: (4, 3), -7: (3, 2), -12: (2, 1)}

_Effect = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Piece:
    """One stretch of the output: ``length`` samples at ``start``, played from ``source`` in the input.

    ``span`` is how much source material belongs to the slice; a piece longer than that fades out at its
    end rather than play the start of the next slice's hit.
    """

    start: int
    length: int
    source: int
    span: int
    mode: str = "copy"  # copy | mute | reverse | repitch
    semitones: int = 0


@dataclass
class _Slot:
    """A grid slice of the input as a candidate for rearrangement."""

    start: int
    end: int
    bar: int
    step: int  # first 16th step, counted from bar 1
    in_bar: int  # 16th step within its bar
    full: bool  # a whole unit long (partial slices at bar ends and at the end stay in place)
    source: int
    span: int
    mode: str = "copy"
    semitones: int = 0
    stutter: bool = False
    changed: bool = False


@dataclass(frozen=True)
class _Context:
    """What every variation of one input shares: the audio, its grid and its analysis."""

    audio: np.ndarray  # [C, T] float32
    sample_rate: int
    grid: Grid
    cuts: np.ndarray  # [S + 1] sample index of each 16th step after snapping; cuts[S] >= T
    percussive: bool
    seamless: bool  # the input loops without a step from its last sample to its first
    rms: float
    xfade: int
    edge: int

    @property
    def length(self) -> int:
        return int(self.audio.shape[1])


def vary(
    audio: np.ndarray,
    sample_rate: int,
    n: int,
    strength: float,
    seed: int,
    grid: Grid | None = None,
    progress: ProgressCallback | None = None,
    *,
    pitch: bool = True,
    effects: bool = True,
) -> list[np.ndarray]:
    """Make ``n`` variations of ``audio`` on its bar grid.

    Args:
        audio: ``[C, T]`` (or ``[T]``) samples.
        sample_rate: in Hz.
        n: how many variations, 1 to 16.
        strength: 0 returns the input unchanged; 0.1 changes a few slices; 1 makes a clearly different part
            that still sits on the grid.
        seed: same seed, same variations, bit for bit.
        grid: the bar grid; inferred from the audio (4/4) when ``None``.
        progress: ``callback(fraction, stage)``; raise :class:`bridge.errors.Cancelled` from it to stop.
        pitch: allow pitch shifts and re-pitched slices.
        effects: allow filters, drive, bit reduction, chorus, phaser and delay (rearrangement, stutter and
            gate always apply).

    Returns:
        ``n`` float32 arrays shaped like ``audio``.
    """
    x, shape = _check_audio(audio)
    n = _check_n(n)
    strength = _check_strength(strength)
    seed = _check_seed(seed)
    report = Progress(progress)
    report(0.0, "analyse")
    if strength == 0.0:
        for k in range(n):
            report(k / n, f"vary {k + 1}/{n}")
        report(1.0, f"vary {n}/{n}")
        return [x.reshape(shape).copy() for _ in range(n)]
    if grid is None:
        grid = infer_grid(x, sample_rate, None, None, COMMON_TIME)
    elif grid.sample_rate != sample_rate:
        grid = grid.with_sample_rate(sample_rate)
    report(0.0, "analyse")
    context = _analyse(x, sample_rate, grid)
    results = []
    for k in range(n):
        stage = f"vary {k + 1}/{n}"
        report(k / n, stage)
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        y = _variation(context, strength, rng, pitch, effects, report.sub(k / n, (k + 1) / n), stage)
        results.append(y.reshape(shape))
    report(1.0, f"vary {n}/{n}")
    return results


# ---------------------------------------------------------------------------------------------- checks


def _check_audio(audio: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(audio)
    if x.ndim not in (1, 2) or (x.ndim == 2 and not 1 <= x.shape[0] <= 64):
        raise InvalidArgument(
            f"audio must be shaped [channels, samples] with 1 to 64 channels, got {x.shape}"
        )
    if x.shape[-1] == 0:
        raise InvalidArgument("audio is empty; give at least one sample")
    x2 = np.ascontiguousarray(x.reshape(1, -1) if x.ndim == 1 else x, dtype=np.float32)
    if not np.all(np.isfinite(x2)):
        raise InvalidArgument("audio holds NaN or infinite samples; clean the input first")
    return x2, x.shape


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer, float)) or int(n) != n:
        raise InvalidArgument(f"variations must be a whole number between 1 and {MAX_VARIATIONS}, got {n!r}")
    if not 1 <= int(n) <= MAX_VARIATIONS:
        raise InvalidArgument(f"variations must be between 1 and {MAX_VARIATIONS}, got {int(n)}")
    return int(n)


def _check_strength(strength: float) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InvalidArgument(f"strength must be a number between 0 and 1, got {strength!r}") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"strength must be between 0 and 1, got {strength!r}")
    return value


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidArgument(f"seed must be a whole number, got {seed!r}")
    return int(seed) % 2**64


# ---------------------------------------------------------------------------------------------- analysis


def _analyse(x: np.ndarray, sample_rate: int, grid: Grid) -> _Context:
    total = x.shape[1]
    step = grid.samples_per_step
    n_steps = int(np.ceil(total / step)) + 1
    grid_cuts = np.round(np.arange(n_steps + 1) * step).astype(np.int64)
    grid_cuts = grid_cuts[: int(np.searchsorted(grid_cuts, total)) + 1]  # last one is >= total
    mono = to_mono(x)
    cuts = _snap(mono, grid_cuts, sample_rate, step)
    rms = _rms(x)
    xfade = max(1, min(int(round(XFADE_S * sample_rate)), total // 4))
    edge = max(1, min(int(round(EDGE_S * sample_rate)), total // 4))
    percussive = _is_percussive(mono, sample_rate)
    return _Context(x, sample_rate, grid, cuts, percussive, _is_seamless(x), rms, xfade, edge)


def _is_seamless(x: np.ndarray) -> bool:
    """True when the step from the last sample to the first is no bigger than steps near either end."""
    if x.shape[1] < 64:
        return False
    step = float(np.max(np.abs(x[:, 0] - x[:, -1])))
    near = float(max(np.max(np.abs(np.diff(x[:, :32]))), np.max(np.abs(np.diff(x[:, -32:])))))
    return step <= 2.0 * near + 1e-4


def _snap(mono: np.ndarray, grid_cuts: np.ndarray, sample_rate: int, step: float) -> np.ndarray:
    """Move each inner cut to just before a transient starting within a few ms, else to a zero crossing.

    A transient is a rise of more than 9 dB between two consecutive 1 ms energy windows, above -40 dB of
    the mean power. Cuts at 0 and at the end stay where they are.
    """
    total = mono.size
    cuts: np.ndarray = grid_cuts.copy()
    inner = np.nonzero((grid_cuts > 0) & (grid_cuts < total))[0]
    if inner.size == 0:
        return cuts
    w = max(1, int(round(0.001 * sample_rate)))
    reach = int(min(round(SNAP_S * sample_rate), step / 4))
    pre = max(1, w // 2)
    power = np.square(mono, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    floor = 1e-4 * float(power.mean()) + 1e-20
    centres = grid_cuts[inner]
    offsets = np.arange(-reach, reach + 1)
    t = np.clip(centres[:, None] + offsets[None, :], 0, total)

    def energy(end: np.ndarray) -> np.ndarray:
        end = np.clip(end, w, total)
        result: np.ndarray = (csum[end] - csum[end - w]) / w
        return result

    now = energy(t)
    rise = 10.0 * np.log10((now + floor) / (energy(t - w) + floor))
    best = np.argmax(rise, axis=1)
    rows = np.arange(inner.size)
    strong = (rise[rows, best] > 9.0) & (now[rows, best] > 10.0 * floor)
    onset_cut = t[rows, best] - w - pre
    zero = max(1, w)
    for i, idx in enumerate(inner):
        c = int(grid_cuts[idx])
        if strong[i]:
            cuts[idx] = int(np.clip(onset_cut[i], c - reach, c + reach))
            continue
        lo, hi = max(1, c - zero), min(total - 1, c + zero)
        seg = mono[lo - 1 : hi + 1]
        crossings = np.nonzero((seg[:-1] <= 0) & (seg[1:] > 0))[0] + lo
        if crossings.size:
            cuts[idx] = int(crossings[np.argmin(np.abs(crossings - c))])
    # keep the cuts strictly increasing whatever moved
    for i in range(1, cuts.size):
        if cuts[i] <= cuts[i - 1]:
            cuts[i] = max(grid_cuts[i], cuts[i - 1] + 1)
    return cuts


def _is_percussive(mono: np.ndarray, sample_rate: int) -> bool:
    """True for drum-like material: noisy spectra (median spectral flatness 200 Hz-8 kHz above 0.03)."""
    if mono.size < 4096:
        return False
    excerpt = 30 * sample_rate  # the middle 30 s tell enough
    if mono.size > excerpt:
        mono = mono[(mono.size - excerpt) // 2 :][:excerpt]
    freqs, _, spec = signal.stft(mono, fs=sample_rate, nperseg=2048, noverlap=1024)
    band = (freqs > 200) & (freqs < min(8000.0, 0.45 * sample_rate))
    power = np.abs(spec[band]) ** 2 + 1e-18
    loud = power.mean(axis=0)
    keep = loud > 1e-3 * loud.max()
    if not np.any(keep):
        return False
    flatness = np.exp(np.log(power[:, keep]).mean(axis=0)) / loud[keep]
    return bool(np.median(flatness) > 0.03)


# ---------------------------------------------------------------------------------------------- variation


def _variation(
    ctx: _Context,
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    effects: bool,
    report: Progress,
    stage: str,
) -> np.ndarray:
    pieces = _plan(ctx, strength, rng, pitch)
    y = _render(ctx, pieces)
    report(0.3, stage)
    y = _timbre(ctx, y, strength, rng, pitch, effects, lambda f: report(0.3 + 0.6 * f, stage))
    report(0.9, stage)
    y = _gate(ctx, y, strength, rng)
    return _level(ctx, y)


def _plan(ctx: _Context, strength: float, rng: np.random.Generator, pitch: bool) -> list[_Piece]:
    """Cut the input into grid slices and decide what plays in each."""
    ts = ctx.grid.time_signature
    per_bar = ts.sixteenths_per_bar
    units = sorted({1, 2, max(1, ts.steps_per_beat)})
    min_len = max(4 * ctx.xfade, int(0.03 * ctx.sample_rate))
    units = [u for u in units if u * ctx.grid.samples_per_step >= min_len] or [max(units)]
    weights = np.array([{1: strength, 2: 0.7}.get(u, 1.2 * (1.0 - strength) + 0.2) for u in units])
    unit = int(units[int(rng.choice(len(units), p=weights / weights.sum()))])

    slots = _slots(ctx, unit, per_bar)
    full = [i for i, s in enumerate(slots) if s.full]
    p_down, p_other = 0.45 * strength, min(0.95, 0.9 * strength)
    for i in full:
        slot = slots[i]
        if slot.changed or rng.random() >= (p_down if slot.in_bar == 0 else p_other):
            continue
        _change(slots, i, full, strength, rng, pitch, unit)
    if len(full) >= 2 and not any(s.changed for s in slots):
        candidates = [i for i in full if slots[i].in_bar != 0] or full
        i = int(candidates[int(rng.integers(len(candidates)))])
        slots[i].source, slots[i].span = _pick_source(slots, i, full, rng, unit)
        slots[i].changed = True
    if pitch and ctx.percussive and strength >= 0.85 and rng.random() < 0.3:
        semis = int(rng.choice([12, 7, 5, -5]))
        for i in full:
            if slots[i].mode == "copy":
                slots[i].mode, slots[i].semitones = "repitch", semis
    return _pieces(ctx, slots)


def _slots(ctx: _Context, unit: int, per_bar: int) -> list[_Slot]:
    steps = ctx.cuts.size - 1  # cuts[steps] >= length
    slots: list[_Slot] = []
    for bar in range(int(np.ceil(steps / per_bar))):
        for in_bar in range(0, per_bar, unit):
            s0 = bar * per_bar + in_bar
            if s0 >= steps:
                break
            s1 = min(s0 + unit, (bar + 1) * per_bar, steps)
            start, end = int(ctx.cuts[s0]), min(int(ctx.cuts[s1]), ctx.length)
            if end <= start:
                continue
            full = s1 - s0 == unit and int(ctx.cuts[s1]) <= ctx.length
            slots.append(_Slot(start, end, bar, s0, in_bar, full, start, end - start))
    if slots:
        slots[-1].end = ctx.length
        slots[-1].span = ctx.length - slots[-1].start
    return slots


def _change(
    slots: list[_Slot],
    i: int,
    full: list[int],
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    unit: int,
) -> None:
    """Apply one randomly chosen operation to slot ``i``."""
    slot = slots[i]
    ops = {
        "copy": 3.0,
        "swap": 1.5,
        "repeat": 2.0 if i > 0 and slots[i - 1].full else 0.0,
        "mute": 1.0 if slot.in_bar != 0 else 0.0,
        "stutter": 1.0 if unit >= 2 else 0.0,
        "reverse": 1.2 * max(0.0, strength - 0.6) / 0.4,
        "repitch": 1.5 * max(0.0, strength - 0.45) / 0.55 if pitch else 0.0,
    }
    names = list(ops)
    weights = np.array([ops[k] for k in names])
    op = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    slot.changed = True
    if op == "copy":
        slot.source, slot.span = _pick_source(slots, i, full, rng, unit)
    elif op == "swap":
        partners = [
            j for j in full if not slots[j].changed and slots[j].in_bar not in (0, slot.in_bar)
        ]  # never swaps a downbeat away: those change only at their own (lower) rate
        if not partners:
            slot.source, slot.span = _pick_source(slots, i, full, rng, unit)
            return
        j = int(partners[int(rng.integers(len(partners)))])
        other = slots[j]
        slot.source, slot.span, other.source, other.span = (
            other.start,
            other.end - other.start,
            slot.start,
            slot.end - slot.start,
        )
        slots[j].changed = True
    elif op == "repeat":
        prev = slots[i - 1]
        slot.source, slot.span, slot.mode, slot.semitones = prev.source, prev.span, prev.mode, prev.semitones
    elif op == "mute":
        slot.mode = "mute"
    elif op == "stutter":
        slot.stutter = True
        if rng.random() < 0.5:
            slot.source, slot.span = _pick_source(slots, i, full, rng, unit)
    elif op == "reverse":
        slot.mode = "reverse"
    else:
        slot.mode, slot.semitones = "repitch", int(rng.choice(INTERVALS))


def _pick_source(
    slots: list[_Slot], i: int, full: list[int], rng: np.random.Generator, unit: int
) -> tuple[int, int]:
    """Start and length of another full slot from a different place in the bar, preferably one on the same
    parity (an on-beat slice for an on-beat slot, an off-beat one for an off-beat slot)."""
    slot = slots[i]
    others = [j for j in full if slots[j].in_bar != slot.in_bar] or [j for j in full if j != i] or [i]
    parity = (slot.in_bar // unit) % 2
    same = [j for j in others if (slots[j].in_bar // unit) % 2 == parity]
    pool = same if same and rng.random() < 0.6 else others
    chosen = slots[int(pool[int(rng.integers(len(pool)))])]
    return chosen.start, chosen.end - chosen.start


def _pieces(ctx: _Context, slots: list[_Slot]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for slot in slots:
        if not slot.stutter:
            pieces.append(
                _Piece(slot.start, slot.end - slot.start, slot.source, slot.span, slot.mode, slot.semitones)
            )
            continue
        # every 16th of the slot replays the first 16th of its source
        inner = [int(c) for c in ctx.cuts if slot.start < c < slot.end]
        starts = [slot.start, *inner]
        after = ctx.cuts[ctx.cuts > slot.source]
        first = min(slot.span, int(after[0]) - slot.source) if after.size else slot.span
        for a, b in zip(starts, [*inner, slot.end], strict=True):
            pieces.append(_Piece(a, b - a, slot.source, first, slot.mode, slot.semitones))
    return pieces


# ---------------------------------------------------------------------------------------------- rendering


def _render(ctx: _Context, pieces: list[_Piece]) -> np.ndarray:
    """Write each piece in place, then crossfade every joint where the audio does not just continue.

    The crossfade ends on the joint (the new piece's lead-in fades in under the old piece's last 3 ms),
    so attacks keep their edge. The loop point is a joint too when the input loops seamlessly.
    """
    total, xf = ctx.length, ctx.xfade
    y = np.empty_like(ctx.audio)
    for piece in pieces:
        y[:, piece.start : piece.start + piece.length] = _content(ctx, piece, 0, piece.length)
    fade_in, fade_out = _fades(xf)
    for i, piece in enumerate(pieces):
        prev = pieces[i - 1]  # the first piece follows the last when the input is a loop
        if (i == 0 and not ctx.seamless) or _continues(ctx, prev, piece):
            continue
        joint = piece.start if i > 0 else total
        region = slice(joint - xf, joint)
        y[:, region] = y[:, region] * fade_out + _content(ctx, piece, -xf, xf) * fade_in
    return y


def _fades(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-power fade-in and fade-out over ``n`` samples (sin and cos of a quarter turn)."""
    angle = (np.arange(n) + 0.5) / max(n, 1) * (np.pi / 2)
    return np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)


def _continues(ctx: _Context, prev: _Piece, piece: _Piece) -> bool:
    if prev.mode == piece.mode == "mute":
        return True
    if not prev.mode == piece.mode == "copy":
        return False
    end = prev.source + prev.length
    return end == piece.source or (end == ctx.length and piece.source == 0 and ctx.seamless)


def _content(ctx: _Context, piece: _Piece, offset: int, length: int) -> np.ndarray:
    """Samples ``offset .. offset + length`` of ``piece`` (negative offsets: the lead-in before it)."""
    x, total = ctx.audio, ctx.length
    if piece.mode == "mute":
        return np.zeros((x.shape[0], length), dtype=np.float32)
    if piece.mode == "repitch":
        return _repitch(ctx, piece, offset, length)
    t = np.arange(offset, offset + length)
    if piece.mode == "copy":
        a = piece.source + offset
        if 0 <= a and a + length <= total:
            out = x[:, a : a + length]
        else:
            out = np.take(x, _outside(ctx, np.arange(a, a + length)), axis=1)
        if offset + length <= piece.span:
            return out
        # longer than its slice: fade out on the slice's end instead of playing the next hit's attack
        gain = (piece.span - t) / ctx.xfade
    else:  # reverse: the end of the slice comes first
        out = np.take(x, _outside(ctx, piece.source + piece.length - 1 - t), axis=1)
        start = piece.length - piece.span  # where the slice's own material begins
        if offset >= start + ctx.xfade:
            return out
        gain = (t - start) / ctx.xfade
    shaped = np.sin(np.clip(gain, 0.0, 1.0) * (np.pi / 2)).astype(np.float32)
    masked: np.ndarray = out * shaped
    return masked


def _outside(ctx: _Context, idx: np.ndarray) -> np.ndarray:
    """Map sample indices into the input: round the loop when it is seamless, else mirrored at the ends."""
    total = ctx.length
    if ctx.seamless:
        wrapped: np.ndarray = idx % total
        return wrapped
    period = max(1, 2 * (total - 1))
    folded = idx % period
    mirrored: np.ndarray = np.where(folded >= total, period - folded, folded)
    return mirrored


def _repitch(ctx: _Context, piece: _Piece, offset: int, length: int) -> np.ndarray:
    """Sampler-style one-shot: the first 16th of the slice, played faster or slower, then silence.

    Only the first 16th is played so that no later hit in the slice lands between grid steps.
    """
    x = ctx.audio
    up, down = _RESAMPLE[piece.semitones]
    ratio = down / up
    pad = 32 * max(up, down)
    first = int(np.floor(offset * ratio)) - pad
    count = int(np.ceil(length * ratio)) + 2 * pad
    src = np.take(x, _outside(ctx, np.arange(piece.source + first, piece.source + first + count)), axis=1)
    out = signal.resample_poly(src, up, down, axis=1)
    start = int(round(offset - first / ratio))
    y = np.zeros((x.shape[0], length), dtype=np.float32)
    seg = out[:, start : start + length]
    y[:, : seg.shape[1]] = seg
    shot = min(float(piece.span), ctx.grid.samples_per_step) / ratio
    t = np.arange(offset, offset + length)
    gain = np.clip((shot - t) / ctx.xfade, 0.0, 1.0)
    y *= np.sin(gain * np.pi / 2).astype(np.float32)
    return y


# ---------------------------------------------------------------------------------------------- timbre


def _timbre(
    ctx: _Context,
    y: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    effects: bool,
    tick: Callable[[float], None],
) -> np.ndarray:
    """Pitch shift, filter, drive, modulation and delay, each with a probability growing with strength.

    ``tick(fraction)`` is called after each stage so that long inputs still report progress.
    """
    sr, total = ctx.sample_rate, ctx.length
    rolls = rng.random(5)
    if pitch and not ctx.percussive and strength >= 0.5 and rolls[0] < 0.6 * (strength - 0.4) / 0.6:
        # The whole part moves only by an octave, which keeps it in key, and only when it is short: Rubber
        # Band costs about 0.1 s per second of stereo. A bar, half a bar or two beats move by any interval.
        whole = strength >= 0.8 and total <= WHOLE_PITCH_S * sr and rng.random() < 0.25
        a, b = (0, total) if whole else _region(ctx, rng, ("bar", "half", "half", "beat2", "beat2"))
        semis = int(rng.choice([12, -12] if whole else list(INTERVALS)))
        y = _apply(ctx, y, a, b, lambda seg: _pitch_shift(seg, sr, semis))
    tick(0.2)
    if not effects:
        return y
    if rolls[1] < 0.55 * strength:
        a, b = _region(ctx, rng, ("whole", "bar", "two", "last"))
        y = _apply(ctx, y, a, b, _filter_effect(ctx, strength, rng))
    tick(0.4)
    if rolls[2] < 0.3 * strength:
        a, b = _region(ctx, rng, ("whole", "bar", "half"))
        mix = 0.2 + 0.4 * strength * rng.random()
        if rng.random() < 0.6:
            drive: pb.Plugin = pb.Distortion(drive_db=float(6 + 18 * strength * rng.random()))
        else:
            drive = pb.Bitcrush(bit_depth=float(rng.uniform(5.0, 10.0)))
        y = _apply(ctx, y, a, b, lambda seg: _matched(seg, drive.process(seg, sr)), mix)
    tick(0.6)
    if rolls[3] < 0.35 * strength:
        a, b = _region(ctx, rng, ("whole", "two"))
        if rng.random() < 0.5:
            mod: pb.Plugin = pb.Chorus(
                rate_hz=float(rng.uniform(0.3, 1.5)), depth=float(rng.uniform(0.15, 0.4)), mix=1.0
            )
        else:
            mod = pb.Phaser(rate_hz=float(rng.uniform(0.2, 1.0)), depth=0.6, mix=1.0)
        y = _apply(ctx, y, a, b, lambda seg: mod.process(seg, sr), 0.3 + 0.3 * rng.random())
    tick(0.8)
    if rolls[4] < 0.4 * strength:
        y = _delay_throw(ctx, y, strength, rng)
    return y


def _region(ctx: _Context, rng: np.random.Generator, kinds: tuple[str, ...]) -> tuple[int, int]:
    """A grid-aligned stretch: the whole part, a bar, two bars, the last bar, half a bar or two beats."""
    grid, total = ctx.grid, ctx.length
    bars = int(grid.bars_in(total) + 1e-6)
    kind = str(rng.choice(list(kinds)))
    bar = int(rng.integers(max(1, bars)))
    if kind == "whole" or bars == 0:
        return 0, total
    per_bar = grid.time_signature.sixteenths_per_bar
    if kind == "two" and bars >= 2:
        bar = min(bar, bars - 2)
        a, b = grid.position(bars=bar), grid.position(bars=bar + 2)
    elif kind == "last":
        a, b = grid.position(bars=bars - 1), grid.position(bars=bars)
    elif kind == "half":
        a, b = grid.position(bars=bar, steps=per_bar // 2), grid.position(bars=bar + 1)
    elif kind == "beat2":
        beat = 2 * grid.time_signature.steps_per_beat
        at = int(rng.integers(max(1, per_bar // beat))) * beat
        a, b = grid.position(bars=bar, steps=at), grid.position(bars=bar, steps=min(per_bar, at + beat))
    else:
        a, b = grid.position(bars=bar), grid.position(bars=bar + 1)
    return max(0, a), min(total, b)


def _apply(ctx: _Context, y: np.ndarray, a: int, b: int, fx: _Effect, mix: float = 1.0) -> np.ndarray:
    """Blend ``fx(y[:, a - lead : b])`` into ``y[:, a:b]`` at ``mix``, ramping in and out over 8 ms."""
    if b - a < 4 * ctx.edge:
        return y
    lead = min(a, 2048)
    wet = fx(np.ascontiguousarray(y[:, a - lead : b]))[:, lead:]
    ramp = np.ones(b - a, dtype=np.float32)
    edge = np.sin((np.arange(ctx.edge) + 0.5) / ctx.edge * np.pi / 2).astype(np.float32) ** 2
    if a > 0:
        ramp[: ctx.edge] = edge
    if b < ctx.length:
        ramp[-ctx.edge :] = edge[::-1]
    dry = y[:, a:b]
    floor = _rms(dry) * 10 ** (-REGION_DROP_DB / 20)
    for _ in range(4):  # a filter that takes out most of the energy (a high-pass on a kick) is mixed back
        blend = dry + (ramp * np.float32(mix)) * (wet - dry)
        if _rms(blend) >= floor:
            break
        mix *= 0.5
    out: np.ndarray = y.copy()
    out[:, a:b] = blend
    return out


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _matched(dry: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """``wet`` scaled to the RMS of ``dry`` (drive and crushing change the level)."""
    d, w = _rms(dry), _rms(wet)
    return wet * np.float32(d / w) if w > 1e-9 else wet


def _pitch_shift(seg: np.ndarray, sr: int, semitones: int) -> np.ndarray:
    """Shift ``seg`` ``[C, T]`` by ``semitones`` keeping its length (Rubber Band, offline high quality).

    Offline Rubber Band keeps even low, pure tones on pitch, where the real-time ``pb.PitchShift`` smears
    them. Identical channels are shifted once.
    """
    if seg.shape[0] > 1 and all(np.array_equal(seg[0], ch) for ch in seg[1:]):
        one: np.ndarray = pb.time_stretch(seg[:1], float(sr), 1.0, float(semitones))
        return np.repeat(one[:, : seg.shape[1]], seg.shape[0], axis=0)
    out: np.ndarray = pb.time_stretch(seg, float(sr), 1.0, float(semitones))
    return out[:, : seg.shape[1]]


def _filter_effect(ctx: _Context, strength: float, rng: np.random.Generator) -> _Effect:
    """A low-pass sweep (opening or closing), a high-pass rise, or a static filter drop."""
    sr = ctx.sample_rate
    top = min(16000.0, 0.45 * sr)
    kind = int(rng.integers(4))
    low = top * (500.0 / top) ** strength  # how far the low-pass goes down
    high = 20.0 * (60.0**strength)  # how far the high-pass goes up
    resonance = float(0.1 + 0.4 * strength * rng.random())
    if kind == 3:
        if rng.random() < 0.5:
            static: pb.Plugin = pb.LowpassFilter(cutoff_frequency_hz=float(max(low, 300.0)))
        else:
            static = pb.HighpassFilter(cutoff_frequency_hz=float(min(high, 2000.0)))
        return lambda seg: _processed(static, seg, sr)
    mode = pb.LadderFilter.Mode.HPF24 if kind == 2 else pb.LadderFilter.Mode.LPF24
    path = {0: (low, top), 1: (top, low), 2: (20.0, high)}[kind]
    return lambda seg: _sweep(seg, sr, mode, path, resonance)


def _processed(plugin: pb.Plugin, seg: np.ndarray, sr: int) -> np.ndarray:
    out: np.ndarray = plugin.process(seg, sr)
    return out


def _sweep(
    seg: np.ndarray, sr: int, mode: pb.LadderFilter.Mode, path: tuple[float, float], res: float
) -> np.ndarray:
    """Ladder filter whose cutoff glides exponentially from ``path[0]`` to ``path[1]`` across ``seg``."""
    plugin = pb.LadderFilter(mode=mode, cutoff_hz=float(path[0]), resonance=res)
    total = seg.shape[1]
    block = max(512, total // 256)
    out = np.empty_like(seg)
    for a in range(0, total, block):
        frac = a / max(1, total - 1)
        plugin.cutoff_hz = float(path[0] * (path[1] / path[0]) ** frac)
        out[:, a : a + block] = plugin.process(seg[:, a : a + block], sr, reset=False)
    return out


def _delay_throw(ctx: _Context, y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Echo a beat or half bar with a tempo-synced delay (2, 3 or 4 16ths); the tail wraps round a loop."""
    grid, total, sr = ctx.grid, ctx.length, ctx.sample_rate
    a, b = _region(ctx, rng, ("half", "beat2", "last"))
    steps = int(rng.choice([2, 3, 4]))
    seconds = steps * grid.samples_per_step / sr
    tail = min(total - (b - a), int(round(grid.samples_per_bar)))
    if not ctx.seamless:  # not a loop: the echoes stop at the end instead of wrapping to the start
        tail = min(tail, total - b)
    if b - a < 4 * ctx.edge or tail <= 0:
        return y
    send = np.zeros((y.shape[0], (b - a) + tail), dtype=np.float32)
    ramp = np.ones(b - a, dtype=np.float32)
    ramp[: ctx.edge] = np.linspace(0, 1, ctx.edge)
    ramp[-ctx.edge :] = np.linspace(1, 0, ctx.edge)
    send[:, : b - a] = y[:, a:b] * ramp
    delay = pb.Delay(delay_seconds=float(seconds), feedback=float(rng.uniform(0.25, 0.5)), mix=1.0)
    echo = delay.process(send, sr)
    level = np.float32(0.3 + 0.25 * strength * rng.random())
    out: np.ndarray = y.copy()
    idx = np.arange(a, a + send.shape[1]) % total  # no index twice: send is at most as long as y
    out[:, idx] += echo * level
    return out


# ---------------------------------------------------------------------------------------------- gate, level


def _gate(ctx: _Context, y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Mute some 16ths of one bar (a trance gate), with 3 ms ramps that end on the cuts."""
    if rng.random() >= 0.35 * strength:
        return y
    a, b = _region(ctx, rng, ("bar",))
    steps = ctx.cuts.size - 1
    first = min(steps, int(round(a / ctx.grid.samples_per_step)))
    last = min(steps, int(round(b / ctx.grid.samples_per_step)))
    opened = rng.random(max(0, last - first)) < 0.65
    if opened.size < 2:
        return y
    opened[0] = True
    env = np.ones(ctx.length, dtype=np.float32)
    ramp = np.sin((np.arange(ctx.xfade) + 0.5) / ctx.xfade * np.pi / 2).astype(np.float32) ** 2
    state = np.concatenate([[True], opened, [True]])
    for k in range(opened.size):
        s, e = int(ctx.cuts[first + k]), int(min(ctx.cuts[first + k + 1], ctx.length))
        if not opened[k]:
            env[s:e] = 0.0
    for k in range(opened.size + 1):
        if state[k] == state[k + 1]:
            continue
        c = int(min(ctx.cuts[first + k], ctx.length))  # the cut between 16th k - 1 and k
        r = min(ctx.xfade, c)
        env[c - r : c] = (ramp if state[k + 1] else ramp[::-1])[ctx.xfade - r :]
    return y * env


def _level(ctx: _Context, y: np.ndarray) -> np.ndarray:
    """Back to the input's RMS, then a safety gain so the peak stays below 0 dBFS; float32, finite."""
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    rms = _rms(y)
    if rms > 1e-12 and ctx.rms > 1e-12:
        gain = ctx.rms / rms
        if gain != 1.0:
            y = y * np.float32(gain)
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_CEILING:
        y = np.clip(y * np.float32(PEAK_CEILING / peak), -PEAK_CEILING, PEAK_CEILING)
    return np.ascontiguousarray(y, dtype=np.float32)
