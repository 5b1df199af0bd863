"""Finishing a part for its cycle: exactly one cycle long, levelled to the humans, joined to what played before.

An engine renders one bar more than the cycle, **before** it: the pre-roll bar, over the humans' last bar.
The part is what follows, so its head already holds what a player's previous bar leaves ringing (a pad's
release, a reverb tail) and its downbeat is attacked once, as at any bar line inside a part; an engine that
starts every render from silence would otherwise open each part with a hole. The pre-roll itself is dropped.

At the seam, the step between the previous part's last sample and this part's first is taken out of this
part's head, fading over :data:`SEAM_MS` (a smooth bend under 100 Hz, no click): the waveform goes on from
where the previous part left it, and the part's own downbeat attack is kept whole (a crossfade would soften
it). After a rest the previous part is silence, so a part starts from zero. Where the take then plays something
else at a bar line (the part again, or a rest after it), :class:`bridge.jam.take.Take` bends the same way.

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


def join(part: np.ndarray, before: np.ndarray | None, sample_rate: int) -> np.ndarray:
    """``part`` ``[2, L]`` bent at its head onto the end of ``before``, the part that plays before it (None:
    silence): the step between the two is added to the head and faded out over :data:`SEAM_MS` (and the head
    clipped at the ceiling in the rare case where that rides a peak over it; the seam itself never moves)."""
    seam = min(part.shape[1], seam_samples(sample_rate))
    end = np.zeros(part.shape[0], dtype=np.float32) if before is None else before[:, -1]
    step = end - part[:, 0]
    fade = (0.5 + 0.5 * np.cos(np.pi * np.arange(seam) / seam)).astype(np.float32)  # 1 -> 0
    out: np.ndarray = part.copy()
    out[:, :seam] += step[:, None] * fade[None, :]
    ceiling = np.float32(10.0 ** (CEILING_DB / 20.0))
    np.clip(out[:, :seam], -ceiling, ceiling, out=out[:, :seam])  # where the bend rides a peak over it (rare)
    return out
