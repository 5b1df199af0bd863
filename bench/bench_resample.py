"""Time ``bridge.audio.io.resample`` (libsoxr, very high quality) against the Kaiser-sinc polyphase filter it
replaced, and measure what each lets through of a tone just above the new Nyquist frequency.

Run from the repository root:

    python -m bench.bench_resample               # 3 minutes of stereo, 44.1 <-> 48 kHz, best of 3
    python -m bench.bench_resample --seconds 30 --repeat 5

The old filter is kept here only, as the reference: 64 zero crossings each side (20,481 taps at 44.1 <-> 48
kHz), 100 dB Kaiser stopband, cut-off at 97 % of the lower Nyquist frequency, run by
``scipy.signal.resample_poly``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from scipy.signal import firwin, kaiser_beta, lfilter, resample_poly

from bench._common import cpu_model
from bridge.audio.io import resample

Resampler = Callable[[np.ndarray, int, int], np.ndarray]


def kaiser_resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """The resampler before libsoxr: ``[C, T]`` -> ``[C, round(T * sr_to / sr_from)]``, zero delay."""
    ratio = Fraction(sr_to, sr_from)
    up, down = ratio.numerator, ratio.denominator
    most = max(up, down)
    taps = firwin(2 * 64 * most + 1, 0.97 / most, window=("kaiser", kaiser_beta(100.0)))
    n_out = (2 * audio.shape[1] * sr_to + sr_from) // (2 * sr_from)
    out = resample_poly(audio, up, down, axis=-1, window=np.asarray(taps, np.float32), padtype="constant")
    out = np.asarray(out, dtype=np.float32)[:, :n_out]
    return np.pad(out, ((0, 0), (0, n_out - out.shape[1])))


def music_like(seconds: float, sample_rate: int) -> np.ndarray:
    """Stereo ``[2, T]``: a few partials over noise that falls towards the treble, as in a mix."""
    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((110.0, 220.0, 330.0, 1760.0, 7040.0), 1))
    noise = lfilter([1.0], [1.0, -0.95], rng.standard_normal((2, n)), axis=1)  # falls 6 dB an octave
    noise /= np.abs(noise).max()
    return (0.3 * tone + 0.2 * noise).astype(np.float32)


def best_seconds(fn: Resampler, audio: np.ndarray, sr_from: int, sr_to: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(audio, sr_from, sr_to)
        times.append(time.perf_counter() - start)
    return min(times)


def alias_db(fn: Resampler, sr_from: int, sr_to: int, freq: float) -> float:
    """Level (dB re the input) of what a 0.5 s tone at ``freq`` leaves after resampling (edges left out)."""
    t = np.arange(sr_from // 2) / sr_from
    tone = np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[None, :], 2, axis=0).astype(np.float32)
    out = fn(tone, sr_from, sr_to)[:, sr_to // 10 : -sr_to // 10]
    return float(20 * np.log10(np.sqrt(2) * out.std() / 0.5 + 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="stereo signal length (default 180)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per resampler, best taken (default 3)")
    args = parser.parse_args()
    paths: dict[str, Resampler] = {"kaiser": kaiser_resample, "soxr": resample}
    print(f"{cpu_model()}; {args.seconds:g} s of stereo; best of {args.repeat}")
    print(f"{'rates':>15} {'kaiser s':>9} {'soxr s':>7} {'speed-up':>8}")
    for sr_from, sr_to in ((44100, 48000), (48000, 44100)):
        audio = music_like(args.seconds, sr_from)
        got = {name: best_seconds(fn, audio, sr_from, sr_to, args.repeat) for name, fn in paths.items()}
        print(
            f"{sr_from:>6} -> {sr_to:<6} {got['kaiser']:9.3f} {got['soxr']:7.3f} "
            f"{got['kaiser'] / got['soxr']:7.1f}x"
        )
    print("a tone above the new Nyquist frequency, 48 -> 44.1 kHz: level left (dB)")
    print(f"{'tone Hz':>8} {'kaiser':>7} {'soxr':>7}")
    for freq in (22094.0, 22270.0, 22712.0, 23000.0):
        print(f"{freq:8.0f} " + " ".join(f"{alias_db(fn, 48000, 44100, freq):7.1f}" for fn in paths.values()))


if __name__ == "__main__":
    main()
