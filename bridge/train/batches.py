"""The examples of a split as one pool, and batches drawn from it (torch).

Each step's batch is drawn from a generator seeded by the run's seed, the step and the micro-batch, so a
resumed run draws the same batches as a straight one. Songs at different tempos have segments of different
lengths; a batch is computed in groups of equal shape, each weighted by its share of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bridge.engines.musicgen.decoding import Conditions
from bridge.train.objective import Batch
from bridge.train.tokens import Encoded


class Pool:
    """The examples of ``songs`` (encoded), addressed by one index."""

    def __init__(self, songs: Sequence[Encoded]) -> None:
        self.songs = list(songs)
        self.items = [(s, i) for s, song in enumerate(self.songs) for i in range(len(song))]

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, size: int, *key: int) -> list[int]:
        """``size`` example indices drawn by the seed ``key`` (without repeats while the pool lasts)."""
        rng = np.random.default_rng([int(k) for k in key])
        return [int(i) for i in rng.choice(len(self.items), size=size, replace=size > len(self.items))]

    def sequence_length(self) -> int:
        """The longest prompt plus target, in frames."""
        return max(s.prompt.shape[-1] + s.target.shape[-1] for s in self.songs) if self.songs else 0

    def example(self, index: int) -> tuple[Encoded, int]:
        s, i = self.items[index]
        return self.songs[s], i

    def batches(self, indices: Sequence[int], tokenizer: Any, device: str) -> list[tuple[float, Batch]]:
        """``(weight, batch)`` per group of equal shape among ``indices``; the weights sum to 1."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index in indices:
            song, i = self.example(index)
            groups.setdefault((song.prompt.shape[-1], song.target.shape[-1]), []).append(index)
        out = []
        for members in groups.values():
            picked = [self.example(m) for m in members]
            prompt = torch.from_numpy(np.stack([s.prompt[i] for s, i in picked])).to(device)
            target = torch.from_numpy(np.stack([s.target[i] for s, i in picked])).to(device)
            texts = [s.texts[i] for s, i in picked]
            chroma = None
            if picked[0][0].chroma.shape[1] > 0:
                chroma = torch.from_numpy(np.stack([s.chroma[i] for s, i in picked])).to(device)
            out.append(
                (
                    len(members) / len(indices),
                    Batch(prompt, target, conditions(tokenizer, texts, chroma, device)),
                )
            )
        return out


def conditions(tokenizer: Any, texts: Sequence[str], chroma: torch.Tensor | None, device: str) -> Conditions:
    tokens = tokenizer(list(texts), padding=True, return_tensors="pt")
    return Conditions(tokens["input_ids"].to(device), tokens["attention_mask"].to(device), chroma)
