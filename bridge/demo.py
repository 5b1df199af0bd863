"""`stembridge demo`: the main job end to end on a song the built-in engine makes itself.

1. Compose an 8-bar song (drums, bass, keys, lead) with the built-in generator, each part conditioned on the parts
   before it, and write the mix.
2. Separate the mix into drums, bass, vocals and other.
3. Generate a new bass for the song without its bass (drums + vocals + other as context).
4. Make three variations of the new bass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.audio.post import finish
from bridge.audio.timing import TimeSignature
from bridge.audio.writer import write_audio_unique
from bridge.engines.base import GenerateSpec, Progress, ProgressCallback, load_engine
from bridge.pipeline import Output, OutputOptions, generate_files, separate_file, vary_file

DEMO_BPM = 120.0
DEMO_BARS = 8
DEMO_SAMPLE_RATE = 44100
# Relative levels of the composed parts in the demo mix, in dB.
DEMO_PARTS = (("drums", -1.0), ("bass", -1.0), ("keys", -1.0), ("lead", -1.0))


@dataclass
class DemoResult:
    folder: Path
    song: Path
    stems: list[Output] = field(default_factory=list)
    bass: Output | None = None
    variations: list[Output] = field(default_factory=list)


def compose_song(seed: int = 0, progress: ProgressCallback | None = None) -> np.ndarray:
    """An 8-bar, 120 bpm song in A minor, ``[2, T]`` at 44.1 kHz; each part listens to the ones before it."""
    report = Progress(progress)
    engine = load_engine("builtin", "generate")
    sr = DEMO_SAMPLE_RATE
    n = GenerateSpec("drums", DEMO_BPM, DEMO_BARS).grid(sr).samples_for_bars(DEMO_BARS)
    mix = np.zeros((2, n), dtype=np.float32)
    for i, (stem, gain_db) in enumerate(DEMO_PARTS):
        spec = GenerateSpec(
            stem, DEMO_BPM, DEMO_BARS, TimeSignature(4, 4), prompt="in A minor", seed=seed + i
        )
        context = mix if i else None
        part = engine.generate(context, sr, spec, report.sub(i / len(DEMO_PARTS), (i + 1) / len(DEMO_PARTS)))[
            0
        ]
        mix += part * np.float32(10 ** (gain_db / 20))
    return finish(mix, sr, n, ceiling_db=-1.0)


def run_demo(out_dir: Path, seed: int = 0, progress: ProgressCallback | None = None) -> DemoResult:
    """Run the whole demo and write everything into ``out_dir/stembridge-demo`` (new files only)."""
    report = Progress(progress)
    folder = out_dir / "stembridge-demo"
    options = OutputOptions(folder)
    song = compose_song(seed, report.sub(0.0, 0.25))
    song_path = write_audio_unique(
        folder / "demo-song.wav",
        song,
        DEMO_SAMPLE_RATE,
        description="stembridge demo song",
    )
    result = DemoResult(folder, song_path)
    separated = separate_file(song_path, options, engine="builtin", progress=report.sub(0.25, 0.5))
    result.stems = separated.outputs
    context = [o.path for o in separated.outputs if o.stem != "bass"]
    spec = GenerateSpec("bass", DEMO_BPM, DEMO_BARS, TimeSignature(4, 4), seed=seed + 100)
    generated = generate_files(context, spec, options, engine="builtin", progress=report.sub(0.5, 0.75))
    result.bass = generated.outputs[0]
    varied = vary_file(
        result.bass.path,
        options,
        variations=3,
        strength=0.5,
        seed=seed,
        bpm=DEMO_BPM,
        bars=DEMO_BARS,
        engine="builtin",
        progress=report.sub(0.75, 1.0),
    )
    result.variations = varied.outputs
    return result
