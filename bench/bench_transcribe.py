"""Benchmark transcription: accuracy on parts FluidSynth renders from MIDI we write (the ground truth).

Usage::

    python bench/bench_transcribe.py                 # 3 tempi x 3 seeds, 8 bars each
    python bench/bench_transcribe.py --bpm 96 --seeds 5

Each part of :func:`tests.midi.transcription_song` (a fingered bass, a sawtooth lead, a GM drum kit, piano
triads) is written as MIDI, rendered with Debian's ``fluidsynth`` and ``fluid-soundfont-gm``, and transcribed
with the tempo given (as ``stembridge transcribe --bpm`` does). Prints, per stem, the onset F-measure (50 ms) and
note F-measure (onset and pitch) for bass and lead, the per-class onset F-measure for drums (kick, snare, closed
hat) and the chord-per-bar accuracy for keys, averaged over the renders, with the time transcription took
(real-time factor: seconds of work per second of audio). docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine  # noqa: E402
from bridge.audio.timing import Grid  # noqa: E402
from bridge.midi.notes import Note  # noqa: E402
from bridge.midi.score import chord_accuracy, note_f, onset_f  # noqa: E402
from bridge.midi.transcribe import transcribe  # noqa: E402
from tests import midi  # noqa: E402

SR = 44100


def bar_chords(notes: list[Note], grid: Grid, bars: int) -> list[frozenset[int]]:
    """Pitch classes of the chord sounding longest in each bar."""
    out = []
    for bar in range(bars):
        a, z = grid.position(bars=bar), grid.position(bars=bar + 1)
        chords: dict[int, tuple[int, set[int]]] = {}
        for n in notes:
            overlap = min(z, n.start + n.length) - max(a, n.start)
            if overlap > 0:
                longest, pcs = chords.get(n.start, (0, set()))
                chords[n.start] = (max(longest, overlap), pcs | {n.pitch % 12})
        out.append(frozenset(max(chords.values(), key=lambda c: c[0])[1]) if chords else frozenset())
    return out


def score(stem: str, bpm: float, bars: int, seed: int, folder: Path) -> tuple[dict[str, float], float, float]:
    """The figures of one render, the seconds transcription took, and the audio's seconds."""
    audio, truth = midi.render_part(folder, stem, bpm, bars, seed, SR)
    grid = Grid(bpm, sample_rate=SR)
    start = time.perf_counter()
    part = transcribe(audio, SR, stem, grid)
    took = time.perf_counter() - start
    sec = 60.0 / bpm
    found = list(part.notes)
    if stem in ("bass", "lead"):
        true_notes = [(n.start * sec, n.pitch) for n in truth]
        est = [(n.start / SR, n.pitch) for n in found]
        figures = {
            "onset F": onset_f([t for t, _ in true_notes], [t for t, _ in est]),
            "note F": note_f(true_notes, est),
        }
    elif stem == "drums":
        figures = {
            f"{name} onset F": onset_f(
                [n.start * sec for n in truth if n.pitch == pitch],
                [n.start / SR for n in found if n.pitch == pitch],
            )
            for name, pitch in (("kick", 36), ("snare", 38), ("hat", 42))
        }
        figures["all onset F"] = onset_f(
            sorted({n.start * sec for n in truth}), sorted({n.start / SR for n in found})
        )
    else:
        true_chords = [frozenset(n.pitch % 12 for n in truth if int(n.start // 4) == b) for b in range(bars)]
        figures = {"chord/bar accuracy": chord_accuracy(true_chords, bar_chords(found, grid, bars))}
    return figures, took, audio.shape[-1] / SR


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bpm", type=float, nargs="+", default=[92.0, 120.0, 140.0])
    parser.add_argument("--seeds", type=int, default=3, help="renders per tempo (default 3)")
    parser.add_argument("--bars", type=int, default=8)
    args = parser.parse_args()
    midi.require_fluidsynth()
    print(f"machine: {machine()}")
    print(f"command: python bench/bench_transcribe.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"renders: {len(args.bpm)} tempi ({', '.join(f'{b:g}' for b in args.bpm)} bpm) x {args.seeds} seeds, "
        f"{args.bars} bars each, FluidR3_GM"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for stem in ("bass", "lead", "drums", "keys"):
            rows: dict[str, list[float]] = {}
            work = audio_s = 0.0
            for bpm in args.bpm:
                for seed in range(args.seeds):
                    figures, took, seconds = score(stem, bpm, args.bars, seed, Path(tmp))
                    for name, value in figures.items():
                        rows.setdefault(name, []).append(value)
                    work += took
                    audio_s += seconds
            text = ", ".join(f"{name} {np.mean(v):.3f} (min {np.min(v):.3f})" for name, v in rows.items())
            print(f"{stem:<6} {text}; real-time factor {work / audio_s:.3f}")


if __name__ == "__main__":
    main()
