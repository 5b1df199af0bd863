"""Benchmark the demucs engine and the warm daemon against demucs itself, with the full-size htdemucs
architecture (random weights).

Usage (from the repository root)::

    python bench/bench_demucs.py                    # 30 s of stereo, best of 2 per path, torch's own threads
    python bench/bench_demucs.py --threads 1        # one torch thread everywhere (steadier on a busy machine)
    python bench/bench_demucs.py --paths daemon,bare --repeat 3
    python bench/bench_demucs.py --device cuda      # on a GPU machine

Random weights cost the same compute as the trained ones. The model is saved as a demucs repo folder
(``<models>/htdemucs/htdemucs.yaml`` + ``<sig>-<sha>.th``) in a temporary folder, and the same 30 s stereo
44.1 kHz WAV (the synthetic song of ``tests/synth.py``) is separated into 4 stems by these paths:

1. ``bare``: ``demucs.apply.apply_model`` in this process on the loaded model (demucs's own normalisation,
   ``shifts=1``, ``overlap=0.25``, as ``demucs.api.Separator`` runs it);
2. ``engine``: the warm :class:`~bridge.engines.demucs_engine.DemucsEngine` (model already loaded) on the array,
   with its default chunk workers (``--workers`` to change them);
3. ``pipeline``: ``bridge.pipeline.separate_file`` with that warm engine: read, separate, write 4 WAVs;
4. ``daemon``: a ``separate`` request to a real daemon running on a thread of this process (its own
   :class:`~bridge.jobs.runner.PipelineRunner`, which loaded the model from the models folder on its first
   job and keeps it warm; separation cache off), from the send to the ``done`` reply, 4 WAVs written;
5. ``cli``: ``python -m demucs -n htdemucs --repo <models>/htdemucs`` on the same file: a fresh process that
   imports torch, loads the model, reads, separates and writes 4 WAVs.

The first run of ``bare``, ``engine`` and ``daemon`` is a warm-up and is discarded (the daemon's loads the
model; ``pipeline`` shares the engine that ``engine`` warmed). Then ``--repeat`` rounds of every path,
interleaved, and the best of each is compared, by wall time and by CPU seconds (all threads of this process,
the daemon's included, or of the demucs process; on a machine shared with other work the CPU seconds are the
steadier figure). Prints the machine, every run, the best times and the ratios against the targets.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Best, check_warm, choose_paths, machine, run_rounds, timed, warm_daemon  # noqa: E402
from bridge.client import Client  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402
from tests import synth  # noqa: E402

SR = 44100
PATHS = ["bare", "engine", "pipeline", "daemon", "cli"]
WARM_UP = ("bare", "engine", "daemon")


def make_song(path: Path, seconds: float) -> np.ndarray:
    """Write ``seconds`` of the synthetic song (stereo, 44.1 kHz, 16-bit) to ``path``; return it ``[2, T]``."""
    bars = max(1, math.ceil(seconds / 2.0))  # 2 s per bar at 120 bpm
    audio = synth.mix(synth.song_stems(bpm=120.0, bars=bars, sr=SR))[:, : int(seconds * SR)]
    sf.write(path, audio.T, SR, subtype="PCM_16")
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T)


def bare_apply(model: Any, audio: np.ndarray, device: str) -> np.ndarray:
    """What ``demucs.api.Separator.separate_tensor`` does: normalise, ``apply_model``, scale back."""
    import torch
    from demucs.apply import apply_model

    wav = torch.from_numpy(audio)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    out = apply_model(model, ((wav - mean) / std)[None], shifts=1, split=True, overlap=0.25, device=device)
    result: np.ndarray = (out * std + mean)[0].numpy()
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"python -m demucs failed:\n{done.stderr[-2000:]}")


def timed_cli(cmd: list[str]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of the child process)`` of one run of demucs's command line."""
    wall, cpu = time.perf_counter(), children_cpu()
    run_cli(cmd)
    return time.perf_counter() - wall, children_cpu() - cpu


