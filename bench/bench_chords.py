"""Chord-per-bar accuracy of the context analysis on 7th-chord progressions played by sampled instruments.

Run from the repository root (needs fluidsynth and fluid-soundfont-gm):

    python -m bench.bench_chords

Each progression (one 7th chord per bar, root position) is rendered by fluidsynth with the GM soundfont in
five settings: piano with a fingered bass on the root, piano alone, piano and bass with drums, electric piano
with bass, nylon guitar alone. A bar is right when the analysis names the chord's triad (Am7 -> Am, G7 -> G,
Cmaj7 -> C). Two readings are compared, as ``bridge.engines.builtin.generate.analyse`` makes them:

- ``plain``: chroma of the whole mix, key and chords from it (what the analysis did before the bass line);
- ``bass``: the bass line tracked (:mod:`bridge.audio.bassline`), its overtones left out of the chroma, the
  key from that chroma, each bar's root weighted towards its bass.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio import analysis
from bridge.audio.bassline import bass_per_bar, track_bass
from bridge.audio.timing import Grid
from tests import midi

PROGRESSIONS = [
    ["Am7", "Dm7", "G7", "Cmaj7"],
    ["Dm7", "G7", "Cmaj7", "Am7"],
    ["Em7", "A7", "Dmaj7", "Bm7"],
    ["Fmaj7", "Em7", "Dm7", "Cmaj7"],
    ["Cm7", "F7", "Bbmaj7", "Gm7"],
    ["Bm7", "E7", "Amaj7", "F#m7"],
]
SETTINGS: dict[str, dict[str, Any]] = {
    "piano + bass": {"bass": True},
    "piano alone": {"bass": False},
    "piano + bass + drums": {"bass": True, "drums": True},
    "e-piano + bass": {"bass": True, "program": 4},
    "guitar alone": {"bass": False, "program": 24},
}


def triad_name(symbol: str) -> str:
    root, intervals = midi.seventh_chord(symbol)
    return analysis.PITCH_NAMES[root] + ("m" if intervals[1] == 3 else "")


def read_chords(audio: np.ndarray, sample_rate: int, grid: Grid, bars: int, with_bass: bool) -> list[str]:
    if not with_bass:
        bar_chroma = analysis.chroma_per_bar(audio, sample_rate, grid, bars)
        key = analysis.estimate_key(bar_chroma)
        return [c.name for c in analysis.chords_from_chroma(bar_chroma, key, bars)]
    line = track_bass(audio, sample_rate)
    bar_chroma = analysis.chroma_per_bar(audio, sample_rate, grid, bars, bass=line)
    key = analysis.estimate_key(bar_chroma)
    bar_bass = bass_per_bar(line, audio.shape[1], grid, bars)
    return [c.name for c in analysis.chords_from_chroma(bar_chroma, key, bars, bar_bass)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bpm", type=float, default=100.0, help="tempo (default 100)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every progression's reading")
    args = parser.parse_args()
    sample_rate = 44100
    grid = Grid(args.bpm, sample_rate=sample_rate)
    right = {"plain": 0, "bass": 0}
    total = 0
    print(f"{'setting':22} {'plain':>7} {'bass':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for setting, options in SETTINGS.items():
            counts = {"plain": 0, "bass": 0}
            for symbols in PROGRESSIONS:
                song = midi.progression_song(symbols, **options)
                audio = midi.render_song(Path(folder), song, args.bpm, sample_rate)
                want = [triad_name(s) for s in symbols]
                for reading in counts:
                    got = read_chords(audio, sample_rate, grid, len(symbols), reading == "bass")
                    counts[reading] += sum(g == w for g, w in zip(got, want, strict=True))
                    if args.verbose:
                        print(f"  {setting}, {reading}: {' '.join(symbols)} -> {' '.join(got)}")
            bars = len(PROGRESSIONS) * 4
            total += bars
            for reading in counts:
                right[reading] += counts[reading]
            print(f"{setting:22} {counts['plain']:>3}/{bars:<3} {counts['bass']:>3}/{bars:<3}")
    print(
        f"{'all':22} {right['plain']:>3}/{total:<3} {right['bass']:>3}/{total:<3}  "
        f"({100 * right['plain'] / total:.1f} % -> {100 * right['bass'] / total:.1f} %)"
    )


if __name__ == "__main__":
    main()
