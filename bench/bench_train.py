"""Benchmark ``stembridge train``: steps per second and peak memory for the tiny test models on this machine.

Usage::

    python bench/bench_train.py                        # tiny musicgen-melody, LoRA and full, float32 and bfloat16
    python bench/bench_train.py --steps 60 --threads 1 --batch-size 2

The base models are the tests' tiny real-architecture MusicGen models with random weights
(tests/model_fixtures.py), the data three synthetic songs at 240 bpm (tests/synth.py) cut into 1-bar segments
(each example: the engine's 10 s audio prompt plus a 1.25 s window, 563 decoder positions). Each setting
trains in a child process (the library's ``train`` with the options ``stembridge train`` parses), into a fresh
name with the token cache already filled; the time a step takes is the median gap between the loop's progress
reports after the first three steps (loading, encoding and export are not counted, and a busy neighbour's
bursts weigh little), and the peak resident memory is the child's own (``getrusage``). Prints the machine, the command and one line per setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402


def _run(argv: list[str]) -> tuple[float, int]:
    """``(median seconds a step, peak RSS bytes)`` of one training run in a child process (``--child``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"train failed: {err.decode(errors='replace')[-2000:]}")
    return float(out.decode().strip().splitlines()[-1]), _peak(err.decode())


def _peak(stderr: str) -> int:
    return int(stderr.strip().splitlines()[-1].split()[-1])


def _child(argv: list[str]) -> None:
    """Run ``stembridge train ARGV`` in this process; print the median seconds between steps (after the
    first three) on stdout and the peak RSS in bytes on stderr's last line."""
    import resource
    import statistics

    from bridge.cli import build_parser
    from bridge.engines.base import set_threads
    from bridge.train.loop import train
    from bridge.train.settings import TrainSettings

    args = build_parser().parse_args(argv)
    settings = TrainSettings(
        data=tuple(args.data), stem=args.stem, name=args.name, models_dir=args.models_dir, base=args.base,
        steps=args.steps, lora=args.lora, bars=args.bars, batch_size=args.batch_size, samples=0, val_every=0,
        precision=args.precision, device="cpu",
    )  # fmt: skip
    set_threads(args.threads)
    stamps: list[float] = []

    def progress(fraction: float, stage: str) -> None:
        if stage.startswith("step "):
            stamps.append(time.perf_counter())

    train(settings, progress)
    gaps = [b - a for a, b in zip(stamps[3:-1], stamps[4:], strict=True)]
    print(statistics.median(gaps))
    print(f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if sys.argv[1:2] == ["--child"]:
        return _child(sys.argv[2:])
    parser.add_argument("--steps", type=int, default=40, help="steps a run (40)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import soundfile as sf

    from tests import model_fixtures as mf
    from tests import synth

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models, album = root / "models", root / "album"
        album.mkdir()
        for n in range(3):
            for stem, audio in synth.song_stems(bpm=240.0, bars=4 + n, sr=32000).items():
                sf.write(album / f"song{n}__{stem}__240bpm__{4 + n}bars.wav", audio.T, 32000)
        mf.save_musicgen(mf.musicgen_model(melody=True, seed=1), models / "tiny-melody")
        common = ["train", "--data", str(album), "--stem", "bass", "--base", "tiny-melody"]
        common += ["--models-dir", str(models), "--bars", "1", "--batch-size", str(args.batch_size)]
        common += ["--threads", str(args.threads)]
        print(f"machine: {machine()}")
        shown = " ".join(common).replace(str(album), "ALBUM").replace(str(models), "MODELS")
        print(
            f"command: python -m bridge.cli {shown} --lora|--full --precision P --name N --steps {args.steps} --samples 0 --val-every 0"
        )
        _run([*common, "--name", "warm-cache", "--steps", "5"])  # fills the token cache
        for mode in ("--lora", "--full"):
            for precision in ("float32", "bfloat16"):
                name = f"{mode[2:]}-{precision}"
                step, peak = _run(
                    [*common, mode, "--precision", precision, "--name", name, "--steps", str(args.steps)]
                )
                print(
                    f"  {mode[2:]:<5} {precision:<9} {1 / step:6.2f} steps/s ({1000 * step:6.1f} ms a step, median), "
                    f"peak RSS {peak / 2**20:6.0f} MB (batch {args.batch_size}, 563 positions)"
                )


if __name__ == "__main__":
    main()
