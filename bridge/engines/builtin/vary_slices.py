"""The rearrangement pass of a variation: grid slices re-sequenced, then rendered with clean joints.

:func:`plan` cuts the input into slices of a 16th, an 8th or a beat (chosen by strength and seed) on the
snapped cuts of the :class:`~bridge.engines.builtin.vary_context.VaryContext`, and decides what plays in each:
each bar's downbeat stays more often than not; other slices are copied from elsewhere, swapped, repeated,
stuttered on 16ths, muted, reversed (where :func:`~bridge.engines.builtin.vary_context.reverses_cleanly`)
or re-pitched like a sampler (by an interval from :func:`~bridge.engines.builtin.vary_context.pitch_choices`).
A copied slice starts where its source's grid line lands on the destination's, and a re-pitched one reads
from its source's grid line, so hits keep their place on the grid. :func:`render` writes the pieces and
crossfades every joint where the audio does not simply continue (3 ms, equal power, ending on the cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from bridge.engines.builtin.vary_context import VaryContext, pitch_choices, reverses_cleanly

# Varispeed ratios as resample_poly (up, down): pitch factor = down / up (a fifth is 3/2, 2 cents sharp).
_RESAMPLE = {12: (1, 2), 7: (2, 3), 5: (3, 4), -5: (4, 3), -7: (3, 2), -12: (2, 1)}


@dataclass(frozen=True)
class Piece:
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


# ---------------------------------------------------------------------------------------------- planning


def plan(ctx: VaryContext, strength: float, rng: np.random.Generator, pitch: bool) -> list[Piece]:
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
        _change(ctx, slots, i, full, strength, rng, pitch, unit)
    if len(full) >= 2 and not any(s.changed for s in slots):
        candidates = [i for i in full if slots[i].in_bar != 0] or full
        i = int(candidates[int(rng.integers(len(candidates)))])
        slots[i].source, slots[i].span = _pick_source(slots, i, full, rng, unit)
        slots[i].changed = True
    if pitch and ctx.percussive and strength >= 0.85 and rng.random() < 0.3:
        semis = int(rng.choice(pitch_choices(ctx, 0, ctx.cuts.size - 1, (12, 7, 5, -5))))
        for i in full:
            if slots[i].mode == "copy":
                slots[i].mode, slots[i].semitones = "repitch", semis
    return _pieces(ctx, slots)


def _slots(ctx: VaryContext, unit: int, per_bar: int) -> list[_Slot]:
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
    ctx: VaryContext,
    slots: list[_Slot],
    i: int,
    full: list[int],
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    unit: int,
) -> None:
    """Apply one randomly chosen operation to slot ``i``.

    A slot plays reversed only when that puts no rise off its grid lines (:func:`reverses_cleanly`), and
    re-pitched only by an interval that keeps its first 16th in key (:func:`pitch_choices`).
    """
    slot = slots[i]
    reverse = 1.2 * max(0.0, strength - 0.6) / 0.4
    if reverse and not reverses_cleanly(ctx, slot.source, slot.span):
        reverse = 0.0
    ops = {
        "copy": 3.0,
        "swap": 1.5,
        "repeat": 2.0 if i > 0 and slots[i - 1].full else 0.0,
        "mute": 1.0 if slot.in_bar != 0 else 0.0,
        "stutter": 1.0 if unit >= 2 else 0.0,
        "reverse": reverse,
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
        first = ctx.step_at(slot.source)
        slot.mode, slot.semitones = "repitch", int(rng.choice(pitch_choices(ctx, first, first + 1)))


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


def _pieces(ctx: VaryContext, slots: list[_Slot]) -> list[Piece]:
    pieces: list[Piece] = []
    for slot in slots:
        if not slot.stutter:
            pieces.append(
                Piece(slot.start, slot.end - slot.start, slot.source, slot.span, slot.mode, slot.semitones)
            )
            continue
        # every 16th of the slot replays the first 16th of its source
        inner = [int(c) for c in ctx.cuts if slot.start < c < slot.end]
        starts = [slot.start, *inner]
        after = ctx.cuts[ctx.cuts > slot.source]
        first = min(slot.span, int(after[0]) - slot.source) if after.size else slot.span
        for a, b in zip(starts, [*inner, slot.end], strict=True):
            pieces.append(Piece(a, b - a, slot.source, first, slot.mode, slot.semitones))
    return _aligned(ctx, pieces)


def _grid_offset(ctx: VaryContext, position: int) -> int:
    """How far ``position`` lies from its nearest 16th grid line (negative: before it), in samples."""
    step = ctx.grid.samples_per_step
    return int(position - round(round(position / step) * step))


def _aligned(ctx: VaryContext, pieces: list[Piece]) -> list[Piece]:
    """Move the start of every copied piece so that its source sits on the grid as it did in the input.

    Cuts are snapped to just before transients, so a slice's cut lies up to a few ms before its grid line,
    and not by the same amount at its source and at its destination; played from its cut at the
    destination's cut, a slice would land up to twice that off the grid. Starting it at the destination's
    grid line plus its source's offset puts every hit exactly where it was relative to the grid. A start
    only moves while every piece keeps at least ``4 * xfade`` samples; lengths follow the starts.
    """
    if len(pieces) < 2:
        return pieces
    starts = [p.start for p in pieces]
    for i in range(1, len(pieces)):
        piece = pieces[i]
        if piece.mode != "copy" or piece.source == piece.start:
            continue
        moved = piece.start + _grid_offset(ctx, piece.source) - _grid_offset(ctx, piece.start)
        following = starts[i + 1] if i + 1 < len(starts) else ctx.length
        if starts[i - 1] + 4 * ctx.xfade <= moved <= following - 4 * ctx.xfade:
            starts[i] = moved
    ends = [*starts[1:], pieces[-1].start + pieces[-1].length]
    return [
        Piece(a, b - a, p.source, p.span, p.mode, p.semitones)
        for p, a, b in zip(pieces, starts, ends, strict=True)
    ]


# ---------------------------------------------------------------------------------------------- rendering


def render(ctx: VaryContext, pieces: list[Piece]) -> np.ndarray:
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


def _continues(ctx: VaryContext, prev: Piece, piece: Piece) -> bool:
    if prev.mode == piece.mode == "mute":
        return True
    if not prev.mode == piece.mode == "copy":
        return False
    end = prev.source + prev.length
    return end == piece.source or (end == ctx.length and piece.source == 0 and ctx.seamless)


def _content(ctx: VaryContext, piece: Piece, offset: int, length: int) -> np.ndarray:
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


def _outside(ctx: VaryContext, idx: np.ndarray) -> np.ndarray:
    """Map sample indices into the input: round the loop when it is seamless, else mirrored at the ends."""
    total = ctx.length
    if ctx.seamless:
        wrapped: np.ndarray = idx % total
        return wrapped
    period = max(1, 2 * (total - 1))
    folded = idx % period
    mirrored: np.ndarray = np.where(folded >= total, period - folded, folded)
    return mirrored


def _repitch(ctx: VaryContext, piece: Piece, offset: int, length: int) -> np.ndarray:
    """Sampler-style one-shot: the first 16th of the slice, played faster or slower, then silence.

    Only the first 16th is played so that no later hit in the slice lands between grid steps.
    """
    x = ctx.audio
    up, down = _RESAMPLE[piece.semitones]
    ratio = down / up
    # read so that the source's grid line plays on the destination's: a cut snapped a few ms before a hit
    # would otherwise put the hit that many ms, divided by the ratio, late (an octave down: twice as late)
    origin = (
        piece.source - _grid_offset(ctx, piece.source) + int(round(_grid_offset(ctx, piece.start) * ratio))
    )
    pad = 32 * max(up, down)
    first = int(np.floor(offset * ratio)) - pad
    count = int(np.ceil(length * ratio)) + 2 * pad
    src = np.take(x, _outside(ctx, np.arange(origin + first, origin + first + count)), axis=1)
    out = signal.resample_poly(src, up, down, axis=1)
    start = int(round(offset - first / ratio))
    y = np.zeros((x.shape[0], length), dtype=np.float32)
    seg = out[:, start : start + length]
    y[:, : seg.shape[1]] = seg
    shot = (piece.source - origin + min(float(piece.span), ctx.grid.samples_per_step)) / ratio
    t = np.arange(offset, offset + length)
    gain = np.clip((shot - t) / ctx.xfade, 0.0, 1.0)
    y *= np.sin(gain * np.pi / 2).astype(np.float32)
    return y
