"""The engine interface, the progress/cancel callback and the registry of engines by import string.

Audio is always ``float32`` shaped ``[C, T]`` (channels x samples) at the sample rate passed beside it.
Engines never touch files, sockets or the console: the pipeline reads and writes around them.

Progress and cancel travel through one callback, ``callback(fraction, stage)``, which every engine calls
between chunks of work. A caller cancels by raising :class:`bridge.errors.Cancelled` from the callback; the
engine lets it propagate, so a cancelled job stops at its next chunk.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bridge.audio.timing import Grid, TimeSignature, check_bars, check_bpm
from bridge.errors import (
    EngineUnavailable,
    InvalidArgument,
    ModelNotFound,
    UnknownEngine,
    UnsupportedOperation,
)
from bridge.midi.notes import Part

ProgressCallback = Callable[[float, str], None]


def _ignore(fraction: float, stage: str) -> None:
    return None


class Progress:
    """Maps an engine's local progress onto a slice of the caller's 0..1 range.

    Example:
        >>> seen = []
        >>> p = Progress(lambda f, s: seen.append((round(f, 2), s)))
        >>> p.sub(0.5, 1.0)(0.5, "render")
        >>> seen
        [(0.75, 'render')]
    """

    def __init__(
        self, callback: ProgressCallback | None = None, start: float = 0.0, end: float = 1.0
    ) -> None:
        self._callback: ProgressCallback = callback or _ignore
        self._start = start
        self._end = end

    def __call__(self, fraction: float, stage: str) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        self._callback(self._start + (self._end - self._start) * fraction, stage)

    def sub(self, start: float, end: float) -> Progress:
        """A callback whose 0..1 covers ``start..end`` of this one."""
        return Progress(self, start, end)


GENERATE_STEMS = ("bass", "drums", "keys", "pad", "lead", "vocals", "guitar", "piano", "other")
SEPARATE_STEMS = ("drums", "bass", "vocals", "other", "guitar", "piano")


@dataclass(frozen=True)
class GenerateSpec:
    """What to generate: a stem that fits the context on a bar grid that starts at bar 1 of the context.

    Attributes:
        stem: the part to generate, e.g. ``"bass"``.
        bpm: tempo in quarter notes per minute.
        bars: length of the result in bars; results are exactly ``Grid.samples_for_bars(bars)`` long.
        time_signature: e.g. ``TimeSignature(4, 4)``.
        prompt: free text describing the part ("funky slap bass").
        seed: same seed, same samples.
        variations: how many different takes to return.
    """

    stem: str
    bpm: float
    bars: int
    time_signature: TimeSignature = field(default_factory=TimeSignature)
    prompt: str = ""
    seed: int = 0
    variations: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bpm", check_bpm(self.bpm))
        object.__setattr__(self, "bars", check_bars(self.bars))
        object.__setattr__(self, "stem", str(self.stem).strip().lower())
        if not 1 <= int(self.variations) <= 16:
            raise InvalidArgument(f"variations must be between 1 and 16, got {self.variations}")
        object.__setattr__(self, "variations", int(self.variations))
        object.__setattr__(self, "seed", int(self.seed))

    def grid(self, sample_rate: int) -> Grid:
        return Grid(self.bpm, self.time_signature, sample_rate)


@dataclass(frozen=True)
class BlockPlan:
    """How an engine can separate a long input one block at a time (:meth:`Engine.block_plan`).

    The pipeline hands the engine windows of the input: a core of ``block`` samples widened by ``context``
    samples of real audio on both sides (less at the ends of the input), starting on multiples of ``align``,
    and keeps only each core of the stems. With enough context the cores equal what the whole signal gives.

    Attributes:
        block: samples in each core.
        context: samples of input each side of a core that the engine needs.
        align: windows start on multiples of this (an engine's frame hop or chunk stride).
        level: the engine needs the whole input's level (:class:`Level`) with every block.
    """

    block: int
    context: int
    align: int = 1
    level: bool = False


@dataclass(frozen=True)
class Level:
    """Mean and standard deviation of the whole input's mono mix (for engines that normalise by them)."""

    mean: float
    std: float


class Engine:
    """Base class of every engine.

    Subclasses set ``name``, the capabilities they implement, and the stems they know. ``sample_rate`` is the
    rate the engine works at (``None``: any rate; the pipeline resamples around engines that need one rate).
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    separate_stems: ClassVar[tuple[str, ...]] = ()
    generate_stems: ClassVar[tuple[str, ...]] = ()
    sample_rate: int | None = None
    # The model used when none is named; "auto" checks its weights (model_status) before choosing the engine.
    default_model: ClassVar[str] = ""
    # Whether the engine runs on torch (the ``threads`` setting then applies to it).
    uses_torch: ClassVar[bool] = False
    # Constructor options that only change how a job runs, not what is loaded: a warm engine takes them per job
    # (:meth:`set_run_options`) instead of being loaded again for each value.
    run_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: str | None = None, models_dir: Path | None = None, device: str | None = None):
        self.model = model
        self.models_dir = models_dir
        self.device = device
        #: Notes for the user about the last job ("not isolated: ..."); engines reset them per job.
        self.warnings: list[str] = []
        #: Notes from loading that hold for every job of this instance ("the builtin engine ignores shifts").
        self.load_notes: list[str] = []
        #: Bytes of the loaded weights: what keeping this instance in memory costs (0: nothing to speak of).
        self.model_bytes: int = 0

    def set_run_options(self, **options: Any) -> None:
        """Set :attr:`run_options` for the next jobs; ``None`` (or leaving one out) restores its default."""
        if options:
            raise InvalidArgument(
                f"the {self.name} engine takes no per-job options, got {', '.join(options)}"
            )

    def cache_settings(self) -> dict[str, Any]:
        """The options that change this engine's output, for keys of cached results (segment, shifts...)."""
        return {}

    @classmethod
    def pull(cls, model: str, models_dir: Path | None = None) -> Path:
        """Fetch ``model``'s weights into the engine's standard cache; return where they are.

        Raises:
            UnsupportedOperation: the engine has no weights to fetch.
        """
        raise UnsupportedOperation(f"the {cls.name} engine has no weights to fetch: it works without them")

    # Said after "cannot <capability> <stem>" when another engine could: {"generate": " (vocals need ...)"}.
    stem_hints: ClassVar[dict[str, str]] = {}

    def require_stems(self, capability: str, stems: Sequence[str]) -> None:
        """Raise :class:`UnsupportedOperation` naming any of ``stems`` this engine cannot ``capability``."""
        known = self.separate_stems if capability == "separate" else self.generate_stems
        unknown = [s for s in stems if s not in known]
        if unknown:
            raise UnsupportedOperation(
                f"the {self.name} engine cannot {capability} {', '.join(map(repr, unknown))}; "
                f"it knows {', '.join(known)}{self.stem_hints.get(capability, '')}"
            )

    @classmethod
    def model_status(cls, model: str, models_dir: Path | None) -> str | None:
        """Why ``model`` cannot run here (weights not found, and where they were looked for), or ``None``.

        Engines with weights override this; it must be cheap (file checks, no loading).
        """
        return None

    @property
    def model_name(self) -> str:
        """The model that produced results, as reported to the user."""
        return self.model or self.name

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        """Split ``audio`` ``[C, T]`` into ``{stem: [C, T]}`` for each of ``stems``."""
        raise UnsupportedOperation(f"engine {self.name!r} cannot separate; use --engine builtin")

    def block_plan(self, sample_rate: int) -> BlockPlan | None:
        """How :meth:`separate_block` may be fed a long input at ``sample_rate`` in blocks; ``None``: the engine
        needs the whole input at once (the pipeline then reads it whole)."""
        return None

    def separate_block(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
        level: Level | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate one window ``[C, n]`` of a longer input (see :class:`BlockPlan`); ``level`` is the whole
        input's when the plan asks for it. The default separates the window as if it were the whole input."""
        return self.separate(audio, sample_rate, stems, progress)

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        """Generate ``spec.variations`` takes of ``spec.stem`` that fit ``context`` ``[C, T]`` (or nothing).

        Returns a list of ``[2, N]`` arrays, ``N = spec.grid(sample_rate).samples_for_bars(spec.bars)``.
        """
        raise UnsupportedOperation(f"engine {self.name!r} cannot generate; use --engine builtin")

    def generate_parts(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[tuple[np.ndarray, Part | None]]:
        """:meth:`generate`, each take with the notes it plays where the engine decides notes before it plays
        them (the built-in engine), ``None`` where it does not (audio models: transcribe those)."""
        return [(take, None) for take in self.generate(context, sample_rate, spec, progress)]

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
        """Return ``n`` variations of ``audio`` ``[C, T]``, each the same shape; ``strength`` in 0..1."""
        raise UnsupportedOperation(f"engine {self.name!r} cannot make variations; use --engine builtin")


# Engines by name, as import strings, so nothing heavy is imported until an engine is used.
ENGINES: dict[str, str] = {
    "builtin": "bridge.engines.builtin:BuiltinEngine",
    "demucs": "bridge.engines.demucs_engine:DemucsEngine",
    "musicgen": "bridge.engines.musicgen.engine:MusicgenEngine",
    "audiocraft": "bridge.engines.musicgen.audiocraft_engine:AudiocraftEngine",
}


def model_is_path(text: str) -> bool:
    """Whether a ``--model`` value is a path (it has a separator, starts with ``~`` or a drive letter) rather
    than a name, which is only ever looked up in the models folder and the engines' caches, never in the
    current folder: a daemon's request can then never make it load a file that happens to lie there."""
    t = str(text).strip()
    return "/" in t or "\\" in t or t.startswith("~") or (len(t) > 1 and t[1] == ":")


# How to get an engine that does not import.
INSTALL_HINTS: dict[str, str] = {
    "models": "install it with: pip install 'stembridge[models]'",
    "audiocraft": "it needs audiocraft in an environment of its own (Python 3.10, torch 2.1): pip install "
    "'stembridge[audiocraft]' there; the musicgen engine runs the same models without it",
}

# What "auto" picks, best first, per capability; the first that is available wins.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "separate": ("demucs", "builtin"),
    "generate": ("musicgen", "audiocraft", "builtin"),
    "vary": ("musicgen", "audiocraft", "builtin"),
}


def engine_names() -> list[str]:
    return sorted(ENGINES)


def _import(import_string: str) -> type[Engine]:
    module_name, _, attr = import_string.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(f"cannot import {module_name} ({exc})") from exc
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"{import_string} is not an Engine subclass")
    return cls


def engine_class(name: str) -> type[Engine]:
    """Import and return the engine class registered as ``name``."""
    key = str(name).strip().lower()
    if key not in ENGINES:
        raise UnknownEngine(f"unknown engine {name!r}; choose one of: auto, {', '.join(engine_names())}")
    try:
        return _import(ENGINES[key])
    except EngineUnavailable as exc:
        hint = INSTALL_HINTS.get(key, INSTALL_HINTS["models"])
        if "stembridge[" in str(exc):  # the engine module's own message already says how
            hint = ""
        raise EngineUnavailable(
            f"engine {key!r} is not available: {exc}" + (f"; {hint}" if hint else "")
        ) from exc


def resolve_engine_name(
    name: str,
    capability: str,
    model: str | None = None,
    models_dir: Path | None = None,
    allow_download: bool = False,
) -> str:
    """Turn ``"auto"`` into the best available engine for ``capability``; check other names exist.

    An engine is available for "auto" when it imports and the weights of ``model`` (or of its
    ``default_model``) are on this machine (:meth:`Engine.model_status`), or may be downloaded
    (``allow_download``, for a published model); otherwise the next one is tried. A model the user named that
    no engine can run is an error, not a silent fallback to the built-in engine.

    Raises:
        InvalidArgument: ``model`` is a catalogue model for another task (a separation model to generate).
        ModelNotFound: ``model`` was named and no engine for ``capability`` has its weights (the message says
            where the first engine looked and how to fetch it), or it is no model stembridge knows.
        EngineUnavailable: ``model`` was named and no engine that could run it is installed.
    """
    key = str(name or "auto").strip().lower()
    if key != "auto":
        engine_class(key)
        return key
    named = bool(model) and str(model).strip().lower() != "builtin"
    known = _catalogued(str(model)) if named else None
    if known is not None and capability not in known.tasks:
        raise InvalidArgument(
            f"{model!r} is a {known.engine} model for {'/'.join(known.tasks)}, not for {capability}; "
            f"pick one of: {', '.join(_catalogue_names(capability))}"
        )
    first_reason = ""
    for candidate in AUTO_ORDER.get(capability, ()):
        try:
            cls = engine_class(candidate)
        except EngineUnavailable:
            continue
        if capability not in cls.capabilities:
            continue
        if named and not cls.default_model:  # an engine without weights cannot run a named model
            break
        reason = cls.model_status(model or cls.default_model, models_dir)
        if reason is None or (allow_download and (not named or known is not None)):
            return candidate
        first_reason = first_reason or reason
    if not named:
        raise EngineUnavailable(f"no engine can {capability} on this machine")
    if known is None and not model_is_path(str(model)):
        where = f" nor a folder in {models_dir}" if models_dir is not None else ""
        raise ModelNotFound(
            f"no model {model!r} here: it is not one of stembridge's models "
            f"({', '.join(_catalogue_names(capability))}){where}; see `stembridge models`"
        )
    if first_reason:
        raise ModelNotFound(first_reason)
    raise EngineUnavailable(
        f"no installed engine can {capability} with the model {model!r}; "
        "install them with: pip install 'stembridge[models]'"
    )


def _catalogued(model: str) -> Any:
    """The catalogue entry named ``model``, or ``None`` (paths and folder names are not in it)."""
    from bridge.catalog import load_catalog

    return next((e for e in load_catalog() if e.name == model.strip()), None)


def _catalogue_names(capability: str) -> list[str]:
    from bridge.catalog import load_catalog

    return [e.name for e in load_catalog() if capability in e.tasks and e.engine != "builtin"]


# Options any engine may be given and silently not use; any other unused option is reported in ``load_notes``.
_COMMON_OPTIONS = frozenset({"model", "models_dir", "device", "allow_download", "threads"})


def _accepted_options(cls: type[Engine]) -> set[str] | None:
    """Names ``cls``'s constructor takes (``None``: any, it has ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self"}


def set_threads(threads: int | None) -> None:
    """Let torch use ``threads`` CPU threads (0 or ``None``: leave torch's default)."""
    if threads:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))


