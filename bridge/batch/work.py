"""One item in a worker: its engine kept warm, its files handed back as bytes.

A :class:`Worker` lives as long as its process (a local pool's process, a Ray actor) and keeps the engines it
loaded (:class:`bridge.jobs.warm.WarmEngines`), so a batch of a thousand songs loads the model once per worker.
It runs the same pipeline functions as the single commands, into a scratch folder of its own, and returns the
files' bytes: only the driver writes into the output folder. Every failure comes back as an :class:`Outcome`
with a one-line error, never as an exception, so one bad file never stops a worker.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.batch.items import Item
from bridge.errors import StembridgeError
from bridge.memory import message as memory_message

if TYPE_CHECKING:
    from bridge.engines.base import ProgressCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """How every worker of a batch loads engines.

    Attributes:
        models_dir: the folder of local checkpoints.
        engine_options: ``device``, ``threads``, ``allow_download`` (the settings' :meth:`engine_options`).
        memory_budget: bytes of model weights a worker keeps warm.
    """

    models_dir: Path | None = None
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    memory_budget: int = 4 << 30


@dataclass(frozen=True)
class Work:
    """An item sent to a worker.

    Attributes:
        index: the item's place in the batch.
        engine: the engine name resolved by the driver (never ``auto``: every worker runs the same one).
        data: the inputs' bytes, in order, for a worker that cannot read the driver's paths (a cluster without
            a shared file system); ``None``: it reads :attr:`Item.inputs`.
    """

    index: int
    item: Item
    engine: str
    data: tuple[bytes, ...] | None = None


@dataclass(frozen=True)
class File:
    """One output file: its stem, its name, its bytes; a ``.mid`` names the audio file it belongs to."""

    stem: str
    name: str
    data: bytes
    companion_of: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a worker made of :class:`Work` ``index``: its files, or a one-line error (and its
    :class:`bridge.errors.StembridgeError` code).

    Attributes:
        detail: the pipeline's description of the result (:meth:`bridge.pipeline.Result.to_dict`: engine, model,
            warnings...; its outputs' paths are the worker's scratch files, in the order of :attr:`files`).
    """

    index: int
    files: tuple[File, ...] = ()
    error: str | None = None
    code: str = "error"
    detail: Mapping[str, Any] = field(default_factory=dict)


class Worker:
    """Runs items one after the other; engines stay loaded between them."""

    def __init__(self, config: WorkerConfig) -> None:
        from bridge.jobs.warm import WarmEngines

        self.config = config
        self.engines = WarmEngines(config.memory_budget)

    def run(self, work: Work, progress: ProgressCallback | None = None) -> Outcome:
        """Run ``work``; ``progress`` gets the pipeline's ``(fraction, stage)`` calls."""
        code = "error"
        with tempfile.TemporaryDirectory(prefix="stembridge-batch-") as folder:
            scratch = Path(folder)
            try:
                files, detail = self._run(work, scratch, progress)
                return Outcome(work.index, files, detail=detail)
            except StembridgeError as exc:
                error, code = exc.message, exc.code
            except MemoryError:
                error = memory_message(f"{work.item.task} {work.item.label}")
            except Exception as exc:  # one bad file must not stop the batch: report it and go on
                log.exception("item %s failed", work.item.label)
                error = f"{type(exc).__name__}: {exc}"
            return Outcome(work.index, error=_as_given(error, work, scratch), code=code)

    def _run(
        self, work: Work, scratch: Path, progress: ProgressCallback | None
    ) -> tuple[tuple[File, ...], dict[str, Any]]:
        from bridge.pipeline import OutputOptions

        item = work.item
        opts = item.options
        inputs = _inputs(item.inputs, work.data, scratch / "in")
        engine = self.engines.get(
            work.engine,
            item.task,
            opts.get("model"),
            self.config.models_dir,
            {**self.config.engine_options, **opts.get("engine_options", {})},
        )
        out = OutputOptions(
            out_dir=scratch / "out",
            fmt=opts.get("format", "wav"),
            bit_depth=opts.get("bit_depth", 24),
            sample_rate=opts.get("samplerate"),
            position=opts.get("position"),
        )
        (scratch / "out").mkdir()
        result = _TASKS[item.task](inputs, opts, out, engine, progress)
        audio = [File(o.stem, o.path.name, o.path.read_bytes()) for o in result.outputs]
        midi = [
            File(o.stem, o.midi.name, o.midi.read_bytes(), companion_of=i)
            for i, o in enumerate(result.outputs)
            if o.midi is not None and o.midi != o.path
        ]
        return (*audio, *midi), result.to_dict()


def _as_given(error: str, work: Work, scratch: Path) -> str:
    """``error`` on one line, naming the inputs by their paths on the driver, not by their copies here."""
    if work.data is not None:
        for copy, path in zip(_copies(work.item.inputs, scratch / "in"), work.item.inputs, strict=True):
            error = error.replace(str(copy), str(path))
    return " ".join(error.split())


def _copies(paths: Sequence[Path], folder: Path) -> list[Path]:
    return [folder / str(i) / path.name for i, path in enumerate(paths)]


def _inputs(paths: Sequence[Path], data: Sequence[bytes] | None, folder: Path) -> list[Path]:
    """The paths to read: the item's own, or copies of the bytes sent under the same names (which name the
    outputs), each in a folder of its own (context files may share a name)."""
    if data is None:
        return list(paths)
    copies = _copies(paths, folder)
    for copy, content in zip(copies, data, strict=True):
        copy.parent.mkdir(parents=True)
        copy.write_bytes(content)
    return copies


def _section(opts: Mapping[str, Any]) -> Any:
    from bridge.audio.section import Section

    if opts.get("start") is None and opts.get("length") is None:
        return None
    return Section(opts.get("start") or 0.0, opts.get("length"))


def _separate(inputs: list[Path], opts: Mapping[str, Any], out: Any, engine: Any, progress: Any) -> Any:
    from bridge.pipeline import separate_file

    return separate_file(
        inputs[0],
        out,
        stems=opts.get("stems"),
        engine=engine,
        section=_section(opts),
        midi=opts.get("midi", False),
        progress=progress,
    )


def _generate(inputs: list[Path], opts: Mapping[str, Any], out: Any, engine: Any, progress: Any) -> Any:
    from bridge.audio.timing import TimeSignature
    from bridge.engines.base import GenerateSpec
    from bridge.pipeline import generate_files

    spec = GenerateSpec(
        stem=opts["stem"],
        bpm=opts["bpm"],
        bars=opts["bars"],
        time_signature=TimeSignature.parse(opts.get("time_signature", "4/4")),
        prompt=opts.get("prompt", ""),
        seed=opts.get("seed", 0),
        variations=opts.get("variations", 1),
    )
    return generate_files(
        inputs,
        spec,
        out,
        engine=engine,
        match_loudness=opts.get("loudness_match", True),
        context_starts=opts.get("context_start"),
        midi=opts.get("midi", False),
        progress=progress,
    )


def _vary(inputs: list[Path], opts: Mapping[str, Any], out: Any, engine: Any, progress: Any) -> Any:
    from bridge.audio.timing import TimeSignature
    from bridge.pipeline import vary_file

    return vary_file(
        inputs[0],
        out,
        variations=opts.get("variations", 3),
        strength=opts.get("strength", 0.5),
        seed=opts.get("seed", 0),
        bpm=opts.get("bpm"),
        bars=opts.get("bars"),
        time_signature=TimeSignature.parse(opts.get("time_signature", "4/4")),
        engine=engine,
        section=_section(opts),
        midi=opts.get("midi", False),
        stem=opts.get("stem"),
        progress=progress,
    )


_TASKS = {"separate": _separate, "generate": _generate, "vary": _vary}
