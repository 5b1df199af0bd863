"""What MusicGen is conditioned on, and where each generated piece goes on the bar grid (numpy only).

The problem: given the stems of a song minus one, generate the missing one over the SAME bars (bar 1 of the
result is bar 1 of the context). MusicGen only continues audio: what it generates comes after its audio
prompt. Ways to get a part that covers the context's own bars:

1. One continuation of the context's last seconds, taken as bars 1..N. Cheap (one window), tempo-locked (the
   prompt ends on a bar line, so the continuation starts on a downbeat), and right for loops (what follows a
   loop's last bar is its first bar); but for a long context the part drifts away from what the context does
   in each bar, and MusicGen's 30 s training length caps it.
2. Windows generated one after another, each prompted by the context plus the part generated so far. Seamless,
   but sequential: W windows cost W model calls, and every window waits for the one before.
3. (chosen) Windows generated side by side in ONE batch: the request's bars are cut into windows of at most
   ~20 s on bar lines; each window is prompted by the context bars right before it (up to 10 s of whole bars;
   the context is treated as a loop, so bar 1's prompt is the context's last bars), and with melody models
   also conditioned on the chroma of the context under the window. Every window hears the real music leading
   into its own bars, the windows run in parallel rows of one ``generate`` call (with the variations), and
   the length is unbounded. The price: windows do not hear each other, so the part may change character at
   a window seam; seams fall on bar lines (phrase starts when windows are 4-bar multiples) and are joined by a
   short equal-power crossfade that ends exactly on the downbeat, so the downbeat itself is never faded.

Most requests (up to 8 bars at 120 bpm) are a single window, where 1 and 3 coincide.

Prompts are whole EnCodec frames (640 samples at 32 kHz) so that the continuation starts exactly where the
prompt ends; a window's generated audio starts ``crossfade`` samples before its first bar line (except the
first window) and runs a short margin past its last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bridge.audio.analysis import TONAL_CLARITY, Key, chroma_per_bar, estimate_key, is_silent, tonal_clarity
from bridge.audio.timing import Grid, TimeSignature

STEM_PHRASES = {
    "bass": "solo bass line",
    "drums": "solo drum kit groove",
    "keys": "solo keyboard chords",
    "pad": "solo ambient synth pad, sustained chords",
    "lead": "solo synth lead melody",
    "vocals": "solo lead vocals singing",
    "guitar": "solo guitar part",
    "piano": "solo piano part",
    "other": "instrumental accompaniment",
}
KEY_BARS = 64  # bars of context read for the key


@dataclass(frozen=True)
class Settings:
    """Window and prompt lengths, in seconds.

    Attributes:
        prompt: the longest audio prompt (whole bars of it; MusicGen continues up to 10 s well).
        total: the longest prompt + generation of one row (MusicGen was trained on 30 s).
        margin: generated past each window's end, then cut (the last frames are the weakest).
        crossfade: the equal-power crossfade ending on each seam's downbeat.
    """

    prompt: float = 10.0
    total: float = 30.0
    margin: float = 0.25
    crossfade: float = 0.04


@dataclass(frozen=True)
class Window:
    """One row of generation: it owns ``[start, stop)`` of the timeline; its audio begins at ``begin``."""

    start: int
    stop: int
    begin: int


@dataclass(frozen=True)
class Plan:
    """Windows covering ``[first, total)`` of the timeline, all prompted alike and generating alike.

    Attributes:
        windows: in time order; the first starts at ``first``.
        prompt: prompt length in samples (whole frames; 0 for no prompt).
        frames: frames every row generates after its prompt (the longest window's need).
        hop: samples per frame.
    """

    windows: tuple[Window, ...]
    prompt: int
    frames: int
    hop: int

    @property
    def generated(self) -> int:
        """Samples each row generates after its prompt."""
        return self.frames * self.hop


def text_prompt(
    stem: str, prompt: str, bpm: float, key: Key | None, time_signature: TimeSignature | None = None
) -> str:
    """E.g. ``"solo bass line, funky slap, 120 bpm, in A minor"`` (no stem: no instrument phrase)."""
    time_signature = time_signature or TimeSignature()
    parts = [STEM_PHRASES.get(stem, f"solo {stem}")] if stem else []
    if prompt.strip():
        parts.append(prompt.strip())
    parts.append(f"{bpm:g} bpm")
    if (time_signature.numerator, time_signature.denominator) != (4, 4):
        parts.append(f"{time_signature} time")
    if key is not None:
        parts.append(f"in {key.name}")
    return ", ".join(parts)


def context_key(context: np.ndarray, sample_rate: int, grid: Grid) -> Key | None:
    """The context's key, or ``None`` when it is silent or not tonal enough to have one (drums only)."""
    if is_silent(context):
        return None
    bars = max(1, min(KEY_BARS, math.ceil(grid.bars_in(context.shape[-1]))))
    per_bar = chroma_per_bar(context[:, : grid.samples_for_bars(bars)], sample_rate, grid, bars)
    if tonal_clarity(per_bar) < TONAL_CLARITY:
        return None
    return estimate_key(per_bar)


class Loop:
    """Audio ``[C, P]`` as a loop: sample ``t`` of the timeline (any integer, negative too) is ``t mod P``."""

    def __init__(self, audio: np.ndarray) -> None:
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise ValueError(f"a loop needs [C, T] audio with T > 0, got shape {audio.shape}")
        self.audio = np.ascontiguousarray(audio, dtype=np.float32)

    @classmethod
    def of_bars(cls, audio: np.ndarray, grid: Grid) -> Loop:
        """``audio`` ``[C, T]`` cut or padded with silence to whole bars (a half-bar or more counts)."""
        bars = max(1, int(math.floor(grid.bars_in(audio.shape[-1]) + 0.5)))
        period = grid.samples_for_bars(bars)
        out = np.zeros((audio.shape[0], period), dtype=np.float32)
        n = min(period, audio.shape[-1])
        out[:, :n] = audio[:, :n]
        return cls(out)

    @property
    def period(self) -> int:
        return int(self.audio.shape[-1])

    def take(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the looped timeline, ``[C, stop - start]``."""
        index = np.arange(start, stop, dtype=np.int64) % self.period
        return self.audio[:, index]


def _frames(samples: float, hop: int) -> int:
    return max(0, int(round(samples / hop)))


def prompt_samples(grid: Grid, hop: int, seconds: float) -> int:
    """The prompt: as many whole bars as fit in ``seconds`` (or ``seconds`` when one bar is longer), in whole
    frames."""
    if seconds <= 0:
        return 0
    bar = grid.samples_per_bar
    limit = seconds * grid.sample_rate
    bars = math.floor(limit / bar + 1e-9)
    return _frames(bars * bar if bars >= 1 else limit, hop) * hop


def plan(
    grid: Grid,
    first_bar: int,
    total: int,
    hop: int,
    settings: Settings | None = None,
    *,
    prompted: bool = True,
    fade_in_first: bool = False,
) -> Plan:
    """Cut ``[grid.position(first_bar), total)`` into windows on bar lines (see the module docstring).

    Args:
        grid: the bar grid at the model's rate.
        first_bar: the bar (0-based) where the generated region starts.
        total: the end of the region (samples; need not be on a bar line).
        hop: samples per EnCodec frame.
        prompted: whether rows get an audio prompt (no context: no prompt).
        fade_in_first: whether the first window crossfades from what precedes it (variations keep the
            original before the region); the first window of a generated part starts hard on bar 1.
    """
    settings = settings or Settings()
    rate = grid.sample_rate
    first = grid.position(bars=first_bar)
    prompt = prompt_samples(grid, hop, settings.prompt) if prompted else 0
    fade = int(round(settings.crossfade * rate))
    margin = int(round(settings.margin * rate))
    longest = max(hop, int(settings.total * rate) - prompt - margin - fade)
    bar = grid.samples_per_bar
    span = total - first
    if bar <= longest:
        bars_left = math.ceil(span / bar - 1e-9)
        per = max(1, math.floor(longest / bar + 1e-9))
        count = math.ceil(bars_left / per)
        size = math.ceil(bars_left / count)
        if size > 4 and size % 4 and math.ceil(size / 4) * 4 <= per:
            size = math.ceil(size / 4) * 4  # phrase-length windows when they fit
        edges = [min(total, grid.position(bars=first_bar + k * size)) for k in range(count + 1)]
        edges[-1] = total
        edges = sorted(set(edges))
    else:  # a bar longer than a window: split evenly in samples
        count = math.ceil(span / longest)
        edges = [first + round(k * span / count) for k in range(count + 1)]
    windows = []
    for k, (start, stop) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        crossfaded = (k > 0 or fade_in_first) and start - fade >= 0
        windows.append(Window(start, stop, start - fade if crossfaded else start))
    frames = max(math.ceil((w.stop + margin - w.begin) / hop) for w in windows)
    return Plan(tuple(windows), prompt, frames, hop)


def _equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains over ``n`` samples whose squares sum to 1."""
    phase = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


def stitch(base: np.ndarray, pieces: list[np.ndarray], windows: tuple[Window, ...]) -> np.ndarray:
    """Lay each window's generated audio ``[C, >= stop - begin]`` (its first sample at ``begin``) onto a copy
    of ``base`` ``[C, T]``: it replaces ``[start, stop)`` and crossfades in over ``[begin, start)``."""
    out: np.ndarray = base.copy()
    for piece, w in zip(pieces, windows, strict=True):
        stop = min(w.stop, out.shape[-1])
        fade = w.start - w.begin
        if fade > 0:
            fade_out, fade_in = _equal_power(fade)
            out[:, w.begin : w.start] = out[:, w.begin : w.start] * fade_out + piece[:, :fade] * fade_in
        out[:, w.start : stop] = piece[:, fade : fade + stop - w.start]
    return out


def keep_bars(total: int, grid: Grid, strength: float) -> int:
    """Bars of the original a variation keeps before regenerating: ``(1 - strength)`` of them, on a bar line,
    and at least one bar less than the whole (so something changes)."""
    bars = max(1, math.floor(grid.bars_in(total) + 1e-9))
    keep = math.floor((1.0 - strength) * bars + 1e-9)
    return max(0, min(keep, bars - 1))
