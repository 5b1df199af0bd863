"""The training loss: cross-entropy over the delayed codebooks, on the delay pattern generation uses (torch).

A segment's prompt codes ``[K, P]`` and target codes ``[K, F]`` are laid out by
:class:`bridge.engines.musicgen.decoding.DelayPattern` exactly as generation lays out a prompt: the start
token, then codebook ``k``'s frame ``f`` at position ``f + 1 + delay(k)``, start tokens where a codebook has
no frame. The decoder reads positions ``0..L-2`` and is scored on predicting positions ``1..L-1``, but only
where generation would *sample* (a target frame): prompt frames and padding are forced at generation time,
so they carry no loss. The conditioning is :meth:`.Decoder.logits`, the decoding loop's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bridge.engines.musicgen.decoding import Conditions, Decoder, DelayPattern
from bridge.engines.musicgen.sampler import Sampling

IGNORE = -100


@dataclass(frozen=True)
class Batch:
    """A batch of examples on the model's device.

    Attributes:
        prompt: ``[B, K, P]`` prompt codes.
        target: ``[B, K, F]`` target codes.
        cond: their text (and chroma) conditioning, one unit per row.
    """

    prompt: torch.Tensor
    target: torch.Tensor
    cond: Conditions


def layout(
    prompt: torch.Tensor, target: torch.Tensor, channels: int, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [B, K, L-1], labels [B, K, L-1])``: the delayed sequence of prompt then target, and at each
    position the token to predict there, :data:`IGNORE` where generation forces it."""
    codes = torch.cat([prompt, target], dim=-1)
    p, f = prompt.shape[-1], target.shape[-1]
    pattern = DelayPattern(codes.shape[1], channels, p + f, 0, start)
    seq = pattern.sequence(codes)
    positions = torch.arange(1, pattern.length, device=codes.device)
    frames = positions[None, :] - 1 - pattern.delays.to(codes.device)[:, None]  # [K, L-1]
    sampled = (frames >= p) & (frames < p + f)
    labels = torch.where(sampled[None], seq[..., 1:], torch.full_like(seq[..., 1:], IGNORE))
    return seq[..., :-1], labels


def loss(model: Any, melody: bool, channels: int, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the target tokens given the prompt and the conditioning."""
    decoder = Decoder(model, melody, channels, Sampling(guidance_scale=1.0))
    inputs, labels = layout(batch.prompt, batch.target, channels, decoder.start)
    logits = decoder.logits(batch.cond, inputs)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE
    )
