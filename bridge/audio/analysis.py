"""Musical analysis of context audio: onsets, chroma, key, chords per bar, groove.

Pure functions on ``[C, T]`` float32 arrays; no I/O.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.spectral import stft


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``[C, T]`` or ``[T]`` -> ``[T]`` (mean of channels)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def onset_envelope(audio: np.ndarray, sample_rate: int, hop: int = 512, n_fft: int = 2048) -> tuple[np.ndarray, float]:
    """Spectral-flux onset strength of ``audio`` ``[C, T]``.

    Returns:
        ``(envelope [frames], frame_rate_hz)``; frame ``i`` is centred on sample ``i * hop``.
    """
    mono = to_mono(audio)[None, :]
    mag = np.abs(stft(mono, n_fft=n_fft, hop=hop))[0]
    logmag = np.log1p(100.0 * mag)
    flux = np.maximum(0.0, np.diff(logmag, axis=1, prepend=logmag[:, :1])).sum(axis=0)
    return flux.astype(np.float32), sample_rate / hop
