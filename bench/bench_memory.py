"""Benchmark peak memory: ``stembridge separate`` on long synthetic songs, the peak RSS of each run.

Usage::

    python bench/bench_memory.py                          # 5, 10, 20 and 60 minutes, builtin engine
    python bench/bench_memory.py --minutes 60 --engine builtin --keep /tmp/bench-memory

Each length is written as 16-bit stereo WAV at 44.1 kHz into a temp folder (block by block: this script holds
a few MB), then separated by ``python -m bridge.cli separate FILE --engine ENGINE`` in a child process whose
peak resident memory is read from its own rusage (``os.wait4``), so nothing else is counted. Prints the machine,
the command, and per length: peak RSS, MB per minute of input, wall time and the files written (their lengths
checked to the sample). The output files go away with the temp folder unless ``--keep`` names one.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_song(path: Path, minutes: float, seed: int = 0) -> int:
    """A synthetic song (kick, bass, a vibrato voice, noise) of ``minutes``, written 10 s at a time."""
    frames = int(round(minutes * 60 * RATE))
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16") as f:
        for start in range(0, frames, 10 * RATE):
            t = np.arange(start, min(frames, start + 10 * RATE)) / RATE
            bass = 0.3 * np.sin(2 * np.pi * 55 * (1 + (t // 2) % 3) * t)
            beat = t % 0.5
            kick = 0.5 * np.exp(-beat * 30) * np.sin(2 * np.pi * 60 * beat)
            voice = 0.2 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t))
            noise = 0.05 * rng.standard_normal((2, t.size))
            mix = np.stack([bass + kick + voice, bass + kick + 0.8 * voice]) + noise
            f.write(mix.T.astype(np.float32))
    return frames


def peak_rss(command: list[str]) -> tuple[int, float]:
    """``(peak resident bytes, wall seconds)`` of ``command`` run as a child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 10.0, 20.0, 60.0])
    parser.add_argument("--engine", default="builtin")
    parser.add_argument("--keep", type=Path, default=None, help="folder to write into and keep")
    args = parser.parse_args()
    print(
        f"machine: {cpu_model()}; {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )
    print(
        f"command: python bench/bench_memory.py --minutes {' '.join(f'{m:g}' for m in args.minutes)} "
        f"--engine {args.engine}"
    )
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-memory-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        print(f"{'minutes':>8} {'peak RSS':>10} {'MB/min':>8} {'wall s':>8}  files")
        for minutes in args.minutes:
            song = root / f"song{minutes:g}min.wav"
            frames = write_song(song, minutes)
            out = root / f"out{minutes:g}min"
            command = [
                sys.executable,
                "-m",
                "bridge.cli",
                "separate",
                str(song),
                "--engine",
                args.engine,
                "--out",
                str(out),
                "-q",
            ]
            rss, wall = peak_rss(command)
            files = sorted(out.iterdir())
            if not files or any(sf.info(str(p)).frames != frames for p in files):
                raise SystemExit(f"the stems of {song.name} are not {frames} frames long")
            print(
                f"{minutes:8g} {rss / 1e9:8.2f} GB {rss / 1e6 / minutes:8.0f} {wall:8.1f}  "
                f"{len(files)} x {frames} frames"
            )
            if args.keep is None:
                for p in files:
                    p.unlink()
                song.unlink()


if __name__ == "__main__":
    main()
