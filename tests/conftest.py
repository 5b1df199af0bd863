"""Shared fixtures: synthetic songs with known stems (see tests/synth.py)."""

from __future__ import annotations

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
