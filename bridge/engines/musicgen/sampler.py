"""How MusicGen tokens are drawn: the sampling settings and the seeds (torch and numpy only, no transformers:
the audiocraft engine uses it in its own environment)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

_SEED_MASK = (1 << 63) - 1


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn (audiocraft's defaults: top-k 250, classifier-free guidance 3). ``top_k`` 1 is
    greedy decoding; 0 samples from the whole vocabulary."""

    temperature: float = 1.0
    top_k: int = 250
    guidance_scale: float = 3.0

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance is on (it doubles the decoder's batch)."""
        return self.guidance_scale > 1.0


def row_seed(seed: int, *key: int) -> int:
    """The seed of one row of a batch: ``seed`` mixed with the row's ``key`` (window, variation), so that
    variation ``v`` of a seed is the same take whether one or sixteen were asked for, in any batch."""
    words = np.random.SeedSequence([int(seed) & _SEED_MASK, *(int(k) for k in key)]).generate_state(2)
    return (int(words[0]) << 31 ^ int(words[1])) & _SEED_MASK


@contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Run the body with torch's global generators seeded by ``seed`` (for code that samples from them, such as
    audiocraft's); the caller's generator states come back after."""
    kind = device.split(":")[0]
    devices = [torch.device(device).index or 0] if kind == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=kind if kind in ("cuda", "mps") else "cuda"):
        torch.manual_seed(int(seed) & _SEED_MASK)
        yield
