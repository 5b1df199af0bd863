"""Short-time Fourier transform helpers shared by the built-in engines.

``stft`` and ``istft`` are exact inverses (Hann window, hop = n_fft / 4, constant overlap-add), so masks that
sum to one reconstruct the input to float precision.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def stft(audio: np.ndarray, n_fft: int = 2048, hop: int | None = None) -> np.ndarray:
    """Complex spectrogram of ``audio`` ``[C, T]`` -> ``[C, n_fft // 2 + 1, frames]`` (complex64)."""
    hop = hop or n_fft // 4
    _, _, spec = signal.stft(
        audio, nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary="even", padded=True, axis=-1
    )
    return spec.astype(np.complex64, copy=False)


def istft(spec: np.ndarray, length: int, n_fft: int = 2048, hop: int | None = None) -> np.ndarray:
    """Inverse of :func:`stft`: ``[C, F, frames]`` -> ``[C, length]`` float32."""
    hop = hop or n_fft // 4
    _, audio = signal.istft(spec, nperseg=n_fft, noverlap=n_fft - hop, window="hann", boundary=True, time_axis=-1, freq_axis=-2)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[-1] < length:
        audio = np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])])
    return audio[..., :length]


def frequencies(sample_rate: int, n_fft: int = 2048) -> np.ndarray:
    """Centre frequency in Hz of each STFT bin, shape ``[n_fft // 2 + 1]``."""
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
