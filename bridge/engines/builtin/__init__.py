"""The built-in engine: numpy/scipy/pedalboard DSP, no weights, no network, fast on one core.

Each capability lives in its own module (``separate``, ``generate``, ``vary``); this class only routes to
them, importing each when first used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bridge.audio.timing import Grid
from bridge.engines.base import BlockPlan, Engine, GenerateSpec, ProgressCallback
from bridge.midi.notes import Part

BUILTIN_SEPARATE_STEMS = ("drums", "bass", "vocals", "other")
BUILTIN_GENERATE_STEMS = ("bass", "drums", "keys", "pad", "lead")
# A long input is separated in blocks of this many seconds (plus ~1.2 s of context each side): a block holds
# about ten copies of itself at its peak (~40 MB each for stereo at 44.1 kHz).
SEPARATE_BLOCK_SECONDS = 120.0


class BuiltinEngine(Engine):
    """Algorithmic separation, conditional generation and variation."""

    name = "builtin"
    capabilities = frozenset({"separate", "generate", "vary"})
    separate_stems = BUILTIN_SEPARATE_STEMS
    generate_stems = BUILTIN_GENERATE_STEMS
    sample_rate = None
    stem_hints = {
        "separate": " (guitar and piano need the demucs engine with --model htdemucs_6s: pip install "
        "'stembridge[models]', then stembridge models pull htdemucs_6s)",
        "generate": " (vocals, guitar, piano and other need the musicgen engine: pip install "
        "'stembridge[models]', then stembridge models pull musicgen-small)",
    }

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        from bridge.engines.builtin import separate

        return separate.separate(audio, sample_rate, stems, progress)

    def block_plan(self, sample_rate: int) -> BlockPlan | None:
        from bridge.engines.builtin import separate

        context, hop = separate.block_context(sample_rate)
        return BlockPlan(int(SEPARATE_BLOCK_SECONDS * sample_rate), context, align=hop)

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        return [audio for audio, _ in self.generate_parts(context, sample_rate, spec, progress)]

    def generate_parts(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[tuple[np.ndarray, Part | None]]:
        from bridge.engines.builtin import generate

        return list(generate.generate_parts(context, sample_rate, spec, progress))

    def vary(
        self,
        audio: np.ndarray,
        sample_rate: int,
        n: int,
        strength: float,
        seed: int,
        grid: Grid | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        from bridge.engines.builtin import vary

        return vary.vary(audio, sample_rate, n, strength, seed, grid, progress)
