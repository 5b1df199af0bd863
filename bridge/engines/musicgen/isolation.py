"""The target stem out of MusicGen's output, with the demucs engine when it is there.

MusicGen continues the whole context mix, so what it makes is a mix in which the asked-for part plays. When
the target is something demucs separates, the take is run through demucs and only that source is kept:
drums, bass, vocals, other with ``htdemucs``; guitar and piano with ``htdemucs_6s``; keys, pad and lead are
demucs's ``other`` (what is not drums, bass or vocals).

Demucs is optional at run time: when the engine is not installed or its weights are missing, the takes are
returned as generated, with a warning saying so (the job does not fail).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.io import resample
from bridge.engines.base import Engine, Progress, ProgressCallback, engine_class
from bridge.errors import Cancelled, StembridgeError

log = logging.getLogger(__name__)

# target stem -> (demucs model, demucs source)
SOURCES = {
    "drums": ("htdemucs", "drums"),
    "bass": ("htdemucs", "bass"),
    "vocals": ("htdemucs", "vocals"),
    "other": ("htdemucs", "other"),
    "keys": ("htdemucs", "other"),
    "pad": ("htdemucs", "other"),
    "lead": ("htdemucs", "other"),
    "guitar": ("htdemucs_6s", "guitar"),
    "piano": ("htdemucs_6s", "piano"),
}


class Isolator:
    """Keeps one demucs engine per demucs model warm between jobs."""

    def __init__(self, models_dir: Path | None, device: str | None) -> None:
        self.models_dir = models_dir
        self.device = device
        self._engines: dict[str, Engine] = {}

    def _engine(self, model: str) -> Engine:
        if model not in self._engines:
            cls = engine_class("demucs")
            reason = cls.model_status(model, self.models_dir)
            if reason is not None:
                raise _Skip(reason)
            options: dict[str, Any] = {"model": model, "models_dir": self.models_dir, "device": self.device}
            self._engines[model] = cls(**options)
        return self._engines[model]

    def isolate(
        self,
        takes: list[np.ndarray],
        sample_rate: int,
        stem: str,
        progress: ProgressCallback | None = None,
    ) -> tuple[list[np.ndarray], str | None]:
        """Each take ``[C, T]`` reduced to ``stem``; returns the takes and a warning when they were left as is.

        Cancelled (raised by ``progress``) propagates; every other failure to isolate becomes the warning.
        """
        report = Progress(progress)
        if stem not in SOURCES:
            return takes, None
        model, source = SOURCES[stem]
        try:
            engine = self._engine(model)
            engine.require_stems("separate", [source])
        except Cancelled:
            raise
        except (_Skip, StembridgeError) as exc:
            log.warning("musicgen: %s not isolated: %s", stem, exc)
            return takes, (
                f"the generated {stem} was not isolated from the generated mix with demucs ({exc}); "
                f"it may hold other instruments"
            )
        rate = engine.sample_rate or sample_rate
        out = []
        for k, take in enumerate(takes):
            work = resample(take, sample_rate, rate) if rate != sample_rate else take
            part = engine.separate(work, rate, [source], report.sub(k / len(takes), (k + 1) / len(takes)))[
                source
            ]
            part = resample(part, rate, sample_rate) if rate != sample_rate else part
            fitted = np.zeros_like(take)
            n = min(take.shape[-1], part.shape[-1])
            fitted[:, :n] = part[: take.shape[0], :n]
            out.append(fitted)
        report(1.0, "isolate")
        return out, None


class _Skip(Exception):
    """Isolation is not possible here (demucs weights missing); the reason is the message."""
