"""Codec tokens and chroma of a song's examples, computed once and cached on disk (torch).

The cache key is the song's files (names, sizes, modification times), its sidecar, the settings that shape its
examples (stem, bars, tags, time signature) and the base model's codec; a second run, a resume or another
training on the same songs reads the tokens instead of reading, separating and encoding the audio again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.engines.musicgen.loading import LoadedModel
from bridge.train.examples import Example
from bridge.train.songs import Song


@dataclass(frozen=True)
class Encoded:
    """One song's examples as the decoder sees them.

    Attributes:
        song: the song's name.
        prompt: ``[S, K, P]`` int64 codes of each segment's audio prompt.
        target: ``[S, K, F]`` int64 codes of the stem over each window (and its margin).
        chroma: ``[S, n, 12]`` float32 one-hot chroma for melody models (``n`` = 0 for other models).
        texts: ``S`` text prompts.
        samples: one segment's length in samples at the model's rate.
    """

    song: str
    prompt: np.ndarray
    target: np.ndarray
    chroma: np.ndarray
    texts: tuple[str, ...]
    samples: int

    def __len__(self) -> int:
        return int(self.prompt.shape[0])


def song_key(song: Song, lm: LoadedModel, settings: dict[str, Any]) -> str:
    """The cache key of ``song``'s examples under ``settings`` for ``lm``'s codec."""
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in song.files]
    codec = {
        "rate": lm.sample_rate,
        "channels": lm.channels,
        "hop": lm.hop,
        "codebooks": lm.num_codebooks,
        "melody": lm.melody,
        "codec": _codec_fingerprint(lm),
    }
    blob = json.dumps([song.name, files, song.sidecar, settings, codec], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _codec_fingerprint(lm: LoadedModel) -> str:
    """A digest of the codec's weights: two bases with different codecs never share tokens."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(lm.model.audio_encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(
                tensor.detach().flatten()[:1024].float().cpu().numpy().tobytes()
            )  # a sample, not a copy
    return digest.hexdigest()[:16]


def encode(lm: LoadedModel, song: str, examples: list[Example]) -> Encoded:
    """Codes (and chroma) of ``examples`` with ``lm``'s codec, as :mod:`..sampling` encodes prompts."""
    import torch

    from bridge.engines.musicgen.sampling import encode_prompts, melody_chroma

    k = lm.num_codebooks
    prompts = np.stack([e.prompt for e in examples])
    targets = np.stack([e.target for e in examples])
    with torch.inference_mode():
        prompt = encode_prompts(lm, prompts).reshape(len(examples), k, -1).cpu().numpy()
        target = encode_prompts(lm, targets).reshape(len(examples), k, -1).cpu().numpy()
    if lm.melody:
        chroma = melody_chroma(np.stack([e.melody for e in examples]), lm)
    else:
        chroma = np.zeros((len(examples), 0, 12), dtype=np.float32)
    return Encoded(
        song,
        prompt.astype(np.int64),
        target.astype(np.int64),
        chroma.astype(np.float32),
        tuple(e.text for e in examples),
        examples[0].samples,
    )


def cached(folder: Path, key: str, make: Callable[[], Encoded]) -> Encoded:
    """The encoded examples stored under ``key`` in ``folder``, or ``make()`` stored there (atomically)."""
    path = folder / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return Encoded(
                str(data["song"]),
                data["prompt"],
                data["target"],
                data["chroma"],
                tuple(str(t) for t in data["texts"]),
                int(data["samples"]),
            )
    encoded = make()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                song=np.array(encoded.song),
                prompt=encoded.prompt,
                target=encoded.target,
                chroma=encoded.chroma,
                texts=np.array(encoded.texts),
                samples=np.array(encoded.samples),
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return encoded
