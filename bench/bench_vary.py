"""Time the built-in variation engine and the tempo estimator on synthetic 4-bar loops.

Run from the repository root:

    python -m bench.bench_vary            # 4-bar stereo 44.1 kHz loops, 4 variations, 5 seeds each
    python -m bench.bench_vary --seeds 10

Prints, per material and strength, the median and worst wall time of one ``vary(..., n=4)`` call (grid
given), the time of ``infer_grid`` (what ``grid=None`` adds) and of ``estimate_tempo`` with its error.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from bridge.audio.tempo import estimate_tempo, infer_grid
from bridge.audio.timing import Grid
from bridge.engines.builtin.vary import vary
from tests import synth

SR = synth.SR


def _materials(bpm: float) -> dict[str, np.ndarray]:
    stems = synth.song_stems(bpm, 4)
    drums, _ = synth.drum_loop(bpm, 4)
    drums = drums / np.max(np.abs(drums)) * 0.8
    return {
        "drums": np.stack([drums, drums]).astype(np.float32),
        "bass": stems["bass"],
        "mix": synth.mix(stems),
    }


def _timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per material and strength (default 5)")
    parser.add_argument("--bpm", type=float, default=120.0, help="tempo of the loops (default 120)")
    args = parser.parse_args()
    grid = Grid(args.bpm, sample_rate=SR)
    materials = _materials(args.bpm)
    vary(materials["drums"], SR, 1, 0.5, 0, grid)  # warm-up: imports, pedalboard, FFT plans
    seconds = materials["drums"].shape[1] / SR
    print(f"4 bars at {args.bpm:g} bpm = {seconds:.2f} s stereo, 4 variations per call, {args.seeds} seeds")
    print(f"{'material':8} {'strength':>8} {'median s':>9} {'worst s':>8}")
    for name, audio in materials.items():
        for strength in (0.3, 0.5, 1.0):
            times = [_timed(vary, audio, SR, 4, strength, seed, grid) for seed in range(args.seeds)]
            print(f"{name:8} {strength:8.1f} {statistics.median(times):9.3f} {max(times):8.3f}")
    print(f"{'material':8} {'infer_grid s':>12} {'estimate s':>10} {'bpm error':>9}")
    for name, audio in materials.items():
        infer = _timed(infer_grid, audio, SR)
        start = time.perf_counter()
        bpm = estimate_tempo(audio, SR)
        took = time.perf_counter() - start
        print(f"{name:8} {infer:12.3f} {took:10.3f} {bpm - args.bpm:+9.2f}")


if __name__ == "__main__":
    main()
