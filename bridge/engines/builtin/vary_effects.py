"""The timbre pass of a variation, then the gate and the output level.

With probabilities growing with strength: a pitch shift of a bar, half a bar or two beats (on tonal
material, with Rubber Band through ``pedalboard``, note by note, by an interval that keeps the stretch in key:
:func:`~bridge.engines.builtin.vary_context.pitch_choices_of`), a filter sweep or filter drop, a touch of
drive or bit reduction, a gentle chorus or a phaser, a tempo-synced delay throw (:func:`timbre`), and a
16th-note gate (:func:`gate`). Region effects fade in and out over 8 ms and may not take more than 4 dB off
their region's level. :func:`level` sets the result back to the input's RMS below 0 dBFS.

Plugins run over long regions in blocks of ``CHUNK`` samples with their state carried from block to block
(``reset=False``), which gives the same samples as one call over the whole region, and ``tick`` is called
between blocks so that a whole-song effect on a long input still reports progress.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pedalboard as pb

from bridge.engines.builtin.vary_context import INTERVALS, VaryContext, pitch_choices_of, rms, transient_cuts

PEAK_CEILING = 0.999
REGION_DROP_DB = 4.0  # an effect may lower its region's RMS by at most this much (else it is mixed back)
WHOLE_PITCH_S = 4.5  # longest part that may be pitch-shifted as a whole
CHUNK = 1 << 17  # samples a plugin processes between two progress ticks (about 3 s at 44.1 kHz)
NOTE_GAP_S = 0.05  # silence between the notes of a pitch shift, where each attack's smear goes

Tick = Callable[[float], None]
# An effect maps a segment [C, T] to a processed copy [C, T], calling tick(fraction) between blocks.
Effect = Callable[[np.ndarray, Tick], np.ndarray]


def timbre(
    ctx: VaryContext,
    y: np.ndarray,
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    effects: bool,
    tick: Tick,
) -> np.ndarray:
    """Pitch shift, filter, drive, modulation and delay, each with a probability growing with strength.

    Args:
        ctx: the input's shared context.
        y: ``[C, T]`` float32, the rearranged variation.
        tick: ``tick(fraction)`` is called after each stage and between blocks of long effects.

    Returns:
        ``[C, T]``; ``y`` itself when nothing applies.
    """
    sr, total = ctx.sample_rate, ctx.length
    rolls = rng.random(5)
    if pitch and not ctx.percussive and strength >= 0.5 and rolls[0] < 0.6 * (strength - 0.4) / 0.6:
        # The whole part moves only by an octave and only when it is short: Rubber Band costs about 0.1 s
        # per second of stereo. A bar, half a bar or two beats move by an interval that keeps them in key.
        whole = strength >= 0.8 and total <= WHOLE_PITCH_S * sr and rng.random() < 0.25
        a, b = (0, total) if whole else region(ctx, rng, ("bar", "half", "half", "beat2", "beat2"))
        semis = int(rng.choice(pitch_choices_of(ctx, y[:, a:b], (12, -12) if whole else INTERVALS)))
        y = _apply(
            ctx,
            y,
            a,
            b,
            lambda seg, _: _shift_notes(ctx, seg, b - seg.shape[1], semis),
            _stage(tick, 0.0, 0.2),
        )
    tick(0.2)
    if not effects:
        return y
    if rolls[1] < 0.55 * strength:
        a, b = region(ctx, rng, ("whole", "bar", "two", "last"))
        y = _apply(ctx, y, a, b, _filter_effect(ctx, strength, rng), _stage(tick, 0.2, 0.4))
    tick(0.4)
    if rolls[2] < 0.3 * strength:
        a, b = region(ctx, rng, ("whole", "bar", "half"))
        mix = 0.2 + 0.4 * strength * rng.random()
        if rng.random() < 0.6:
            drive: pb.Plugin = pb.Distortion(drive_db=float(6 + 18 * strength * rng.random()))
        else:
            drive = pb.Bitcrush(bit_depth=float(rng.uniform(5.0, 10.0)))
        y = _apply(ctx, y, a, b, _plugin_effect(drive, sr, matched=True), _stage(tick, 0.4, 0.6), mix)
    tick(0.6)
    if rolls[3] < 0.35 * strength:
        a, b = region(ctx, rng, ("whole", "two"))
        if rng.random() < 0.5:
            # the wet voice's pitch swings by about 110 cents x rate x depth: at most about 12 cents here (a
            # rate of 1.5 Hz and a depth of 0.4 swung it by up to 190 cents, audibly out of tune)
            mod: pb.Plugin = pb.Chorus(
                rate_hz=float(rng.uniform(0.2, 0.7)), depth=float(rng.uniform(0.08, 0.15)), mix=1.0
            )
        else:
            mod = pb.Phaser(rate_hz=float(rng.uniform(0.2, 1.0)), depth=0.6, mix=1.0)
        mix = 0.3 + 0.3 * rng.random()
        y = _apply(ctx, y, a, b, _plugin_effect(mod, sr), _stage(tick, 0.6, 0.8), mix)
    tick(0.8)
    if rolls[4] < 0.4 * strength:
        y = _delay_throw(ctx, y, strength, rng)
    return y


def process_in_chunks(plugin: pb.Plugin, seg: np.ndarray, sr: int, tick: Tick) -> np.ndarray:
    """``plugin`` over ``seg`` ``[C, T]`` from a clean state, ``CHUNK`` samples at a time.

    The plugin keeps its state from one block to the next, so the result is the one of a single
    ``plugin.process(seg, sr)`` call. ``tick(fraction)`` is called after each block but the last.
    """
    total = seg.shape[1]
    if total <= CHUNK:
        whole: np.ndarray = plugin.process(seg, sr)
        return whole
    out = np.empty_like(seg)
    for a in range(0, total, CHUNK):
        out[:, a : a + CHUNK] = plugin.process(seg[:, a : a + CHUNK], sr, reset=a == 0)
        if a + CHUNK < total:
            tick((a + CHUNK) / total)
    return out


def _plugin_effect(plugin: pb.Plugin, sr: int, *, matched: bool = False) -> Effect:
    """``plugin`` as an :data:`Effect` run block by block; ``matched``: set back to the dry RMS."""

    def effect(seg: np.ndarray, tick: Tick) -> np.ndarray:
        wet = process_in_chunks(plugin, seg, sr, tick)
        return _matched(seg, wet) if matched else wet

    return effect


def region(ctx: VaryContext, rng: np.random.Generator, kinds: tuple[str, ...]) -> tuple[int, int]:
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


def _stage(tick: Tick, start: float, end: float) -> Tick:
    """``tick`` narrowed to ``start..end`` of its range."""
    return lambda fraction: tick(start + (end - start) * fraction)


def _apply(
    ctx: VaryContext, y: np.ndarray, a: int, b: int, fx: Effect, tick: Tick, mix: float = 1.0
) -> np.ndarray:
    """Blend ``fx(y[:, a - lead : b])`` into ``y[:, a:b]`` at ``mix``, ramping in and out over 8 ms.

    ``tick`` covers the effect (first half) and the blend (second half), both run block by block.
    """
    if b - a < 4 * ctx.edge:
        return y
    lead = min(a, 2048)
    wet = fx(np.ascontiguousarray(y[:, a - lead : b]), _stage(tick, 0.0, 0.5))[:, lead:]
    ramp = np.ones(b - a, dtype=np.float32)
    edge = np.sin((np.arange(ctx.edge) + 0.5) / ctx.edge * np.pi / 2).astype(np.float32) ** 2
    if a > 0:
        ramp[: ctx.edge] = edge
    if b < ctx.length:
        ramp[-ctx.edge :] = edge[::-1]
    dry = y[:, a:b]
    floor = rms(dry) * 10 ** (-REGION_DROP_DB / 20)
    out: np.ndarray = y.copy()
    # a filter that takes out most of the energy (a high-pass on a kick) is mixed back
    for attempt in range(4):
        part = _stage(tick, 0.5 + attempt / 8, 0.5 + (attempt + 1) / 8)
        if _blend_into(out[:, a:b], dry, wet, ramp * np.float32(mix), part) >= floor:
            break
        mix *= 0.5
    return out


def _blend_into(target: np.ndarray, dry: np.ndarray, wet: np.ndarray, gain: np.ndarray, tick: Tick) -> float:
    """``target[:] = dry + gain * (wet - dry)`` (all ``[C, T]``, ``gain`` ``[T]``), ``CHUNK`` samples at a
    time with ``tick`` after each; returns the RMS of the result."""
    total = dry.shape[1]
    power = 0.0
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        blend = dry[:, start:stop] + gain[start:stop] * (wet[:, start:stop] - dry[:, start:stop])
        target[:, start:stop] = blend
        power += float(np.sum(np.square(blend, dtype=np.float64)))
        tick(stop / total)
    return float(np.sqrt(power / max(1, dry.size)))


def _matched(dry: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """``wet`` scaled to the RMS of ``dry`` (drive and crushing change the level)."""
    d, w = rms(dry), rms(wet)
    return wet * np.float32(d / w) if w > 1e-9 else wet


def _shift_notes(ctx: VaryContext, seg: np.ndarray, start: int, semitones: int) -> np.ndarray:
    """:func:`_pitch_shift` of ``seg`` ``[C, T]`` (from sample ``start`` of the variation) note by note.

    A phase vocoder smears each attack over its window, backwards too: shifted as one piece, a bass line
    came out with its notes 10 to 25 ms early or late (an octave down worst). Cut just before each
    transient on a grid line (:func:`transient_cuts`), the pieces are shifted in one call with
    ``NOTE_GAP_S`` of silence between them, where each attack's smear goes and is dropped, so every note
    starts where it did (within about 5 ms) for the price of one call. Each piece but the last fades out
    over the 3 ms before the next one's cut, and each but the first fades in over its first millisecond.
    """
    edges = [0, *transient_cuts(ctx, seg, start), seg.shape[1]]
    gap = np.zeros((seg.shape[0], int(round(NOTE_GAP_S * ctx.sample_rate))), dtype=seg.dtype)
    spaced = np.concatenate(
        [x for a, b in zip(edges, edges[1:], strict=False) for x in (seg[:, a:b], gap)], axis=1
    )
    shifted = _pitch_shift(spaced, ctx.sample_rate, semitones)
    out = np.empty_like(seg)
    out_fade = np.cos((np.arange(ctx.xfade) + 0.5) / ctx.xfade * np.pi / 2).astype(np.float32)
    n_in = max(1, int(round(0.001 * ctx.sample_rate)))
    in_fade = np.sin((np.arange(n_in) + 0.5) / n_in * np.pi / 2).astype(np.float32)
    at = 0
    for a, b in zip(edges, edges[1:], strict=False):
        part = shifted[:, at : at + b - a].copy()
        if b < seg.shape[1] and b - a > ctx.xfade + n_in:
            part[:, -ctx.xfade :] *= out_fade
        if a > 0 and b - a > ctx.xfade + n_in:
            part[:, :n_in] *= in_fade
        out[:, a:b] = part
        at += b - a + gap.shape[1]
    return out


def _pitch_shift(seg: np.ndarray, sr: int, semitones: int) -> np.ndarray:
    """Shift ``seg`` ``[C, T]`` by ``semitones`` keeping its length (Rubber Band, offline high quality).

    Offline Rubber Band keeps even low, pure tones on pitch, where the real-time ``pb.PitchShift`` smears
    them. Formants move with the pitch, as in a sampler: kept in place (Rubber Band's default, meant for
    voices) they turn an instrument's shifted bar up to 9 dB louder or quieter and bury an octave-down
    chord under artefacts. Identical channels are shifted once. Only short stretches are shifted (see
    :func:`timbre`), so there is no progress to report within one.
    """
    same = seg.shape[0] > 1 and all(np.array_equal(seg[0], ch) for ch in seg[1:])
    out: np.ndarray = pb.time_stretch(
        seg[:1] if same else seg, float(sr), 1.0, float(semitones), preserve_formants=False
    )
    out = np.pad(out[:, : seg.shape[1]], ((0, 0), (0, max(0, seg.shape[1] - out.shape[1]))))
    return np.repeat(out, seg.shape[0], axis=0) if same else out


def _filter_effect(ctx: VaryContext, strength: float, rng: np.random.Generator) -> Effect:
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
        return _plugin_effect(static, sr)
    mode = pb.LadderFilter.Mode.HPF24 if kind == 2 else pb.LadderFilter.Mode.LPF24
    path = {0: (low, top), 1: (top, low), 2: (20.0, high)}[kind]
    return lambda seg, tick: _sweep(seg, sr, mode, path, resonance, tick)


def _sweep(
    seg: np.ndarray,
    sr: int,
    mode: pb.LadderFilter.Mode,
    path: tuple[float, float],
    res: float,
    tick: Tick,
) -> np.ndarray:
    """Ladder filter whose cutoff glides exponentially from ``path[0]`` to ``path[1]`` across ``seg``.

    The cutoff moves in 256 steps (blocks of at least 512 samples); ``tick`` is called about every
    ``CHUNK`` samples.
    """
    plugin = pb.LadderFilter(mode=mode, cutoff_hz=float(path[0]), resonance=res)
    total = seg.shape[1]
    block = max(512, total // 256)
    every = max(1, CHUNK // block)  # blocks between two ticks
    out = np.empty_like(seg)
    for i, a in enumerate(range(0, total, block)):
        frac = a / max(1, total - 1)
        plugin.cutoff_hz = float(path[0] * (path[1] / path[0]) ** frac)
        out[:, a : a + block] = plugin.process(seg[:, a : a + block], sr, reset=False)
        if (i + 1) % every == 0 and a + block < total:
            tick((a + block) / total)
    return out


def _delay_throw(ctx: VaryContext, y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Echo a beat or half bar with a tempo-synced delay (2, 3 or 4 16ths); the tail wraps round a loop.

    The send is at most a half bar plus a bar of tail, so it needs no progress of its own.
    """
    grid, total, sr = ctx.grid, ctx.length, ctx.sample_rate
    a, b = region(ctx, rng, ("half", "beat2", "last"))
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
    gain = np.float32(0.3 + 0.25 * strength * rng.random())
    out: np.ndarray = y.copy()
    idx = np.arange(a, a + send.shape[1]) % total  # no index twice: send is at most as long as y
    out[:, idx] += echo * gain
    return out


# ---------------------------------------------------------------------------------------------- gate, level


def gate(ctx: VaryContext, y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Mute some 16ths of one bar (a trance gate), with 3 ms ramps that end on the cuts."""
    if rng.random() >= 0.35 * strength:
        return y
    a, b = region(ctx, rng, ("bar",))
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


def level(ctx: VaryContext, y: np.ndarray) -> np.ndarray:
    """Back to the input's RMS, then a safety gain so the peak stays below 0 dBFS; float32, finite."""
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    now = rms(y)
    if now > 1e-12 and ctx.rms > 1e-12:
        gain = ctx.rms / now
        if gain != 1.0:
            y = y * np.float32(gain)
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_CEILING:
        y = np.clip(y * np.float32(PEAK_CEILING / peak), -PEAK_CEILING, PEAK_CEILING)
    return np.ascontiguousarray(y, dtype=np.float32)