def daemon_separate(client: Client, song: Path, precision: str) -> None:
    """One ``separate`` request to the daemon, checked: demucs made 4 stems, and not from the cache."""
    stages: set[str] = set()
    result = client.run(
        "separate",
        [str(song)],
        {"engine": "demucs", "model": "htdemucs", "precision": precision},
        on_progress=lambda fraction, stage: stages.add(stage),
    )
    if "cache" in stages:
        raise SystemExit("the daemon served the separation from its cache; the benchmark needs it off")
    if (result.engine, len(result.paths)) != ("demucs", 4):
        raise SystemExit(f"the daemon's separation was made by {result.engine!r}: {result.paths}")
    for path in result.paths:  # keep the renders folder small
        Path(path).unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the song (default 30)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per path (default 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    parser.add_argument(
        "--paths", default=None, help=f"comma-separated, among {','.join(PATHS)} (default: all)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="the engine's chunks side by side (default: its own choice)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="the engine's and the daemon's precision (default auto: bfloat16 on CPUs that do it in hardware)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads here, in the daemon and in the CLI (default: torch's own, one per core)",
    )
    args = parser.parse_args()
    paths = choose_paths(args.paths, PATHS, PATHS)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts, and for the CLI

    import demucs

    from bridge.engines.demucs_engine import DemucsEngine
    from bridge.engines.demucs_engine.run import plan_workers
    from bridge.pipeline import OutputOptions, separate_file

    print(f"machine: {machine()}")
    print(f"demucs {demucs.__version__}; command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    best = Best()
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        models = root / "models"
        model = mf.htdemucs(full=True)
        n_params = sum(p.numel() for p in model.parameters())
        mf.save_demucs_repo(models / "htdemucs", "htdemucs", [model])
        del model
        song = root / "song.wav"
        audio = make_song(song, args.seconds)
        print(
            f"model: htdemucs architecture, {n_params:,} parameters (random weights); "
            f"song: {args.seconds:g} s stereo 44.1 kHz"
        )

        start = time.perf_counter()
        engine = DemucsEngine(
            models_dir=models, device=args.device, workers=args.workers, precision=args.precision
        )
        workers, threads = plan_workers(engine.options)
        chunks = (
            f"{workers} chunks side by side, {threads} thread(s) each" if workers else "one chunk at a time"
        )
        print(
            f"engine: device {engine.device}, {engine.options.precision}, {chunks}, loaded in {time.perf_counter() - start:.2f} s, "
            f"{engine.model_bytes / 2**20:.0f} MiB of parameters"
        )
        device = engine.device or "cpu"
        net = engine._net  # the same loaded model for the bare path
        options = OutputOptions(root / "out")
        run: dict[str, Callable[[], object]] = {
            "bare": lambda: bare_apply(net, audio, device),
            "engine": lambda: engine.separate(audio, SR, []),
            "pipeline": lambda: separate_file(song, options, engine=engine),
        }
        runner = None
        if "daemon" in paths:
            client, runner = stack.enter_context(
                warm_daemon(root / "daemon", models, device=args.device, threads=args.threads)
            )
            run["daemon"] = lambda: daemon_separate(client, song, args.precision)
        cli = [sys.executable, "-m", "demucs", "-n", "htdemucs", "--repo", str(models / "htdemucs")]
        cli += ["-o", str(root / "demucs_out"), "--device", device, str(song)]
        for name in paths:
            if name in WARM_UP:
                wall, cpu = timed(run[name])
                print(f"  warm-up {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        run_rounds(
            paths, args.repeat, best, lambda name: timed_cli(cli) if name == "cli" else timed(run[name])
        )
        check_warm(runner)

    print(f"machine at the end: load average {os.getloadavg()[0]:.2f}")
    print("\nbest times (wall, and CPU seconds of all threads: steadier on a shared machine):")
    for name in paths:
        wall, cpu = best[name]
        print(f"  {name:<9} {wall:7.2f} s wall {cpu:7.2f} s CPU   {args.seconds / wall:5.2f}x real time")
    print("ratios (wall, CPU):")
    for label, a, b, target in (
        ("daemon / demucs CLI        ", "daemon", "cli", 0.6),
        ("daemon / bare apply_model  ", "daemon", "bare", 1.05),
        ("engine / bare apply_model  ", "engine", "bare", 1.05),
        ("pipeline / bare apply_model", "pipeline", "bare", 1.05),
        ("pipeline / demucs CLI      ", "pipeline", "cli", 0.6),
        ("daemon / pipeline          ", "daemon", "pipeline", None),
    ):
        if a in best and b in best:
            wall, cpu = best.ratio(a, b)
            verdict = (
                ""
                if target is None
                else f"   (target <= {target}: wall {_met(wall, target)}, CPU {_met(cpu, target)})"
            )
            print(f"  {label} {wall:.3f}, {cpu:.3f}{verdict}")


def _met(ratio: float, target: float) -> str:
    return "met" if ratio <= target else "MISSED"


if __name__ == "__main__":
    main()
