"""Songs cut into bar-aligned segments, each turned into what the engine feeds the model (numpy only).

A training example is exactly one generation request of the engine: ``generate --stem S --context <the
segment's context> --bars N``. For that request the engine (:mod:`bridge.engines.musicgen.conditioning`) plans
one window over the N bars, prompts it with the context's last whole bars (the context taken as a loop),
conditions melody models on the chroma of the context under prompt and window, and describes it in text
(stem, the user's words, tempo, key). Training uses the same calls, so the model learns to continue that
prompt with the band's own stem: at generation time it is conditioned the way it was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bridge.audio.timing import Grid
from bridge.engines.musicgen import conditioning
from bridge.train.songs import DataError, SongAudio


@dataclass(frozen=True)
class Example:
    """One segment as the engine would see it.

    Attributes:
        song: the song's name.
        index: the segment's number in its song (0 = bars 1..N).
        prompt: ``[C, P]`` the audio prompt (the segment's context as a loop, the bars before bar 1).
        melody: ``[L]`` mono audio whose chroma conditions melody models (prompt and window).
        target: ``[C, F * hop]`` the stem over the window and its margin.
        text: the text prompt.
        samples: the segment's length in samples (N bars).
    """

    song: str
    index: int
    prompt: np.ndarray
    melody: np.ndarray
    target: np.ndarray
    text: str
    samples: int


def window_plan(grid: Grid, bars: int, hop: int) -> conditioning.Plan:
    """The engine's plan for ``bars`` bars with a context (one window, or an error naming the longest)."""
    total = grid.samples_for_bars(bars)
    plan = conditioning.plan(grid, 0, total, hop, conditioning.Settings(), prompted=True)
    if len(plan.windows) != 1:
        settings = conditioning.Settings()
        room = settings.total - plan.prompt / grid.sample_rate - settings.margin - settings.crossfade
        fits = max(1, math.floor(room * grid.sample_rate / grid.samples_per_bar))
        raise DataError(
            f"--bars {bars} at {grid.bpm:g} bpm lasts {total / grid.sample_rate:.1f} s, longer than the "
            f"model's window ({room:.1f} s after the prompt); use --bars {fits} or fewer"
        )
    return plan


def default_bars(grid: Grid, hop: int) -> int:
    """The most whole bars one window of the engine holds at ``grid``'s tempo (at most 8)."""
    bars = 8
    while bars > 1:
        try:
            window_plan(grid, bars, hop)
            return bars
        except DataError:
            bars -= 1
    return 1


def segments(song: SongAudio, bars: int, stem: str, tags: str, hop: int) -> list[Example]:
    """Every whole ``bars``-bar segment of ``song`` from bar 1 on, as examples.

    Raises:
        DataError: the song is shorter than one segment.
    """
    grid = song.grid
    plan = window_plan(grid, bars, hop)
    length = grid.samples_for_bars(bars)
    n = song.target.shape[-1]
    count = 0
    while grid.position(bars=(count + 1) * bars) <= n:
        count += 1
    if count == 0:
        raise DataError(
            f"song {song.name!r} lasts {n / grid.sample_rate:.2f} s from bar 1, shorter than one segment of "
            f"{bars} bar(s) ({length / grid.sample_rate:.2f} s at {grid.bpm:g} bpm); use a smaller --bars "
            "or leave the song out"
        )
    out = []
    for k in range(count):
        start = grid.position(bars=k * bars)
        context = song.context[:, start : start + length]
        loop = conditioning.Loop.of_bars(context, grid)
        key = conditioning.context_key(context, grid.sample_rate, grid)
        target = song.target[:, start : start + plan.generated]
        target = np.pad(target, ((0, 0), (0, plan.generated - target.shape[-1])))
        out.append(
            Example(
                song=song.name,
                index=k,
                prompt=loop.take(-plan.prompt, 0),
                melody=loop.take(-plan.prompt, plan.generated).mean(0),
                target=np.ascontiguousarray(target, dtype=np.float32),
                text=conditioning.text_prompt(stem, tags, grid.bpm, key, grid.time_signature),
                samples=length,
            )
        )
    return out
