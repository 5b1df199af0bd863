"""Time the built-in generator: each stem for 8 bars at 120 bpm (16 s of stereo 44.1 kHz), best of 3.

The context is a synthetic 8-bar song (drums, bass, chords, voice in A minor from ``tests/synth.py``), so the
timing includes analysing it. Pin to one core for figures comparable with the target (<= 0.5 s per stem)::

    taskset -c 0 python bench/bench_generate.py
    python bench/bench_generate.py --bars 16 --bpm 93 --time-signature 7/8 --no-context
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.timing import TimeSignature  # noqa: E402
from bridge.engines.base import GenerateSpec  # noqa: E402
from bridge.engines.builtin.generate import STEMS, generate  # noqa: E402
from tests import synth  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}; {cores} core(s) usable; Python {platform.python_version()}; numpy {np.__version__}; "
        f"{platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--time-signature", default="4/4")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-context", action="store_true", help="generate without a context")
    parser.add_argument("--stems", default=",".join(STEMS), help="comma-separated, default: all")
    args = parser.parse_args()

    sr = args.sample_rate
    ts = TimeSignature.parse(args.time_signature)
    context = None
    if not args.no_context:
        context = synth.mix(synth.song_stems(bpm=args.bpm, bars=args.bars, sr=sr))
    print(f"machine: {machine()}")
    print(
        f"generate {args.bars} bars at {args.bpm:g} bpm {ts}, {sr} Hz, "
        f"{'no context' if context is None else 'with a context'}, best of {args.repeat} after a warm-up"
    )
    for stem in args.stems.split(","):
        spec = GenerateSpec(stem.strip(), args.bpm, args.bars, ts, seed=1)
        seconds = spec.grid(sr).samples_for_bars(args.bars) / sr
        generate(context, sr, spec)  # warm-up: imports, first-call allocations
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            generate(context, sr, spec)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"  {stem:6s} {best:6.3f} s   {seconds / best:6.1f}x real time   ({seconds:.1f} s of audio)")


if __name__ == "__main__":
    main()
