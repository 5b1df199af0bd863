"""What every variation of one input shares: the audio, its grid, the snapped 16th cuts and a few facts.

:func:`analyse` runs once per :func:`bridge.engines.builtin.vary.vary` call; the rearrangement
(:mod:`~bridge.engines.builtin.vary_slices`) and the effects (:mod:`~bridge.engines.builtin.vary_effects`)
read the :class:`VaryContext` it returns and never change it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from bridge.audio.analysis import to_mono
from bridge.audio.timing import Grid

XFADE_S = 0.003  # crossfade at every joint
EDGE_S = 0.008  # wet/dry ramps at the edges of an effect region
SNAP_S = 0.006  # how far a cut may move to sit before an early transient
INTERVALS = (12, 7, 5, -5, -7, -12)  # semitones of every pitch change: octaves, fifths and fourths


@dataclass(frozen=True)
class VaryContext:
    """What every variation of one input shares: the audio, its grid and its analysis."""

    audio: np.ndarray  # [C, T] float32
    sample_rate: int
    grid: Grid
    cuts: np.ndarray  # [S + 1] sample index of each 16th step after snapping; cuts[S] >= T
    percussive: bool
    seamless: bool  # the input loops without a step from its last sample to its first
    rms: float
    xfade: int
    edge: int

    @property
    def length(self) -> int:
        return int(self.audio.shape[1])


def analyse(x: np.ndarray, sample_rate: int, grid: Grid) -> VaryContext:
    """The shared context of ``x`` ``[C, T]`` float32 on ``grid`` (at ``sample_rate``)."""
    total = x.shape[1]
    step = grid.samples_per_step
    n_steps = int(np.ceil(total / step)) + 1
    grid_cuts = np.round(np.arange(n_steps + 1) * step).astype(np.int64)
    grid_cuts = grid_cuts[: int(np.searchsorted(grid_cuts, total)) + 1]  # last one is >= total
    mono = to_mono(x)
    cuts = _snap(mono, grid_cuts, sample_rate, step)
    level = rms(x)
    xfade = max(1, min(int(round(XFADE_S * sample_rate)), total // 4))
    edge = max(1, min(int(round(EDGE_S * sample_rate)), total // 4))
    percussive = _is_percussive(mono, sample_rate)
    return VaryContext(x, sample_rate, grid, cuts, percussive, _is_seamless(x), level, xfade, edge)


def rms(x: np.ndarray) -> float:
    """Root mean square of all samples of ``x`` (0 when empty), in float64."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _is_seamless(x: np.ndarray) -> bool:
    """True when the step from the last sample to the first is no bigger than steps near either end."""
    if x.shape[1] < 64:
        return False
    step = float(np.max(np.abs(x[:, 0] - x[:, -1])))
    near = float(max(np.max(np.abs(np.diff(x[:, :32]))), np.max(np.abs(np.diff(x[:, -32:])))))
    return step <= 2.0 * near + 1e-4


def _snap(mono: np.ndarray, grid_cuts: np.ndarray, sample_rate: int, step: float) -> np.ndarray:
    """Move each inner cut to just before a transient starting within a few ms, else to a zero crossing.

    A transient is a rise of more than 9 dB between two consecutive 1 ms energy windows, above -40 dB of
    the mean power. Cuts at 0 and at the end stay where they are.
    """
    total = mono.size
    cuts: np.ndarray = grid_cuts.copy()
    inner = np.nonzero((grid_cuts > 0) & (grid_cuts < total))[0]
    if inner.size == 0:
        return cuts
    w = max(1, int(round(0.001 * sample_rate)))
    reach = int(min(round(SNAP_S * sample_rate), step / 4))
    pre = max(1, w // 2)
    power = np.square(mono, dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    floor = 1e-4 * float(power.mean()) + 1e-20
    centres = grid_cuts[inner]
    offsets = np.arange(-reach, reach + 1)
    t = np.clip(centres[:, None] + offsets[None, :], 0, total)

    def energy(end: np.ndarray) -> np.ndarray:
        end = np.clip(end, w, total)
        result: np.ndarray = (csum[end] - csum[end - w]) / w
        return result

    now = energy(t)
    rise = 10.0 * np.log10((now + floor) / (energy(t - w) + floor))
    best = np.argmax(rise, axis=1)
    rows = np.arange(inner.size)
    strong = (rise[rows, best] > 9.0) & (now[rows, best] > 10.0 * floor)
    onset_cut = t[rows, best] - w - pre
    zero = max(1, w)
    for i, idx in enumerate(inner):
        c = int(grid_cuts[idx])
        if strong[i]:
            cuts[idx] = int(np.clip(onset_cut[i], c - reach, c + reach))
            continue
        lo, hi = max(1, c - zero), min(total - 1, c + zero)
        seg = mono[lo - 1 : hi + 1]
        crossings = np.nonzero((seg[:-1] <= 0) & (seg[1:] > 0))[0] + lo
        if crossings.size:
            cuts[idx] = int(crossings[np.argmin(np.abs(crossings - c))])
    # keep the cuts strictly increasing whatever moved
    for i in range(1, cuts.size):
        if cuts[i] <= cuts[i - 1]:
            cuts[i] = max(grid_cuts[i], cuts[i - 1] + 1)
    return cuts


def _is_percussive(mono: np.ndarray, sample_rate: int) -> bool:
    """True for drum-like material: noisy spectra (median spectral flatness 200 Hz-8 kHz above 0.03)."""
    if mono.size < 4096:
        return False
    excerpt = 30 * sample_rate  # the middle 30 s tell enough
    if mono.size > excerpt:
        mono = mono[(mono.size - excerpt) // 2 :][:excerpt]
    freqs, _, spec = signal.stft(mono, fs=sample_rate, nperseg=2048, noverlap=1024)
    band = (freqs > 200) & (freqs < min(8000.0, 0.45 * sample_rate))
    power = np.abs(spec[band]) ** 2 + 1e-18
    loud = power.mean(axis=0)
    keep = loud > 1e-3 * loud.max()
    if not np.any(keep):
        return False
    flatness = np.exp(np.log(power[:, keep]).mean(axis=0)) / loud[keep]
    return bool(np.median(flatness) > 0.03)
