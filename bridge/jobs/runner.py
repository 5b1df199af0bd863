"""Turn a :class:`JobSpec` into a call of the file-level pipeline (the same functions the CLI calls).

The pipeline, and through it the engines, is imported on the first job, never when the daemon starts.
"""

from __future__ import annotations

from pathlib import Path

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import InvalidArgument
from bridge.jobs.spec import JobSpec, Outcome, Runner


def pipeline_runner(settings: Settings) -> Runner:
    """A :data:`Runner` that runs jobs with ``settings``' engine and models folder."""

    def run(spec: JobSpec, progress: ProgressCallback) -> Outcome:
        return run_job(spec, settings, progress)

    return run


def run_job(spec: JobSpec, settings: Settings, progress: ProgressCallback) -> Outcome:
    """Run one validated job; raises what the pipeline raises (``Cancelled`` from ``progress`` included)."""
    from bridge import pipeline
    from bridge.audio.timing import TimeSignature
    from bridge.engines.base import GenerateSpec

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
            engine=engine,
            model=model,
            models_dir=models_dir,
            progress=progress,
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
        )
    else:
        raise InvalidArgument(f"unknown job kind {spec.kind!r}; expected separate, generate or vary")
    return Outcome([str(out.path) for out in result.outputs], result.to_dict())
