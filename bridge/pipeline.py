"""File-level jobs: read inputs, run an engine on arrays, post-process, write outputs.

This is the one place where files meet engines. The CLI and the daemon both call these functions, so a job
behaves the same however it was asked for. A job either writes all its outputs or none: inputs and arguments
are checked before anything runs; every output is encoded into its temp file first, then their names are
reserved, ``on_publish`` is told the planned files (the daemon journals them, so that a job killed in the
middle of the next step can be undone on restart), and they are published in one quick pass; if publishing
one fails, the ones already published are removed (:class:`bridge.audio.writer.Publisher`).

:func:`separate_file` can take a :class:`bridge.jobs.cache.ResultCache`: a separation of the same audio with
the same engine, model and stems is then served from it without running the engine. The daemon passes its
cache; the CLI does not (a one-off command would only fill the disk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bridge import __version__, memory
from bridge.audio import io as audio_io
from bridge.audio.blocks import AudioSource
from bridge.audio.bwf import read_bext
from bridge.audio.folder import HeldFolder
from bridge.audio.headers import truncation
from bridge.audio.loudness import integrated_loudness
from bridge.audio.post import finish, fit_length, loudness_target
from bridge.audio.section import Section, cut
from bridge.audio.tempo import infer_grid
from bridge.audio.timing import Grid, TimeSignature
from bridge.audio.writer import Publisher, Staged
from bridge.engines.base import BlockPlan, Engine, GenerateSpec, Progress, ProgressCallback, load_engine
from bridge.errors import InvalidArgument, StembridgeError
from bridge.jobs.cache import ResultCache, file_digest, separation_key, unchanged
from bridge.midi.files import midi_of, part_stem
from bridge.midi.smf import encode as encode_midi
from bridge.naming import output_name, parse_tempo, safe_name, split_source
from bridge.streaming import separate_to_files

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 44100
FORMATS = {"wav": "wav", "aiff": "aif"}
# How far below the context's loudness each generated part sits, in LU: a part, not a second mix.
PART_OFFSET_LU = {
    "bass": 3.0,
    "drums": 2.0,
    "vocals": 3.0,
    "keys": 6.0,
    "piano": 6.0,
    "guitar": 5.0,
    "lead": 5.0,
    "other": 6.0,
    "pad": 8.0,
}
DEFAULT_PART_OFFSET_LU = 4.0
# The most audio one request may render (all its takes together): bounds memory and time. 20 minutes is
# 256 bars of 4/4 at 100 bpm, twice; or 8 bars at 120 bpm, 75 times.
MAX_RENDER_SECONDS = 20 * 60
# Separations of inputs longer than this (and longer than the engine's block) run block by block, straight into
# their files (:mod:`bridge.streaming`); shorter ones are read whole, which the result cache needs. A whole
# five minutes takes about 1 GB with the built-in engine.
STREAM_ABOVE_SECONDS = 5 * 60
_F32 = 4  # bytes per sample

# Told the planned files (final paths reserved, nothing visible yet) right before a job publishes them;
# raising stops the job, and nothing appears.
PublishHook = Callable[[list[Staged]], None]


@dataclass(frozen=True)
class OutputOptions:
    """Where and how results are written.

    Attributes:
        out_dir: the folder (created if missing).
        fmt: ``wav`` or ``aiff``.
        bit_depth: 16, 24 or 32 (32 = float).
        sample_rate: output rate; ``None`` keeps the input's.
        position: the timeline position of bar 1 in seconds, written as the BWF time reference (WAV only).
        folder: ``out_dir`` held open (a daemon job's, :func:`bridge.jobs.outdir.prepare`): every file is then
            written through that handle, so a link swapped into its path cannot redirect them
            (:mod:`bridge.audio.folder`); None (the CLI): by path, the folder made if missing.
    """

    out_dir: Path
    fmt: str = "wav"
    bit_depth: int = 24
    sample_rate: int | None = None
    position: float | None = None
    folder: HeldFolder | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.folder is not None and self.folder.path != self.out_dir:
            raise InvalidArgument(f"the held folder {self.folder.path} is not out_dir {self.out_dir}")
        if self.fmt not in FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.bit_depth not in (16, 24, 32):
            raise InvalidArgument(f"bit depth must be 16, 24 or 32 (float), got {self.bit_depth}")
        if self.sample_rate is not None:
            object.__setattr__(
                self, "sample_rate", audio_io.check_sample_rate(self.sample_rate, "output sample rate")
            )
        if self.position is not None and (not np.isfinite(self.position) or self.position < 0):
            raise InvalidArgument(f"position must be 0 or more seconds, got {self.position}")
        if self.position is not None and self.fmt != "wav":
            raise InvalidArgument(
                "a position is stored only in WAV files (the BWF time reference); use --format wav or drop --position"
            )


@dataclass
class Output:
    stem: str
    path: Path
    variation: int | None = None
    sample_rate: int = 0
    samples: int = 0
    channels: int = 0
    midi: Path | None = None  # the .mid beside it: its notes

    def to_dict(self) -> dict[str, Any]:
        """``stem``, ``path``, ``variation``, ... and ``midi`` (only when a .mid was written)."""
        d = asdict(self)
        d["path"] = str(self.path)
        if self.midi is None:
            del d["midi"]
        else:
            d["midi"] = str(self.midi)
        return d


@dataclass
class Result:
    """What a job produced and how.

    :attr:`paths` lists the audio files, then the ``.mid`` files (in the order of the audio they belong to):
    the daemon's ``done`` reply.
    """

    command: str
    engine: str
    model: str
    outputs: list[Output] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "engine": self.engine,
            "model": self.model,
            "outputs": [o.to_dict() for o in self.outputs],
            **self.info,
        }

    @property
    def paths(self) -> list[str]:
        audio = [str(o.path) for o in self.outputs]
        return audio + [str(o.midi) for o in self.outputs if o.midi is not None]


def _engine(
    engine: str | Engine,
    capability: str,
    model: str | None,
    models_dir: Path | None,
    engine_options: Mapping[str, Any] | None,
) -> Engine:
    """``engine`` itself when it is a loaded engine (the daemon's warm ones), else load it with the options
    (``device``, ``allow_download``, ``threads``, and engine ones such as ``shifts``)."""
    if isinstance(engine, Engine):
        return engine
    return load_engine(engine, capability, model=model, models_dir=models_dir, **dict(engine_options or {}))


def _notes(
    eng: Engine, info: dict[str, Any], job: bool = True, inputs: Sequence[Path] = ()
) -> dict[str, Any]:
    """``info`` with notes on the ``inputs`` (cut short: :func:`_cut_short`) and the engine's notes on its
    loading (and on this job) added to its ``warnings``."""
    notes = [*_cut_short(inputs), *eng.load_notes, *(eng.warnings if job else [])]
    if notes:
        info["warnings"] = [*info.get("warnings", []), *notes]
    return info


def _cut_short(paths: Sequence[Path]) -> list[str]:
    """A note for each input file holding less audio than its header says (it was read as far as it goes)."""
    notes = []
    for path in paths:
        try:
            problem = truncation(path)
        except (
            OSError,
            StembridgeError,
        ):  # read a moment ago; gone or swapped now: reading told what it held
            continue
        if problem:
            notes.append(
                f"{Path(path).name}: {problem}; used what it holds (export or copy it again for the rest)"
            )
    return notes


def _to_engine_rate(audio: np.ndarray, sample_rate: int, engine: Engine) -> tuple[np.ndarray, int]:
    if engine.sample_rate and engine.sample_rate != sample_rate:
        return audio_io.resample(audio, sample_rate, engine.sample_rate), engine.sample_rate
    return audio, sample_rate


def _check_render_length(seconds: float, takes: int, what: str) -> None:
    total = seconds * takes
    if total > MAX_RENDER_SECONDS:
        raise InvalidArgument(
            f"{what} would render {_clock(total)} of audio ({takes} x {_clock(seconds)}), more than the "
            f"{_clock(MAX_RENDER_SECONDS)} one request may make; ask for fewer bars or variations"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def _inherit_position(options: OutputOptions, path: Path, offset: float = 0.0) -> OutputOptions:
    """Keep a WAV input's BWF time reference on its results (plus ``offset`` seconds, where the section used
    starts in the file), unless a position was asked for."""
    if (
        options.position is not None
        or options.fmt != "wav"
        or Path(path).suffix.lower() not in (".wav", ".bwf")
    ):
        return options
    bext = read_bext(path)
    if not bext or not bext.get("time_reference"):
        return options
    rate = audio_io.probe_sample_rate(path)
    return replace(options, position=int(bext["time_reference"]) / rate + float(offset))


def _finished(
    takes: Sequence[np.ndarray], work_rate: int, sample_rate: int, n_samples: int, target_lufs: float | None
) -> list[tuple[int, np.ndarray]]:
    """Bring an engine's takes back to ``sample_rate``, exactly ``n_samples`` long, levelled and limited;
    numbered from 1."""
    out = []
    for k, take in enumerate(takes, start=1):
        if work_rate != sample_rate:
            take = audio_io.resample(take, work_rate, sample_rate)
        out.append((k, finish(take, sample_rate, n_samples, target_lufs=target_lufs)))
    return out


def _write_all(
    items: Sequence[tuple[str, int | None, np.ndarray, str]],
    sample_rate: int,
    options: OutputOptions,
    description: str,
    on_publish: PublishHook | None = None,
    midi: Sequence[bytes | None] = (),
) -> list[Output]:
    """Write ``(stem, variation, audio, file_name)`` items, all or none (two-phase: see the module doc), and
    ``midi[i]`` (a Standard MIDI File) beside item ``i``'s audio under its name with ``.mid``."""
    out_rate = options.sample_rate or sample_rate
    position = None if options.position is None else int(round(options.position * out_rate))
    shapes = []
    with Publisher(folder=options.folder) as publisher:
        for _, _, audio, name in items:
            data = audio_io.resample(audio, sample_rate, out_rate) if out_rate != sample_rate else audio
            publisher.add(
                options.out_dir / name,
                data,
                out_rate,
                fmt=options.fmt,
                bit_depth=options.bit_depth,
                position=position,
                description=description,
            )
            shapes.append(data.shape)
        with_midi = [i for i, data in enumerate(midi) if data is not None]
        for i in with_midi:
            publisher.add_file(
                (options.out_dir / items[i][3]).with_suffix(".mid"), midi[i] or b"", companion_of=i
            )
        planned = publisher.reserve()
        if on_publish is not None:
            on_publish(planned)
        paths = publisher.publish()
    mids: dict[int, Path] = dict(zip(with_midi, paths[len(items) :], strict=True))
    return [
        Output(stem, path, variation, out_rate, shape[-1], shape[0], mids.get(i))
        for i, ((stem, variation, _, _), path, shape) in enumerate(zip(items, paths, shapes, strict=False))
    ]


@memory.guard(lambda path, *args, **kwargs: f"separate {Path(path).name}")
def separate_file(
    path: Path,
    options: OutputOptions,
    *,
    stems: Sequence[str] | None = None,
    engine: str | Engine = "auto",
    model: str | None = None,
    models_dir: Path | None = None,
    engine_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    on_publish: PublishHook | None = None,
    cache: ResultCache | None = None,
    section: Section | None = None,
    midi: bool = False,
) -> Result:
    """Split the audio file at ``path`` into stems written to ``options.out_dir``.

    Args:
        midi: also write each stem's notes, transcribed, beside it (``.mid``; tempo from the tempo estimator).
        section: separate only this part of the file (a trimmed DAW item); the stems are as long as it.
        on_publish: told the planned files right before they are published (see :data:`PublishHook`).
        cache: serve an identical separation of identical audio from here, skipping the engine (progress then
            reports the stage ``cache``, up to its final ``1.0``), and store new ones in it. The result's
            ``cached`` says which.
    """
    report = Progress(progress)
    eng = _engine(engine, "separate", model, models_dir, engine_options)
    if stems is not None and not [s for s in stems if s.strip()]:
        raise InvalidArgument(f"no stems named; pick some of: {', '.join(eng.separate_stems)}")
    wanted = list(dict.fromkeys(s.strip().lower() for s in (stems or eng.separate_stems) if s.strip()))
    eng.require_stems("separate", wanted)
    section = section or Section()
    options = _inherit_position(options, Path(path), section.start)
    # transcription needs each stem whole: with midi, a long input is read whole too (see the README)
    streamed = (
        None if midi else _separate_streamed(eng, Path(path), wanted, options, section, report, on_publish)
    )
    if streamed is not None:
        return streamed
    digest = file_digest(Path(path)) if cache is not None else None
    audio, sample_rate = audio_io.read_audio(path)
    audio = cut(audio, sample_rate, section, Path(path).name)
    report(0.02, "read")
    key = None
    if cache is not None and digest is not None and unchanged(Path(path), digest):
        settings = {
            "engine_rate": eng.sample_rate,
            "device": eng.device,
            "stembridge": __version__,
            **eng.cache_settings(),
            **({} if section.whole else section.key()),
        }
        key = separation_key(digest, engine=eng.name, model=eng.model_name, stems=wanted, settings=settings)
    shape = (audio.shape[0], audio.shape[-1])
    stems_out = None if cache is None or key is None else cache.get(key, wanted, shape, sample_rate)
    cached = stems_out is not None
    if stems_out is not None:
        report(0.9, "cache")
    else:
        stems_out = _separate(eng, audio, sample_rate, wanted, report.sub(0.05, 0.9))
        if cache is not None and key is not None:
            cache.put(key, {stem: stems_out[stem] for stem in wanted}, sample_rate)
    info: dict[str, Any] = {"source": str(path), "cached": cached}
    peak = max(float(np.max(np.abs(stems_out[stem]))) for stem in wanted)
    if peak > 1.0 and options.bit_depth != 32:
        # Stems of a mix above 0 dBFS would clip in integer PCM and no longer sum to the mix.
        options = replace(options, bit_depth=32)
        info["warnings"] = [_unclipped_warning(peak)]
    ext = FORMATS[options.fmt]
    source = Path(path).stem
    items = [(stem, None, stems_out[stem], output_name(source, stem, ext=ext)) for stem in wanted]
    mids: list[bytes | None] = []
    if midi:
        grid = infer_grid(audio, sample_rate)
        mids = [midi_of(stems_out[stem], sample_rate, stem, grid) for stem in wanted]
    report(0.92, "write")
    outputs = _write_all(
        items,
        sample_rate,
        options,
        f"stembridge separate {Path(path).name} ({eng.model_name})",
        on_publish,
        mids,
    )
    report(1.0, "cache" if cached else "done")
    if cached:  # the engine did not run: only its loading notes hold
        info = _notes(eng, info, job=False, inputs=[path])
        return Result("separate", eng.name, eng.model_name, outputs, info)
    return Result("separate", eng.name, eng.model_name, outputs, _notes(eng, info, inputs=[path]))


def _unclipped_warning(peak: float) -> str:
    return (
        f"the stems peak at {20 * np.log10(peak):+.1f} dBFS, so they were written as 32-bit float "
        "to keep them unclipped"
    )


def _stream_plan(eng: Engine, source: AudioSource, options: OutputOptions) -> BlockPlan | None:
    """The engine's blocks when ``source`` is separated block by block, or ``None`` when it is read whole."""
    rate = source.sample_rate
    plan = eng.block_plan(rate)
    if (
        plan is None
        or source.frames <= max(plan.block, STREAM_ABOVE_SECONDS * rate)
        or eng.sample_rate not in (None, rate)
        or options.sample_rate not in (None, rate)
    ):
        return None
    return plan


def separation_memory(
    eng: Engine | None,
    path: Path,
    stems: int,
    options: OutputOptions,
    section: Section | None = None,
    midi: bool = False,
) -> int:
    """Bytes a separation of ``path`` holds at its peak, roughly: its input and ``stems`` stems twice over
    (working copies), float32, for the whole input or for one block and its context when ``eng`` streams it
    (``None``: an engine not loaded yet, counted as reading the input whole; with ``midi`` the input is read
    whole too, see :func:`separate_file`)."""
    with AudioSource(path, section) as source:
        plan = None if eng is None or midi else _stream_plan(eng, source, options)
        frames = source.frames if plan is None else min(source.frames, plan.block + 2 * plan.context)
        if eng is not None and plan is None and eng.sample_rate and eng.sample_rate != source.sample_rate:
            frames += frames * eng.sample_rate // source.sample_rate
        return frames * max(2, source.channels) * _F32 * (2 * max(1, stems) + 4)


def generation_memory(
    context_paths: Sequence[Path], spec: GenerateSpec, starts: Sequence[float] | None
) -> int:
    """Bytes a generation holds at its peak, roughly: the context (each file, its stereo copy and the mix,
    float32 stereo) and every take a few times over (rendering, resampling, finishing).

    Raises:
        InvalidArgument: as :func:`generate_files` would, for a render over the limit (checked first).
    """
    _check_render_length(
        spec.grid(DEFAULT_SAMPLE_RATE).samples_for_bars(spec.bars) / DEFAULT_SAMPLE_RATE,
        spec.variations,
        f"{spec.bars} bars of {spec.time_signature} at {spec.bpm:g} bpm",
    )
    context = 0
    for p, start in zip(context_paths, _context_starts(context_paths, starts), strict=True):
        with AudioSource(p, Section(start)) as source:
            context += source.frames * max(2, source.channels)
    take = spec.grid(DEFAULT_SAMPLE_RATE).samples_for_bars(spec.bars) * 2
    return _F32 * (3 * context + 4 * take * spec.variations)


def variation_memory(path: Path, variations: int, section: Section | None = None) -> int:
    """Bytes :func:`vary_file` holds at its peak, roughly: the input and each variation a few times over.

    Raises:
        InvalidArgument: as :func:`vary_file` would, for a bad count or a render over the limit.
    """
    if not 1 <= int(variations) <= 16:
        raise InvalidArgument(f"variations must be between 1 and 16, got {variations}")
    with AudioSource(path, section) as source:
        _check_render_length(source.seconds, int(variations), f"{variations} variations of {path}")
        return _F32 * source.frames * max(2, source.channels) * (3 * int(variations) + 4)


def _separate_streamed(
    eng: Engine,
    path: Path,
    wanted: list[str],
    options: OutputOptions,
    section: Section,
    report: Progress,
    on_publish: PublishHook | None,
) -> Result | None:
    """Separate a long input block by block straight into its files (:mod:`bridge.streaming`), in memory that
    follows the engine's block, not the song. ``None`` (nothing done) when the input fits in one block, the
    engine needs it whole, or the engine or the output works at another rate than the file's; such inputs are
    read whole (and may be served from the cache)."""
    with AudioSource(path, section) as source:
        rate = source.sample_rate
        plan = _stream_plan(eng, source, options)
        if plan is None:
            return None
        report(0.02, "read")
        ext = FORMATS[options.fmt]
        targets = {stem: options.out_dir / output_name(path.stem, stem, ext=ext) for stem in wanted}
        written = separate_to_files(
            eng,
            source,
            wanted,
            plan,
            targets,
            fmt=options.fmt,
            bit_depth=options.bit_depth,
            position=None if options.position is None else int(round(options.position * rate)),
            description=f"stembridge separate {path.name} ({eng.model_name})",
            progress=report.sub(0.05, 0.99),
            on_publish=on_publish,
            folder=options.folder,
        )
    info: dict[str, Any] = {"source": str(path), "cached": False}
    if written.bit_depth != options.bit_depth:
        info["warnings"] = [_unclipped_warning(written.peak)]
    outputs = [
        Output(stem, written.paths[stem], None, rate, written.frames, written.channels) for stem in wanted
    ]
    report(1.0, "done")
    return Result("separate", eng.name, eng.model_name, outputs, _notes(eng, info))


def _separate(
    eng: Engine, audio: np.ndarray, sample_rate: int, stems: Sequence[str], progress: ProgressCallback
) -> dict[str, np.ndarray]:
    """Run the engine on ``audio`` ``[C, T]``; the stems come back at ``sample_rate``, as long as the input."""
    work, work_rate = _to_engine_rate(audio, sample_rate, eng)
    stems_out = eng.separate(work, work_rate, stems, progress)
    if work_rate != sample_rate:
        stems_out = {
            k: fit_length(
                audio_io.resample(v, work_rate, sample_rate), audio.shape[-1], sample_rate, fade_ms=0.0
            )
            for k, v in stems_out.items()
        }
    return stems_out


def _context_starts(paths: Sequence[Path], starts: Sequence[float] | None) -> list[float]:
    if not starts:
        return [0.0] * len(paths)
    if len(starts) != len(paths):
        raise InvalidArgument(
            f"got {len(starts)} context start(s) for {len(paths)} context file(s); give one per file, in order"
        )
    return [float(Section(start).start) for start in starts]


def load_context(
    paths: Sequence[Path], sample_rate: int | None = None, starts: Sequence[float] | None = None
) -> tuple[np.ndarray, int]:
    """Read context files, resample to one rate (the first file's unless given), make them stereo and sum them.

    Bar 1 is at each file's start, or ``starts[i]`` seconds into file ``i``; the mix is as long as the longest.
    """
    if not paths:
        raise InvalidArgument("no context files given; pass at least one with --context FILE")
    tracks = []
    rate = sample_rate
    for p, start in zip(paths, _context_starts(paths, starts), strict=True):
        audio, sr = audio_io.read_audio(p)
        audio = cut(audio, sr, Section(start), Path(p).name)
        rate = rate or sr
        if sr != rate:
            audio = audio_io.resample(audio, sr, rate)
        tracks.append(audio_io.conform_channels(audio, 2))
    length = max(t.shape[-1] for t in tracks)
    mix = np.zeros((2, length), dtype=np.float32)
    for t in tracks:
        mix[:, : t.shape[-1]] += t
    return mix, int(rate or DEFAULT_SAMPLE_RATE)


@memory.guard(lambda context_paths, spec, *args, **kwargs: f"generate {spec.stem}")
def generate_files(
    context_paths: Sequence[Path],
    spec: GenerateSpec,
    options: OutputOptions,
    *,
    engine: str | Engine = "auto",
    model: str | None = None,
    models_dir: Path | None = None,
    engine_options: Mapping[str, Any] | None = None,
    match_loudness: bool = True,
    progress: ProgressCallback | None = None,
    on_publish: PublishHook | None = None,
    context_starts: Sequence[float] | None = None,
    midi: bool = False,
) -> Result:
    """Generate ``spec.variations`` takes of ``spec.stem`` fitting the context files; write them.

    Each take's notes go beside it (``.mid``) when the engine decided them (the built-in engine), and,
    with ``midi``, transcribed from the take when it did not.

    ``on_publish`` is told the planned files right before they are published (see :data:`PublishHook`).
    ``context_starts``: where bar 1 is in each context file, in seconds (default: at its start).
    """
    report = Progress(progress)
    eng = _engine(engine, "generate", model, models_dir, engine_options)
    eng.require_stems("generate", [spec.stem])
    _check_render_length(
        spec.grid(DEFAULT_SAMPLE_RATE).samples_for_bars(spec.bars) / DEFAULT_SAMPLE_RATE,
        spec.variations,
        f"{spec.bars} bars of {spec.time_signature} at {spec.bpm:g} bpm",
    )
    if context_paths:
        starts = _context_starts(context_paths, context_starts)
        options = _inherit_position(options, Path(context_paths[0]), starts[0])
        context, sample_rate = load_context(context_paths, options.sample_rate, starts)
        source = split_source(Path(context_paths[0]).stem)[0]
    else:
        context, sample_rate = None, options.sample_rate or DEFAULT_SAMPLE_RATE
        source = "generated"
    report(0.03, "read")
    work, work_rate = (
        (context, sample_rate) if context is None else _to_engine_rate(context, sample_rate, eng)
    )
    if context is None and eng.sample_rate:
        work_rate = eng.sample_rate
    made = eng.generate_parts(work, work_rate, spec, report.sub(0.05, 0.85))
    takes = [audio for audio, _ in made]
    n_samples = spec.grid(sample_rate).samples_for_bars(spec.bars)
    target = None
    if match_loudness and context is not None:
        below = PART_OFFSET_LU.get(spec.stem, DEFAULT_PART_OFFSET_LU)
        target = loudness_target(integrated_loudness(context, sample_rate), below)
    report(0.88, "finish")
    ext = FORMATS[options.fmt]
    items = [
        (
            spec.stem,
            k,
            take,
            output_name(source, spec.stem, bpm=spec.bpm, bars=spec.bars, variation=k, ext=ext),
        )
        for k, take in _finished(takes, work_rate, sample_rate, n_samples, target)
    ]
    report(0.92, "write")
    description = f"stembridge generate {spec.stem} ({eng.model_name})"
    grid = spec.grid(sample_rate)
    mids = [
        encode_midi(part)
        if part is not None
        else midi_of(audio, sample_rate, spec.stem, grid)
        if midi
        else None
        for (_, part), (_, _, audio, _) in zip(made, items, strict=True)
    ]
    outputs = _write_all(items, sample_rate, options, description, on_publish, mids)
    report(1.0, "done")
    info = {
        "stem": spec.stem,
        "bpm": spec.bpm,
        "bars": spec.bars,
        "time_signature": str(spec.time_signature),
        "seed": spec.seed,
        "context": [str(p) for p in context_paths],
    }
    return Result("generate", eng.name, eng.model_name, outputs, _notes(eng, info, inputs=context_paths))


@memory.guard(lambda path, *args, **kwargs: f"vary {Path(path).name}")
def vary_file(
    path: Path,
    options: OutputOptions,
    *,
    variations: int = 3,
    strength: float = 0.5,
    seed: int = 0,
    bpm: float | None = None,
    bars: int | None = None,
    time_signature: TimeSignature | None = None,
    engine: str | Engine = "auto",
    model: str | None = None,
    models_dir: Path | None = None,
    engine_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    on_publish: PublishHook | None = None,
    section: Section | None = None,
    midi: bool = False,
    stem: str | None = None,
) -> Result:
    """Make ``variations`` variations of the audio file at ``path`` (or of ``section`` of it: a trimmed item).

    With ``midi``, each variation's notes are transcribed beside it (``.mid``) as ``stem`` (default: what the
    file name says, :func:`bridge.midi.files.part_stem`).

    With both ``bpm`` and ``bars`` the results are exactly that many bars long; otherwise as long as the input.
    ``on_publish`` is told the planned files right before they are published (see :data:`PublishHook`).
    """
    report = Progress(progress)
    if not 1 <= int(variations) <= 16:
        raise InvalidArgument(f"variations must be between 1 and 16, got {variations}")
    if not 0.0 <= float(strength) <= 1.0:
        raise InvalidArgument(f"strength must be between 0 and 1, got {strength}")
    midi_stem = part_stem(Path(path), stem) if midi else None
    eng = _engine(engine, "vary", model, models_dir, engine_options)
    if bpm is None and bars is None:
        bpm, bars = parse_tempo(Path(path).stem)  # our own results say their tempo in their names
    section = section or Section()
    options = _inherit_position(options, Path(path), section.start)
    audio, sample_rate = audio_io.read_audio(path, options.sample_rate)
    audio = cut(audio, sample_rate, section, Path(path).name)
    _check_render_length(audio.shape[-1] / sample_rate, int(variations), f"{variations} variations of {path}")
    report(0.03, "read")
    ts = time_signature or TimeSignature()
    grid: Grid = infer_grid(audio, sample_rate, bpm, bars, ts)
    n_samples = audio.shape[-1]
    if bpm is not None and bars is not None:
        n_samples = grid.samples_for_bars(bars)
        audio = fit_length(audio, n_samples, sample_rate)
    work, work_rate = _to_engine_rate(audio, sample_rate, eng)
    takes = eng.vary(
        work,
        work_rate,
        int(variations),
        float(strength),
        int(seed),
        grid.with_sample_rate(work_rate),
        report.sub(0.05, 0.85),
    )
    target = loudness_target(integrated_loudness(audio, sample_rate))
    bars_label = bars if bars is not None else max(1, int(round(grid.bars_in(n_samples))))
    ext = FORMATS[options.fmt]
    source, source_stem = split_source(Path(path).stem)
    label = f"{source_stem}-var" if source_stem else "var"
    items = [
        (label, k, take, output_name(source, label, bpm=grid.bpm, bars=bars_label, variation=k, ext=ext))
        for k, take in _finished(takes, work_rate, sample_rate, n_samples, target)
    ]
    report(0.92, "write")
    description = f"stembridge vary {Path(path).name} ({eng.model_name})"
    mids: list[bytes | None] = [
        midi_of(take, sample_rate, midi_stem, grid) if midi_stem else None for _, _, take, _ in items
    ]
    outputs = _write_all(items, sample_rate, options, description, on_publish, mids)
    report(1.0, "done")
    info = {
        "bpm": grid.bpm,
        "bars": bars_label,
        "strength": float(strength),
        "seed": int(seed),
        "source": str(path),
    }
    return Result("vary", eng.name, eng.model_name, outputs, _notes(eng, info, inputs=[path]))


__all__ = [
    "OutputOptions",
    "Output",
    "Result",
    "PublishHook",
    "separate_file",
    "generate_files",
    "vary_file",
    "load_context",
    "safe_name",
]
