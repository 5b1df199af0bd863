"""Jam figures through the command line (``stembridge jam --input FILE --json``, without ``--realtime``).

Without ``--realtime`` the cycles follow each other at once, but each part is held to the deadline it would
have had live (``lead`` before the bar line, plus ``lag`` cycles), so the margins are the live ones. Two songs
from ``tests/synth.py`` (drums, a chord pad and a voice; no bass: the AI plays it):

1. a 4-minute song at 120 bpm in C major, 4-bar cycles: cycles on time (target 100 %), the margin before the
   line (p50 / p1, ms);
2. the same length, changing key halfway (C major -> F# major), through the library with an ample budget
   (this is about what the AI hears, not its speed): how many cycles each stem takes to follow (1: the first
   cycle after the change), judged by the part's pitch classes (the new key's own notes carry 3 times the
   energy of the old key's own notes).

    python bench/bench_jam.py
    python bench/bench_jam.py --timing-stems bass drums keys pad lead --stems bass --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.analysis import chroma  # noqa: E402
from bridge.audio.timing import Grid  # noqa: E402
from bridge.engines.builtin import BuiltinEngine  # noqa: E402
from bridge.jam import JamOptions, JamSession  # noqa: E402
from tests import synth  # noqa: E402

SR = 44100
C_MAJOR = [[48, 52, 55], [53, 57, 60], [55, 59, 62], [48, 52, 55]]  # C F G C
F_SHARP_MAJOR = [[54, 58, 61], [59, 63, 66], [61, 65, 68], [54, 58, 61]]  # F# B C# F#
C_ONLY, F_SHARP_ONLY = [0, 2, 4, 7, 9], [1, 3, 6, 8, 10]
C_TUNE, F_SHARP_TUNE = [72, 76, 79, 76, 77, 74, 71, 72], [78, 82, 85, 82, 83, 80, 77, 78]


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
        f"{cpu}; {cores} core(s) usable; load average {os.getloadavg()[0]:.2f}; Python "
        f"{platform.python_version()}; {platform.system()} {platform.release()}"
    )


def band(bpm: float, bars: int, chords: list[list[int]], tune: list[int], seed: int) -> np.ndarray:
    """Drums, a chord pad and a voice, stereo ``[2, T]``."""
    drums, _ = synth.drum_loop(bpm, bars, SR, seed)
    pad = synth.chord_pad(bpm, bars, chords, SR)
    voice = synth.voice(bpm, bars, tune, SR)
    n = min(drums.size, pad.size, voice.size)
    mono = 0.35 * drums[:n] + pad[:n] + 0.5 * voice[:n]
    return np.stack([mono, mono]).astype(np.float32)


def jam(path: Path, out: Path, stem: str, bpm: float, bars: int) -> dict[str, list[dict[str, object]]]:
    command = [
        sys.executable, "-m", "bridge.cli", "jam", "--input", str(path), "--stem", stem, "--bpm", f"{bpm:g}",
        "--bars", str(bars), "--out", str(out), "--json", "-q",
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    report: dict[str, list[dict[str, object]]] = json.loads(done.stdout)
    return report


def in_key(audio: np.ndarray, own: list[int], other: list[int]) -> bool:
    profile = chroma(audio, SR).sum(axis=1)
    return bool(profile[own].sum() > 3 * profile[other].sum())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--bars", type=int, default=4, help="bars per cycle")
    parser.add_argument("--timing-stems", nargs="+", default=["bass"], help="stems timed through the CLI")
    parser.add_argument(
        "--stems", nargs="+", default=["bass", "keys", "pad", "lead"], help="stems for the key change"
    )
    args = parser.parse_args()
    grid = Grid(args.bpm, sample_rate=SR)
    cycle = grid.samples_for_bars(args.bars)
    cycles = int(round(args.minutes * 60 * SR / cycle))
    half = cycles // 2
    print(f"machine: {machine()}")
    print(
        f"song: {cycles} cycles of {args.bars} bars at {args.bpm:g} bpm ({cycles * cycle / SR / 60:.2f} min)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        song = band(args.bpm, cycles * args.bars, C_MAJOR, C_TUNE, 0)
        first = band(args.bpm, half * args.bars, C_MAJOR, C_TUNE, 0)
        second = band(args.bpm, (cycles - half) * args.bars, F_SHARP_MAJOR, F_SHARP_TUNE, 1)
        sf.write(folder / "song.wav", song.T, SR, subtype="FLOAT")
        change = np.concatenate([first, second], axis=1)

        for stem in args.timing_stems:
            report = jam(folder / "song.wav", folder / f"out-{stem}", stem, args.bpm, args.bars)
            margins = np.array([float(c["ready_ms_before_line"]) for c in report["cycles"]])  # type: ignore[arg-type]
            on_time = sum(not c["late"] for c in report["cycles"])
            print(
                f"{stem}, lag 0, lead 1 beat: {on_time}/{len(margins)} cycles on time "
                f"({100 * on_time / len(margins):.1f} %); margin before the line p50 "
                f"{np.percentile(margins, 50):.0f} ms, p1 {np.percentile(margins, 1):.0f} ms, min {margins.min():.0f} ms"
            )
        # The key change is about what the AI hears, not its speed: parts are asked for with an ample budget,
        # so none is skipped whatever the machine's load.
        for stem in args.stems:
            session = JamSession(
                JamOptions(stem, bars=args.bars, bpm=args.bpm), BuiltinEngine(), folder, stem
            )
            keys = []
            for k in range(cycles):
                part = session.answer(
                    k, change[:, k * cycle : k * cycle + session.clock.captured(k)], budget=60.0
                )
                assert part.audio is not None
                keys.append(
                    "F#"
                    if in_key(part.audio, F_SHARP_ONLY, C_ONLY)
                    else "C"
                    if in_key(part.audio, C_ONLY, F_SHARP_ONLY)
                    else "?"
                )
            # the answer to cycle k plays in k + 1; the humans' cycle `half` is the first in F# major
            after = next((k - half + 1 for k in range(half, cycles) if keys[k] == "F#"), None)
            print(
                f"{stem}: key change at cycle {half}: followed in cycle {after} after it; parts in F# major after "
                f"it {keys[half:].count('F#')}/{cycles - half}, in C major before it {keys[:half].count('C')}/{half}"
            )


if __name__ == "__main__":
    main()
