"""Musical variations of any part (a drum loop, a bass line, chords, a full mix) on its bar grid.

A variation is built in two passes:

1. **Rearrangement.** The audio is cut into slices on the grid (16ths, 8ths or beats, chosen by strength and
   seed; each cut moved to just before a transient that lands a few ms early, else to a zero crossing). The
   slices are re-sequenced: each bar's downbeat stays more often than not; other slices are copied from
   elsewhere (placed so that they sit on the grid as they did at their source), swapped, repeated,
   stuttered on 16ths, muted, reversed (only where that makes no attack off the grid: a slow decay, a
   steady tone; never a note-off or a hat) or re-pitched like a sampler (the slice's first 16th as a
   one-shot, varispeed by an octave, or a fourth or fifth where that keeps its notes in key). About
   ``strength`` of the slices change. Every joint where the audio does not simply continue gets a 3 ms
   equal-power crossfade that ends on the cut, so attacks keep their full edge; stretches left alone are
   copied sample for sample. A seamless loop is treated as circular; other audio is mirrored at its ends.
2. **Timbre.** With probabilities growing with strength: a pitch shift of a bar, half a bar or two beats
   (from strength 0.5, on tonal material, with Rubber Band through ``pedalboard``, note by note so that
   attacks stay on the grid, by an octave or an in-key fourth or fifth; drums are re-pitched slice by
   slice instead), a filter sweep or filter drop, a touch of drive or bit reduction, a gentle chorus or a
   phaser, a tempo-synced delay throw, and a 16th-note gate. Region effects fade in and out over 8 ms and
   may not take more than 4 dB off their region's level. Nothing moves down into the sub-bass rumble.

The result is set back to the input's RMS level with a safety gain that keeps peaks below 0 dBFS.
Variation ``k`` draws from a generator seeded by ``(seed, k)``, so it is the same whatever ``n`` is.

This module checks the arguments and runs the passes; the shared analysis of the input lives in
:mod:`~bridge.engines.builtin.vary_context`, the rearrangement in :mod:`~bridge.engines.builtin.vary_slices`,
and the timbre effects, gate and level in :mod:`~bridge.engines.builtin.vary_effects`.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.io import check_sample_rate
from bridge.audio.tempo import COMMON_TIME, infer_grid
from bridge.audio.timing import Grid
from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.builtin.vary_context import ENV_S, VaryContext, analyse, min_length
from bridge.engines.builtin.vary_effects import gate, level, timbre
from bridge.engines.builtin.vary_slices import plan, render
from bridge.errors import InvalidArgument

MAX_VARIATIONS = 16


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

    Raises:
        InvalidArgument: a bad argument, or (with a strength above 0) audio shorter than 1 ms, the least the
            analysis works on (:func:`~bridge.engines.builtin.vary_context.min_length`).
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
    _check_length(x.shape[1], sample_rate)
    if grid is None:
        grid = infer_grid(x, sample_rate, None, None, COMMON_TIME)
    elif grid.sample_rate != sample_rate:
        grid = grid.with_sample_rate(sample_rate)
    report(0.0, "analyse")
    context = analyse(x, sample_rate, grid, pitch)
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


def _check_length(frames: int, sample_rate: int) -> None:
    sample_rate = check_sample_rate(sample_rate)
    shortest = min_length(sample_rate)
    if frames < shortest:
        raise InvalidArgument(
            f"audio of {frames} samples ({frames / sample_rate * 1000:.2g} ms at {sample_rate} Hz) is too "
            f"short to vary: it needs at least {shortest} samples ({ENV_S * 1000:g} ms); give a longer part"
        )


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


# ---------------------------------------------------------------------------------------------- variation


def _variation(
    ctx: VaryContext,
    strength: float,
    rng: np.random.Generator,
    pitch: bool,
    effects: bool,
    report: Progress,
    stage: str,
) -> np.ndarray:
    """One variation ``[C, T]`` float32: rearranged, then timbre, gate and level (see the module docstring)."""
    pieces = plan(ctx, strength, rng, pitch)
    y = render(ctx, pieces)
    report(0.3, stage)
    y = timbre(ctx, y, strength, rng, pitch, effects, lambda f: report(0.3 + 0.6 * f, stage))
    report(0.9, stage)
    y = gate(ctx, y, strength, rng)
    return level(ctx, y)
