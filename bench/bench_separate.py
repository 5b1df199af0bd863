"""Benchmark the built-in separation: real-time factor and SDR per stem on a synthetic and a rendered song.

Usage (one core, no threaded BLAS/FFT, as the speed target is stated)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 0 python bench/bench_separate.py

Prints the machine, the command, the best of ``--repeat`` timings, the real-time factor (processing time /
audio duration) and, per stem, the SDR of the separated stem and of the "mixture / 4" baseline. When Debian's
``fluidsynth`` and ``fluid-soundfont-gm`` are installed it also scores the band song of :mod:`tests.midi` (a GM
drum kit, fingered bass and piano, no vocals) at 110 and 92 bpm, and the share of its energy that lands in
vocals. ``--no-pitch`` separates without the bass tracker (the plain 120-300 Hz crossover), for comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.engines.builtin import separate  # noqa: E402
from tests import midi, synth  # noqa: E402


def make_song(seconds: float, sample_rate: int, bpm: float = 120.0) -> dict[str, np.ndarray]:
    """Known stems ``{stem: [2, T]}`` of the synthetic song, at least ``seconds`` long, cut to ``seconds``."""
    bars = max(1, math.ceil(seconds * bpm / 240.0))
    stems = synth.song_stems(bpm=bpm, bars=bars, sr=sample_rate)
    n = int(round(seconds * sample_rate))
    return {k: np.ascontiguousarray(v[:, :n]) for k, v in stems.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the test song (default 30)")
    parser.add_argument("--rate", type=int, default=44100, help="sample rate in Hz (default 44100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported (default 3)")
    parser.add_argument("--mono", action="store_true", help="separate a mono downmix instead of stereo")
    parser.add_argument("--no-pitch", action="store_true", help="without the bass tracker (plain crossover)")
    parser.add_argument("--band-bars", type=int, default=8, help="bars of the rendered band song (default 8)")
    args = parser.parse_args()
    settings = separate.Settings(pitch=None) if args.no_pitch else separate.Settings()

    threads = {
        k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"cpu_count={os.cpu_count()}, usable cores={affinity}"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}; threads: {threads}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")

    stems = make_song(args.seconds, args.rate)
    if args.mono:
        stems = {k: v.mean(axis=0, keepdims=True) for k, v in stems.items()}
    mixture = synth.mix(stems)
    timings = []
    result: dict[str, np.ndarray] = {}
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        result = separate.separate(mixture, args.rate, [], settings=settings)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    duration = mixture.shape[-1] / args.rate
    print(f"audio: {duration:.1f} s, {mixture.shape[0]} ch, {args.rate} Hz")
    print(f"separate: best {best:.3f} s of {len(timings)} (all: {', '.join(f'{t:.3f}' for t in timings)})")
    print(f"real-time factor: {best / duration:.4f} ({duration / best:.1f}x faster than real time)")
    error = float(np.max(np.abs(sum(result.values()) - mixture)))
    print(f"sum of stems vs mixture: max abs error {error:.2e}")
    print("synthetic song (tests/synth.py):")
    report(stems, result)
    band(args, settings)


def report(stems: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> None:
    """Print SDR, the mixture / 4 baseline and the gain per known stem, and each output's energy share."""
    mixture = synth.mix(stems)
    total = sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in result.values())
    print(f"  {'stem':8s} {'SDR dB':>8s} {'mix/4 dB':>9s} {'gain dB':>8s} {'energy':>7s}")
    for name, estimate in result.items():
        share = float(np.sum(np.asarray(estimate, dtype=np.float64) ** 2)) / total
        if name in stems:
            got = synth.sdr(stems[name], estimate)
            baseline = synth.sdr(stems[name], mixture / 4)
            print(f"  {name:8s} {got:8.2f} {baseline:9.2f} {got - baseline:8.2f} {share:7.3f}")
        else:
            print(f"  {name:8s} {'-':>8s} {'-':>9s} {'-':>8s} {share:7.3f}  (not in the song)")


def band(args: argparse.Namespace, settings: separate.Settings) -> None:
    """Score the fluidsynth-rendered band song at two tempos, when fluidsynth is installed."""
    if not (shutil.which("fluidsynth") and midi.SOUNDFONT.is_file()):
        print(
            "band song: skipped (apt-get install fluidsynth fluid-soundfont-gm to score sampled instruments)"
        )
        return
    channels = "mono" if args.mono else "stereo"
    with tempfile.TemporaryDirectory(prefix="bench_separate_") as folder:
        for bpm in (110.0, 92.0):
            where = Path(folder) / f"{int(bpm)}"
            where.mkdir()
            stems = midi.render_band(where, bpm, args.band_bars, args.rate)
            if args.mono:
                stems = {k: v.mean(axis=0, keepdims=True) for k, v in stems.items()}
            mixture = synth.mix(stems)
            start = time.perf_counter()
            result = separate.separate(mixture, args.rate, [], settings=settings)
            took = time.perf_counter() - start
            seconds = mixture.shape[-1] / args.rate
            print(
                f"band song (tests/midi.py, fluidsynth GM): {bpm:g} bpm, {args.band_bars} bars, {seconds:.1f} s "
                f"{channels}, separated in {took:.3f} s"
            )
            report(stems, result)


if __name__ == "__main__":
    main()
