"""What ``bench_demucs.py`` and ``bench_musicgen.py`` share: the machine line, timing, best-of bookkeeping and a
warm daemon in this process.

The daemon runs on a thread of the benchmark's own process (:class:`~bridge.server.daemon.DaemonThread` with
the real :class:`~bridge.jobs.runner.PipelineRunner`), so the CPU seconds of this process (all threads) count
its work, and jobs go to it over loopback UDP from :class:`~bridge.client.Client`, as ``stembridge request``
sends them.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.client import Client, Endpoint  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.jobs.runner import PipelineRunner  # noqa: E402
from bridge.server.daemon import DaemonThread  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU, usable cores, load average, OS, Python, torch (and its threads), GPU."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    return (
        f"{cpu_model()}; {cores} core(s) usable; load average {os.getloadavg()[0]:.2f}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"
    )


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process, all threads: the in-process daemon's included)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


@dataclass
class Best:
    """The best wall and CPU seconds of each path over its runs (each minimum taken on its own)."""

    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.runs.setdefault(name, []).append((wall, cpu))

    def __contains__(self, name: str) -> bool:
        return name in self.runs

    def __getitem__(self, name: str) -> tuple[float, float]:
        runs = self.runs.get(name) or [(math.inf, math.inf)]
        return min(w for w, _ in runs), min(c for _, c in runs)

    def ratio(self, a: str, b: str) -> tuple[float, float]:
        """``a / b`` of the best wall and of the best CPU seconds."""
        (wa, ca), (wb, cb) = self[a], self[b]
        return wa / wb, ca / cb


def choose_paths(text: str | None, known: list[str], default: list[str]) -> list[str]:
    """The comma-separated ``text`` checked against ``known`` (``default`` when empty), in ``known``'s order."""
    wanted = [p.strip() for p in (text or "").split(",") if p.strip()] or default
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise SystemExit(f"unknown path(s) {', '.join(unknown)}; choose among {', '.join(known)}")
    return [p for p in known if p in wanted]


@contextmanager
def warm_daemon(
    work: Path, models_dir: Path, *, device: str = "auto", threads: int = 0
) -> Iterator[tuple[Client, PipelineRunner]]:
    """A daemon on a thread of this process (state and renders under ``work``, discovery and the separation
    cache off) and a client for it. Its runner keeps the engines it loads warm (``runner.engines``)."""
    settings = Settings(
        out_dir=work / "renders",
        state_dir=work / "state",
        models_dir=models_dir,
        port=0,
        discovery=False,
        cache_max_mb=0,  # a repeat of the same file must run the engine, not come from the cache
        device=device,
        threads=threads,
    )
    runner = PipelineRunner(settings)
    with (
        DaemonThread(settings, runner, discovery=False) as daemon,
        Client(Endpoint("127.0.0.1", daemon.port), answer_timeout=10) as client,
    ):
        yield client, runner


def run_rounds(
    paths: list[str],
    repeat: int,
    best: Best,
    time_path: Callable[[str], tuple[float, float]],
) -> None:
    """``repeat`` rounds of every path in turn (interleaved, so load changes hit them alike), each printed."""
    for round_ in range(repeat):
        for name in paths:
            wall, cpu = time_path(name)
            best.add(name, wall, cpu)
            print(f"  run {round_ + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)


def check_warm(runner: PipelineRunner | None) -> None:
    """Stop with an error unless the benchmark's daemon (if any) loaded its model exactly once."""
    if runner is None:
        return
    loads = runner.engines.loads
    print(f"daemon: engines loaded {loads} time(s) over all its jobs (warm-up included)")
    if loads != 1:
        raise SystemExit(f"the daemon loaded the model {loads} times; it should stay warm after one")
