"""Benchmark ``stembridge train``: steps per second and peak memory for the tiny test models on this machine.

Usage::

    python bench/bench_train.py                        # tiny musicgen-melody, LoRA and full, float32 and bfloat16
    python bench/bench_train.py --steps 20 60 --threads 1 --batch-size 2

The base models are the tests' tiny real-architecture MusicGen models with random weights
(tests/model_fixtures.py), the data three synthetic songs at 240 bpm (tests/synth.py) cut into 1-bar segments
(each example: the engine's 10 s audio prompt plus a 1.25 s window, 563 decoder positions). Each setting
trains twice in a child process, ``python -m bridge.cli train ... --json``, for the two step counts given, into
a fresh name with the token cache already filled; steps per second are the difference in steps over the
difference in wall time (so loading, encoding and export cancel out), and the peak resident memory is the
child's own (``os.wait4``). Prints the machine, the command and one line per setting.
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
    """``(wall seconds, peak RSS bytes)`` of ``python -m bridge.cli ARGV`` (it must succeed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    out, err = child.stdout.read() if child.stdout else b"", child.stderr.read() if child.stderr else b""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"train failed: {err.decode(errors='replace')[-2000:]}{out.decode(errors='replace')}"
        )
    return wall, int(usage.ru_maxrss) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs=2, default=[10, 40], help="the two step counts (10 40)")
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
        common += ["--threads", str(args.threads), "--samples", "0", "--val-every", "0", "--json", "-q"]
        print(f"machine: {machine()}")
        shown = " ".join(common).replace(str(album), "ALBUM").replace(str(models), "MODELS")
        print(
            f"command: python -m bridge.cli {shown} --lora|--full --precision P --name N --steps {args.steps}"
        )
        _run([*common, "--name", "warm-cache", "--steps", "1"])  # fills the token cache
        for mode in ("--lora", "--full"):
            for precision in ("float32", "bfloat16"):
                runs = []
                for steps in args.steps:
                    name = f"{mode[2:]}-{precision}-{steps}"
                    runs.append(
                        _run([*common, mode, "--precision", precision, "--name", name, "--steps", str(steps)])
                    )
                (t0, m0), (t1, m1) = runs
                rate = (args.steps[1] - args.steps[0]) / (t1 - t0)
                print(
                    f"  {mode[2:]:<5} {precision:<9} {rate:6.2f} steps/s ({1000 / rate:6.1f} ms a step), "
                    f"peak RSS {max(m0, m1) / 2**20:6.0f} MB (batch {args.batch_size}, 563 positions)"
                )


if __name__ == "__main__":
    main()