def load_engine(name: str, capability: str, **options: Any) -> Engine:
    """Create the engine ``name`` (or the best for ``capability`` when ``"auto"``) with ``options``.

    Options set to ``None`` are left to the engine's defaults; options the chosen engine does not take (say
    ``shifts`` when "auto" fell back to the built-in engine) are dropped and named in its ``load_notes``.
    ``threads`` applies to torch engines (:func:`set_threads`).
    """
    given = {k: v for k, v in options.items() if v is not None}
    resolved = resolve_engine_name(
        name, capability, given.get("model"), given.get("models_dir"), bool(given.get("allow_download"))
    )
    cls = engine_class(resolved)
    if capability not in cls.capabilities:
        able = [n for n in engine_names() if capability in _capabilities_or_empty(n)]
        raise UnsupportedOperation(
            f"engine {resolved!r} cannot {capability}; use one of: {', '.join(able) or 'none installed'}"
        )
    threads = given.pop("threads", None)
    accepted = _accepted_options(cls)
    ignored = sorted(
        k for k in given if accepted is not None and k not in accepted and k not in _COMMON_OPTIONS
    )
    notes = [f"the {resolved} engine does not use {', '.join(ignored)}; ignored"] if ignored else []
    model = str(given.get("model") or "")
    if model and not cls.default_model and model.strip().lower() != resolved:
        notes.append(f"the {resolved} engine has no models; --model {model} ignored")
        given.pop("model")
    if cls.uses_torch:
        set_threads(threads)
    engine = cls(**{k: v for k, v in given.items() if accepted is None or k in accepted})
    engine.load_notes = notes
    return engine


def _capabilities_or_empty(name: str) -> frozenset[str]:
    try:
        return engine_class(name).capabilities
    except EngineUnavailable:
        return frozenset()


def available_engines() -> dict[str, str | None]:
    """``{name: None}`` for engines that import here, ``{name: reason}`` for those that do not."""
    status: dict[str, str | None] = {}
    for name in engine_names():
        try:
            engine_class(name)
            status[name] = None
        except EngineUnavailable as exc:
            status[name] = str(exc)
    return status
