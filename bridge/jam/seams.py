"""Finishing a part for its cycle: exactly one cycle long, levelled to the humans, joined to what played before.

An engine renders one bar more than the cycle. The part is the first ``L`` samples; the next
:data:`SEAM_MS` of the render (how the part would go on past its last bar line) are kept as its **tail**.
The next part's head is crossfaded from that tail into its own audio, so at the seam the waveform goes on
exactly as the previous part would have (no jump), no level dip (both sides sound through the crossfade), and
one downbeat attack (both renders put theirs on the same sample). After a rest the tail is silence, which
makes the crossfade a short fade-in.

Levelling is :func:`bridge.audio.post.finish` (the one generate uses): the part sits under the humans'
loudness by the stem's offset, limited under the ceiling; the tail gets the same gain as its part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.audio.loudness import integrated_loudness
from bridge.audio.post import finish, loudness_target
from bridge.pipeline import DEFAULT_PART_OFFSET_LU, PART_OFFSET_LU

SEAM_MS = 10.0


@dataclass(frozen=True)
class Finished:
    """A part ``[2, L]`` and its tail ``[2, seam]`` (how it goes on past its last bar line)."""

    audio: np.ndarray
    tail: np.ndarray


def seam_samples(sample_rate: int) -> int:
    return max(1, int(round(SEAM_MS * sample_rate / 1000.0)))


def target_lufs(humans: np.ndarray, sample_rate: int, stem: str) -> float | None:
    """The loudness a part of ``stem`` gets under the humans' audio ``[C, n]`` (None: they were silent)."""
    if humans.shape[1] == 0 or not np.any(humans):
        return None
    below = PART_OFFSET_LU.get(stem, DEFAULT_PART_OFFSET_LU)
    return loudness_target(integrated_loudness(humans, sample_rate), below)


def finish_part(render: np.ndarray, length: int, sample_rate: int, target: float | None) -> Finished:
    """Cut ``render`` ``[2, >= length]`` into a levelled part of ``length`` samples and its tail."""
    seam = seam_samples(sample_rate)
    done = finish(render, sample_rate, length + seam, target_lufs=target, fade_out_ms=0.0)
    return Finished(np.ascontiguousarray(done[:, :length]), np.ascontiguousarray(done[:, length:]))


def join(part: np.ndarray, tail: np.ndarray | None, sample_rate: int) -> np.ndarray:
    """``part`` ``[2, L]`` with its head crossfaded from ``tail`` (the previous part's; None: silence)."""
    seam = min(part.shape[1], seam_samples(sample_rate) if tail is None else tail.shape[1])
    before = np.zeros((part.shape[0], seam), dtype=np.float32) if tail is None else tail[:, :seam]
    ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(seam) / seam)).astype(np.float32)
    out = part.copy()
    out[:, :seam] = before * (1.0 - ramp) + part[:, :seam] * ramp
    return out
