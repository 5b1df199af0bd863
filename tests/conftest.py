"""Shared fixtures: synthetic songs with known stems (see tests/synth.py), and a machine without model weights."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests import synth


@pytest.fixture(scope="session")
def song() -> dict[str, np.ndarray]:
    """Known stereo stems of a 4-bar song at 120 bpm, 44.1 kHz, in A minor (Am F C G)."""
    return synth.song_stems(bpm=120.0, bars=4)


@pytest.fixture(scope="session")
def song_mix(song: dict[str, np.ndarray]) -> np.ndarray:
    return synth.mix(song)


@pytest.fixture(scope="session", autouse=True)
def no_model_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test (and every process it starts) sees empty torch and Hugging Face caches and no network,
    so "auto" means the built-in engine unless a test puts weights somewhere on purpose, whatever this
    machine has downloaded."""
    root = tmp_path_factory.mktemp("empty-caches")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
            mp.delenv(var, raising=False)
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield
