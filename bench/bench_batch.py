"""Items per minute of ``stembridge batch separate`` on 20 songs of 30 s with the built-in engine: the local pool
with 1 and 2 workers, and a local Ray cluster (``ray.init(num_cpus=2)``, on 127.0.0.1) with 2 actors.

Each run starts from an empty output folder and includes starting its workers (what a user waits for); Ray's own
start (``ray.init``) is timed apart. The load average is printed before and after each run: on a shared machine
it says how much of the cores the runs had.

    PYTHONPATH=. python bench/bench_batch.py [--songs 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: stay on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import soundfile as sf  # noqa: E402

from bench._common import machine  # noqa: E402
from bridge.batch.driver import run_batch  # noqa: E402
from bridge.batch.executor import Executor, LocalPool  # noqa: E402
from bridge.batch.items import find_audio, separate_items  # noqa: E402
from bridge.batch.work import WorkerConfig  # noqa: E402
from tests import synth  # noqa: E402


def make_songs(folder: Path, count: int, seconds: float) -> None:
    for k in range(count):
        bpm = 100.0 + 2 * k
        bars = max(1, round(seconds * bpm / 240))
        mix = synth.mix(synth.song_stems(bpm=bpm, bars=bars))[:, : int(seconds * synth.SR)]
        sf.write(folder / f"song{k:02d}.wav", mix.T, synth.SR, subtype="PCM_16")


def timed(label: str, items: list, executor: Executor, out: Path) -> float:
    """Run the batch into ``out``; print and return its items per minute."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    summary = run_batch(items, ["builtin"] * len(items), out, executor)
    wall = time.perf_counter() - start
    assert summary.done == len(items) and not summary.failed, summary.failed
    rate = len(items) / wall * 60
    print(
        f"  {label:<28} {wall:6.1f} s  {rate:6.1f} items/min  load {before:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    return rate


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, make: Callable[[], Executor], items: list, root: Path, rates: dict) -> None:
    """A cold run (the executor's workers start inside it), then a warm one on the same workers; for the local
    pool also the CPU seconds its worker processes used, per item (counted once they have exited)."""
    cpu, start = children_cpu(), time.perf_counter()
    with make() as executor:
        cold = timed(f"{name}, cold", items, executor, root / f"{name}-cold-{time.monotonic_ns()}")
        warm = timed(f"{name}, warm", items, executor, root / f"{name}-warm-{time.monotonic_ns()}")
    if isinstance(executor, LocalPool):
        used, wall = children_cpu() - cpu, time.perf_counter() - start
        print(
            f"  {'':<28} workers' CPU {used / (2 * len(items)):.2f} s per item, {used / wall:.2f} cores busy"
        )
    rates.setdefault((name, "cold"), []).append(cold)
    rates.setdefault((name, "warm"), []).append(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2, help="each figure is the best of this many")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    print(machine())
    ray = None
    if not args.no_ray:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"ray.init(num_cpus=2): {time.perf_counter() - start:.1f} s (not counted below)")
    from bridge.batch.ray_executor import RayExecutor

    configs: list[tuple[str, Callable[[], Executor]]] = [
        ("local 1 worker", lambda: LocalPool(WorkerConfig(), 1)),
        ("local 2 workers", lambda: LocalPool(WorkerConfig(), 2)),
    ]
    if ray is not None:
        configs.append(("ray 2 actors", lambda: RayExecutor(ray, WorkerConfig(), workers=2)))
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "songs").mkdir()
            make_songs(root / "songs", args.songs, args.seconds)
            items = separate_items(find_audio([str(root / "songs")]), {})
            for k in range(args.rounds):
                print(f"round {k + 1}:")
                for name, make in configs if k % 2 == 0 else configs[::-1]:
                    measure(name, make, items, root, rates)
    finally:
        if ray is not None:
            ray.shutdown()
    best = {key: max(values) for key, values in rates.items()}
    print(f"best of {args.rounds}, items per minute ({args.songs} songs of {args.seconds:g} s):")
    for (name, phase), rate in best.items():
        print(f"  {name:<16} {phase:<5} {rate:6.1f}")
    for phase in ("cold", "warm"):
        one, two = best[("local 1 worker", phase)], best[("local 2 workers", phase)]
        line = f"{phase}: 2 workers / 1 worker {two / one:.2f}x"
        if ray is not None:
            on_ray = best[("ray 2 actors", phase)]
            per_item = (60 / on_ray - 60 / two) * 1000
            line += f"; Ray's overhead over the pool {(two / on_ray - 1) * 100:+.1f} % ({per_item:+.0f} ms per item)"
        print(line)


if __name__ == "__main__":
    main()
