"""Turn a :class:`JobSpec` into a call of the file-level pipeline (the same functions the CLI calls).

The pipeline, and through it the engines, is imported on the first job, never when the daemon starts. The
daemon's runner also hands the pipeline the queue's publish hook (so the planned files are journaled before
they appear) and its separation cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import InvalidArgument
from bridge.jobs.spec import JobSpec, Outcome, PublishHook, Runner

if TYPE_CHECKING:
    from bridge.audio.writer import Staged
    from bridge.jobs.cache import ResultCache


def pipeline_runner(settings: Settings, cache: ResultCache | None = None) -> Runner:
    """A :data:`Runner` that runs jobs with ``settings``' engine and models folder, and ``cache`` for
    separations."""

    def run(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        return run_job(spec, settings, progress, on_publish, cache)

    return run


def run_job(
    spec: JobSpec,
    settings: Settings,
    progress: ProgressCallback,
    on_publish: PublishHook | None = None,
    cache: ResultCache | None = None,
) -> Outcome:
    """Run one validated job; raises what the pipeline raises (``Cancelled`` from ``progress`` or
    ``on_publish`` included)."""
    from bridge import pipeline
    from bridge.audio.timing import TimeSignature
    from bridge.engines.base import GenerateSpec

    def publishing(planned: list[Staged]) -> None:
        if on_publish is not None:
            on_publish([staged.to_dict() for staged in planned])

    o = spec.options
    options = pipeline.OutputOptions(
        out_dir=Path(o["out"]),
        fmt=o.get("format", "wav"),
        bit_depth=int(o.get("bit_depth", 24)),
        sample_rate=o.get("sample_rate"),
        position=o.get("position"),
    )
    engine: str = o.get("engine") or settings.engine
    model: str | None = o.get("model")
    models_dir = settings.models_dir
    if spec.kind == "separate":
        result = pipeline.separate_file(
            Path(o["path"]),
            options,
            stems=o.get("stems"),
            cache=cache,
            engine=engine,
            model=model,
            models_dir=models_dir,
            progress=progress,
            on_publish=publishing,
        )
    elif spec.kind == "generate":
        gen = GenerateSpec(
            stem=o["stem"],
            bpm=o["bpm"],
            bars=o["bars"],
            time_signature=TimeSignature.parse(o["time_signature"]),
            prompt=o.get("prompt", ""),
            seed=o.get("seed", 0),
            variations=o.get("variations", 1),
        )
        result = pipeline.generate_files(
            [Path(p) for p in o.get("context", [])],
            gen,
            options,
            engine=engine,
            model=model,
            models_dir=models_dir,
            match_loudness=bool(o.get("match_loudness", True)),
            progress=progress,
            on_publish=publishing,
        )
    elif spec.kind == "vary":
        result = pipeline.vary_file(
            Path(o["path"]),
            options,
            variations=o.get("variations", 3),
            strength=o.get("strength", 0.5),
            seed=o.get("seed", 0),
            bpm=o.get("bpm"),
            bars=o.get("bars"),
            time_signature=TimeSignature.parse(o.get("time_signature", "4/4")),
            engine=engine,
            model=model,
            models_dir=models_dir,
            progress=progress,
            on_publish=publishing,
        )
    else:
        raise InvalidArgument(f"unknown job kind {spec.kind!r}; expected separate, generate or vary")
    return Outcome([str(out.path) for out in result.outputs], result.to_dict())
