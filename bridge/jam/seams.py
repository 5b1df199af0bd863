"""Finishing a part for its cycle: exactly one cycle long, levelled to the humans, joined to what played before.

An engine renders one bar more than the cycle, **before** it: the pre-roll bar, over the humans' last bar.
The part is what follows, so its head already holds what a player's previous bar leaves ringing (a pad's
release, a reverb tail) and its downbeat is attacked once, as at any bar line inside a part; an engine that
starts every render from silence would otherwise open each part with a hole. The pre-roll itself is dropped.

At the seam, the part's first :data:`SEAM_MS` are crossfaded from the previous part's **tail**, the previous
part's last samples mirrored (how it goes on past its bar line: the same value at the seam, the same level),
so the waveform never jumps. After a rest the tail is silence, which makes the crossfade a short fade-in.

Levelling is generate's (:mod:`bridge.audio.post`): the part sits under the humans' loudness by the stem's
offset (:data:`bridge.pipeline.PART_OFFSET_LU`, :func:`~bridge.audio.post.match_loudness`), its sample peaks
limited under -1 dBFS (:func:`~bridge.audio.post.peak_limit`).
"""

from __future__ import annotations

import numpy as np

from bridge.audio.loudness import integrated_loudness
from bridge.audio.post import loudness_target, match_loudness, peak_limit
from bridge.pipeline import DEFAULT_PART_OFFSET_LU, PART_OFFSET_LU

SEAM_MS = 10.0
CEILING_DB = -1.0  # sample peaks, as generate's; no true-peak pass here (its oversampling costs a third of
# a part's time on a loaded 2-core machine, and the deadline matters more than a fraction of a dB between samples)


def seam_samples(sample_rate: int) -> int:
    return max(1, int(round(SEAM_MS * sample_rate / 1000.0)))


def target_lufs(humans: np.ndarray, sample_rate: int, stem: str) -> float | None:
    """The loudness a part of ``stem`` gets under the humans' audio ``[C, n]`` (None: they were silent)."""
    if humans.shape[1] == 0 or not np.any(humans):
        return None
    below = PART_OFFSET_LU.get(stem, DEFAULT_PART_OFFSET_LU)
    return loudness_target(integrated_loudness(humans, sample_rate), below)


def finish_part(
    render: np.ndarray, pre: int, length: int, sample_rate: int, target: float | None
) -> np.ndarray:
    """The part ``[2, length]``: ``render`` ``[2, T]`` from sample ``pre`` on (after its pre-roll bar),
    padded with silence if short, levelled to ``target`` LUFS (None: as rendered) and peak-limited."""
    part = np.zeros((2, length), dtype=np.float32)
    body = render[:, pre : pre + length]
    part[:, : body.shape[1]] = body
    if target is not None:
        part = match_loudness(part, sample_rate, target)
    return peak_limit(part, sample_rate, CEILING_DB)


def tail(part: np.ndarray, sample_rate: int) -> np.ndarray:
    """How ``part`` ``[2, L]`` goes on past its end, for the next seam: its last samples mirrored."""
    seam = min(part.shape[1], seam_samples(sample_rate))
    return np.ascontiguousarray(part[:, part.shape[1] - seam :][:, ::-1])


def join(part: np.ndarray, before: np.ndarray | None, sample_rate: int) -> np.ndarray:
    """``part`` ``[2, L]`` with its head crossfaded from ``before``, the part that plays before it (None:
    silence), continued past its end by :func:`tail`."""
    lead_in = None if before is None else tail(before, sample_rate)
    seam = min(part.shape[1], seam_samples(sample_rate) if lead_in is None else lead_in.shape[1])
    start = np.zeros((part.shape[0], seam), dtype=np.float32) if lead_in is None else lead_in[:, :seam]
    ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(seam) / seam)).astype(np.float32)
    out: np.ndarray = part.copy()
    out[:, :seam] = start * (1.0 - ramp) + part[:, :seam] * ramp
    return out
