"""Turn a :class:`JobSpec` into a call of the file-level pipeline (the same functions the CLI calls).

The pipeline, and through it the engines, is imported on the first job, never when the daemon starts. The
daemon's runner also hands the pipeline the queue's publish hook (so the planned files are journaled before
they appear) and its separation cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.audio.folder import HeldFolder
from bridge.audio.section import Section
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import InvalidArgument
from bridge.jobs import outdir
from bridge.jobs.spec import JobSpec, Outcome, PublishHook, Runner
from bridge.jobs.warm import WarmEngines, memory_budget

if TYPE_CHECKING:
    from bridge.audio.writer import Staged
    from bridge.engines.base import Engine, GenerateSpec
    from bridge.jobs.cache import ResultCache


# Job options that go to the engine itself (demucs's chunking), not to the pipeline.
ENGINE_OPTIONS = ("segment", "overlap", "shifts", "precision")


class PipelineRunner:
    """The daemon's :data:`Runner`: runs jobs with ``settings``' engine and models folder, ``cache`` for
    separations, and keeps loaded models warm between jobs in :attr:`engines` (bounded by
    ``settings.model_memory_mb``)."""

    def __init__(self, settings: Settings, cache: ResultCache | None = None) -> None:
        self.settings = settings
        self.cache = cache
        self.engines = WarmEngines(memory_budget(settings))

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        return run_job(spec, self.settings, progress, on_publish, self.cache, self.engines)


def pipeline_runner(settings: Settings, cache: ResultCache | None = None) -> Runner:
    """A :class:`PipelineRunner`."""
    return PipelineRunner(settings, cache)


def run_job(
    spec: JobSpec,
    settings: Settings,
    progress: ProgressCallback,
    on_publish: PublishHook | None = None,
    cache: ResultCache | None = None,
    engines: WarmEngines | None = None,
) -> Outcome:
    """Run one validated job; raises what the pipeline raises (``Cancelled`` from ``progress`` or
    ``on_publish`` included). With ``engines``, the engine comes from (and stays in) that cache.

    Its output folder is made first, and checked once more to lie inside the folders jobs may write to
    (:func:`bridge.jobs.outdir.prepare`: a link may have appeared since the request was checked). It is held
    open while the job runs, and the job writes every file through that handle (:mod:`bridge.audio.folder`),
    so a link swapped into its path meanwhile cannot send the files elsewhere; a folder moved or replaced
    meanwhile fails the job (:class:`~bridge.errors.AudioWriteError` naming it) and its temp files go. A folder
    made for a job that fails is removed again when it is empty.
    """
    folder, made = outdir.prepare(Path(spec.options["out"]), outdir.job_roots(settings))
    try:
        with folder:
            return _run(spec, folder, settings, progress, on_publish, cache, engines)
    except BaseException:
        outdir.remove_empty(made)
        raise


def _run(
    spec: JobSpec,
    folder: HeldFolder,
    settings: Settings,
    progress: ProgressCallback,
    on_publish: PublishHook | None,
    cache: ResultCache | None,
    engines: WarmEngines | None,
) -> Outcome:
    from bridge import pipeline
    from bridge.audio.timing import TimeSignature

    def publishing(planned: list[Staged]) -> None:
        if on_publish is not None:
            on_publish([staged.to_dict() for staged in planned])

    o = spec.options
    options = pipeline.OutputOptions(
        out_dir=folder.path,
        folder=folder,
        fmt=o.get("format", "wav"),
        bit_depth=int(o.get("bit_depth", 24)),
        sample_rate=o.get("sample_rate"),
        position=o.get("position"),
    )
    model: str | None = o.get("model")
    models_dir = settings.models_dir
    engine_options = {
        **settings.engine_options(),
        **{k: o[k] for k in ENGINE_OPTIONS if o.get(k) is not None},
    }
    capability = spec.kind if spec.kind in ("separate", "generate", "vary") else ""
    engine: str | Engine = o.get("engine") or settings.engine
    if engines is not None and capability:
        engine = engines.get(str(engine), capability, model, models_dir, engine_options)
    if capability:
        _check_memory(spec, engine, options)
    if spec.kind == "separate":
        result = pipeline.separate_file(
            Path(o["path"]),
            options,
            stems=o.get("stems"),
            section=_section(o),
            midi=bool(o.get("midi", False)),
            cache=cache,
            engine=engine,
            model=model,
            models_dir=models_dir,
            engine_options=engine_options,
            progress=progress,
            on_publish=publishing,
        )
    elif spec.kind == "generate":
        gen = _generate_spec(o)
        result = pipeline.generate_files(
            [Path(p) for p in o.get("context", [])],
            gen,
            options,
            engine=engine,
            model=model,
            models_dir=models_dir,
            engine_options=engine_options,
            match_loudness=bool(o.get("match_loudness", True)),
            context_starts=o.get("context_start"),
            midi=bool(o.get("midi", False)),
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
            section=_section(o),
            midi=bool(o.get("midi", False)),
            engine=engine,
            model=model,
            models_dir=models_dir,
            engine_options=engine_options,
            progress=progress,
            on_publish=publishing,
        )
    else:
        raise InvalidArgument(f"unknown job kind {spec.kind!r}; expected separate, generate or vary")
    return Outcome(result.paths, result.to_dict())


def _generate_spec(o: dict[str, Any]) -> GenerateSpec:
    """The :class:`GenerateSpec` a generate job's options describe."""
    from bridge.audio.timing import TimeSignature
    from bridge.engines.base import GenerateSpec

    return GenerateSpec(
        stem=o["stem"],
        bpm=o["bpm"],
        bars=o["bars"],
        time_signature=TimeSignature.parse(o["time_signature"]),
        prompt=o.get("prompt", ""),
        seed=o.get("seed", 0),
        variations=o.get("variations", 1),
    )


def _check_memory(spec: JobSpec, engine: str | Engine, options: Any) -> None:
    """Refuse a job whose estimated peak memory is more than the system has available.

    Raises:
        OutOfMemory: naming the job, what it needs and what is available.
    """
    from bridge import memory, pipeline
    from bridge.engines.base import SEPARATE_STEMS

    o = spec.options
    if spec.kind == "separate":
        eng = None if isinstance(engine, str) else engine
        stems = len(o.get("stems") or (eng.separate_stems if eng is not None else SEPARATE_STEMS[:4]))
        needed = pipeline.separation_memory(
            eng, Path(o["path"]), stems, options, _section(o), midi=bool(o.get("midi"))
        )
        what = f"separate {Path(o['path']).name}"
    elif spec.kind == "generate":
        gen = _generate_spec(o)
        paths = [Path(p) for p in o.get("context", [])]
        needed = pipeline.generation_memory(paths, gen, o.get("context_start"))
        what = f"generate {gen.stem}"
    else:
        needed = pipeline.variation_memory(Path(o["path"]), o.get("variations", 3), _section(o))
        what = f"vary {Path(o['path']).name}"
    memory.check_available(needed, what)


def _section(options: dict[str, Any]) -> Section | None:
    if options.get("start") is None and options.get("length") is None:
        return None
    return Section(float(options.get("start") or 0.0), options.get("length"))
