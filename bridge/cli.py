"""The ``stembridge`` command: parse arguments, call the library, print. Nothing else.

Importing this module (and ``stembridge --help``) never imports torch or any engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bridge import __version__
from bridge.errors import InvalidArgument, OutOfMemory, StembridgeError
from bridge.memory import message as memory_message
from bridge.termination import Terminated, termination_raises

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_section_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--start", type=float, default=None, help="use the file from this many seconds in (a trimmed item)"
    )
    p.add_argument(
        "--length", type=float, default=None, help="use this many seconds of it (default: to the end)"
    )


def _add_job_options(p: argparse.ArgumentParser, *, models: bool = True) -> None:
    g = p.add_argument_group("engine and output")
    g.add_argument(
        "--engine", default=None, help="engine name, or 'auto' for the best available (default: auto)"
    )
    if models:
        g.add_argument("--model", default=None, help="model name from `stembridge models`, or a local folder")
        g.add_argument("--models-dir", type=Path, default=None, help="folder holding local checkpoints")
        g.add_argument(
            "--device", default=None, help="where models run: auto (default), cpu, cuda, cuda:N or mps"
        )
        g.add_argument(
            "--threads", type=int, default=None, help="CPU threads for models (default: one per core)"
        )
        g.add_argument(
            "--precision",
            choices=("auto", "float32", "bfloat16"),
            default=None,
            help="auto (default): bfloat16 on CPUs that do it in hardware (about 2x faster), else float32",
        )
        g.add_argument(
            "--allow-download",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="let a missing model be downloaded (default: no, nothing touches the network; or the "
            "allow_download setting)",
        )
    g.add_argument("--out", type=Path, default=None, help="output folder (default: ~/Music/Stembridge)")
    g.add_argument(
        "--format", dest="fmt", choices=("wav", "aiff"), default="wav", help="file format (default: wav)"
    )
    g.add_argument(
        "--bit-depth", type=int, choices=(16, 24, 32), default=24, help="16, 24 or 32 (float); default 24"
    )
    g.add_argument("--samplerate", type=int, default=None, help="output sample rate (default: the input's)")
    g.add_argument(
        "--position",
        type=float,
        default=None,
        help="timeline position of the result in seconds, stored as the BWF time reference (WAV)",
    )
    g.add_argument("--json", action="store_true", help="print one JSON object with the outputs, for scripts")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages")


def _add_midi_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--midi",
        action="store_true",
        help="also write each file's notes beside it (.mid), transcribed where the engine did not choose them",
    )


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        metavar="PATH",
        help="folders of songs: multitracks (drums.wav, bass.wav... or song__bass.wav) or mixes to separate",
    )
    p.add_argument("--stem", required=True, help="the part to learn: bass, drums, keys, ...")
    p.add_argument("--name", required=True, help="the new model's name: <models-dir>/<name>/")
    p.add_argument(
        "--base", default="musicgen-melody", help="the model to start from (default musicgen-melody)"
    )
    p.add_argument("--steps", type=int, default=500, help="optimiser steps (default 500)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--lora", dest="lora", action="store_true", default=True, help="LoRA adapters (default)"
    )
    mode.add_argument("--full", dest="lora", action="store_false", help="train every weight of the decoder")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4 LoRA, 2e-5 full)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of the steps)")
    p.add_argument("--batch-size", type=int, default=4, help="segments per micro-batch (default 4)")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches per step (default 1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (default 1)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same model (default 0)")
    p.add_argument("--bars", type=int, default=None, help="bars per segment (default: what one window holds)")
    p.add_argument("--tags", default="", help="words for the text prompt, e.g. 'dub, warm'")
    p.add_argument("--time-signature", default="4/4", help="of songs without a sidecar (default 4/4)")
    p.add_argument("--val-songs", type=int, default=1, help="songs held out for validation (default 1)")
    p.add_argument("--val-every", type=int, default=50, help="validation loss every N steps (default 50)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    p.add_argument("--sample-every", type=int, default=100, help="write samples every N steps (default 100)")
    p.add_argument("--samples", type=int, default=2, help="samples each time (default 2; 0: none)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--models-dir", type=Path, default=None, help="where the model goes (default: the setting)"
    )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        default=None,
        help="auto (default): bfloat16 autocast where the hardware has it",
    )
    p.add_argument(
        "--allow-download",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let a missing base model be downloaded",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the result, for scripts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stembridge",
        description="Separate songs into stems, generate a missing stem that fits, and make variations: "
        "locally, for your DAW.",
        epilog=_examples("stembridge demo", "stembridge separate song.wav", "stembridge models"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stembridge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_examples(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command(
        "separate",
        "Split a song into stems (drums, bass, vocals, other).",
        "stembridge separate song.wav",
        "stembridge separate song.mp3 --stems drums,bass --out ~/stems --json",
    )
    p.add_argument("file", type=Path, help="the audio file (WAV, AIFF, FLAC, MP3, OGG)")
    p.add_argument(
        "--stems", default=None, help="comma-separated stems to write (default: all the engine knows)"
    )
    _add_section_options(p)
    d = p.add_argument_group("demucs")
    d.add_argument(
        "--segment", type=float, default=None, help="chunk length in seconds (default: the model's)"
    )
    d.add_argument("--overlap", type=float, default=None, help="chunk overlap, 0 to 0.99 (default 0.25)")
    d.add_argument(
        "--shifts",
        type=int,
        default=None,
        help="shifted passes averaged, 0 to 20: better, slower (default 1)",
    )

    _add_midi_option(p)
    _add_job_options(p)

    p = command(
        "generate",
        "Generate a stem that fits the context: same tempo, bars and key.",
        "stembridge generate --stem bass --context drums.wav keys.wav --bpm 120 --bars 8",
        "stembridge generate --stem drums --context song.wav --bpm 96 --bars 4 --time-signature 6/8 --variations 3",
        'stembridge generate --stem lead --bpm 128 --bars 8 --prompt "bright lead in E minor" --seed 7',
    )
    p.add_argument("--stem", required=True, help="the part to generate: bass, drums, keys, pad, lead, ...")
    p.add_argument(
        "--context",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="the other stems (or the mix) the part must fit; they start at bar 1",
    )
    p.add_argument(
        "--context-start",
        type=float,
        nargs="+",
        default=None,
        metavar="SECONDS",
        help="where bar 1 is in each context file, one per --context file (default: at its start)",
    )
    p.add_argument("--bpm", type=float, required=True, help="tempo in quarter notes per minute (20-400)")
    p.add_argument("--bars", type=float, required=True, help="length in bars (1-256)")
    p.add_argument("--time-signature", default="4/4", help="e.g. 4/4, 3/4, 6/8 (default 4/4)")
    p.add_argument("--prompt", default="", help="describe the part, e.g. 'dark sparse 808 bass in F minor'")
    p.add_argument("--seed", type=int, default=0, help="same seed, same result (default 0)")
    p.add_argument("--variations", type=int, default=1, help="how many takes (1-16, default 1)")
    p.add_argument(
        "--no-loudness-match",
        action="store_true",
        help="keep the engine's level instead of sitting the part under the context's loudness",
    )
    _add_midi_option(p)
    _add_job_options(p)

    p = command(
        "vary",
        "Make variations of a part: rearranged on the beat grid, with pitch, filter and effect changes.",
        "stembridge vary loop.wav --variations 4 --strength 0.6",
        "stembridge vary bass.wav --bpm 120 --bars 8 --seed 3 --json",
    )
    p.add_argument("file", type=Path, help="the audio file to vary")
    p.add_argument("--variations", type=int, default=3, help="how many (1-16, default 3)")
    p.add_argument("--strength", type=float, default=0.5, help="0 = unchanged ... 1 = far from the original")
    p.add_argument("--bpm", type=float, default=None, help="tempo; estimated from the audio when omitted")
    p.add_argument("--bars", type=float, default=None, help="length in bars; with --bpm the result is exact")
    p.add_argument("--time-signature", default="4/4", help="e.g. 4/4, 3/4, 6/8 (default 4/4)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same result (default 0)")
    _add_section_options(p)
    _add_midi_option(p)
    p.add_argument(
        "--stem",
        default=None,
        help="with --midi: what the part is (bass, lead, drums, keys, pad); default: its name",
    )
    _add_job_options(p)

    p = command(
        "transcribe",
        "Write the notes of an audio part as a MIDI file: a line (bass, lead, vocals), drums or chords.",
        "stembridge transcribe bass.wav --stem bass --bpm 120",
        "stembridge transcribe drums.wav --stem drums --quantize 1/16 --json",
    )
    p.add_argument("file", type=Path, help="the audio part; bar 1 at its start (or at --start)")
    p.add_argument("--stem", required=True, help="what it is: bass, lead, vocals, drums, keys or pad")
    p.add_argument("--bpm", type=float, default=None, help="tempo (default: estimated from the audio)")
    p.add_argument("--time-signature", default="4/4", help="e.g. 4/4, 3/4, 6/8 (default 4/4)")
    p.add_argument(
        "--quantize",
        default=None,
        help="move notes onto the grid: 1/4, 1/8, 1/16, 1/32, 1/8t, 1/16t (default: no)",
    )
    _add_section_options(p)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ~/Music/Stembridge)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the output, for scripts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages")

    p = command(
        "models",
        "List engines and models, and whether each can run here (and if not, why).",
        "stembridge models",
        "stembridge models --json",
        "stembridge models pull htdemucs",
        "stembridge models pull musicgen-small",
    )
    p.add_argument(
        "action", nargs="?", choices=("list", "pull"), default="list", help="list (default), or pull NAME"
    )
    p.add_argument("name", nargs="?", default=None, help="with pull: the model to download, e.g. htdemucs")
    p.add_argument("--engine", default=None, help="with pull: the engine, for a model not in the list")
    p.add_argument("--models-dir", type=Path, default=None, help="folder holding local checkpoints")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "train",
        "Fine-tune MusicGen on your own stems: a model that plays the stem in your band's style.",
        "stembridge train --data ~/album --stem bass --name my-bass",
        'stembridge train --data ~/album ~/live --stem drums --name our-drums --tags "dub, warm" --steps 2000',
        "stembridge train --data ~/album --stem bass --name my-bass --resume",
        "stembridge generate --stem bass --context drums.wav --bpm 120 --bars 8 --model my-bass",
    )
    _add_train_options(p)

    p = command(
        "demo",
        "The main job end to end on a song it makes itself: separate, generate a new bass, 3 variations.",
        "stembridge demo",
        "stembridge demo --out /tmp/demo",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ~/Music/Stembridge)")
    p.add_argument("--seed", type=int, default=0, help="seed for the song and the parts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    from bridge.cli_batch import add_commands as add_batch
    from bridge.cli_daemon import add_commands
    from bridge.cli_jam import add_command as add_jam

    handlers = {**COMMANDS, **add_jam(sub), **add_batch(sub), **add_commands(sub)}
    for name, handler in handlers.items():
        sub.choices[name].set_defaults(handler=handler)
    return parser


# --- commands -----------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from bridge.config import load_settings

    return load_settings().with_overrides(
        out_dir=getattr(args, "out", None),
        models_dir=getattr(args, "models_dir", None),
        engine=getattr(args, "engine", None),
        device=getattr(args, "device", None),
        threads=getattr(args, "threads", None),
        allow_download=getattr(args, "allow_download", None),
    )


def _demucs_options(args: argparse.Namespace) -> dict[str, Any]:
    """--segment, --overlap and --shifts, range-checked whatever engine runs (as the daemon checks them)."""
    checks = {"segment": (0.1, 600.0), "overlap": (0.0, 0.99), "shifts": (0, 20)}
    for name, (low, high) in checks.items():
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise InvalidArgument(f"--{name} must be between {low:g} and {high:g}, got {value:g}")
    return {name: getattr(args, name) for name in checks}


def _section(args: argparse.Namespace) -> Any:
    from bridge.audio.section import Section

    if args.start is None and args.length is None:
        return None
    return Section(args.start or 0.0, args.length)


def _engine_options(settings: Any, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """What the pipeline hands the engine besides the model: the settings' device, threads and downloads,
    and the command's own engine options (unset ones left out)."""
    own = {"precision": args.precision, **extra}
    return {**settings.engine_options(), **{k: v for k, v in own.items() if v is not None}}


def _output_options(args: argparse.Namespace, settings: Any) -> Any:
    from bridge.pipeline import OutputOptions

    return OutputOptions(
        out_dir=settings.out_dir,
        fmt=args.fmt,
        bit_depth=args.bit_depth,
        sample_rate=args.samplerate,
        position=args.position,
    )


def _progress(args: argparse.Namespace, label: str) -> Any:
    from bridge.progressbar import ProgressBar

    return ProgressBar(label, enabled=not (args.quiet or getattr(args, "json", False)))


def _report(args: argparse.Namespace, result: Any) -> None:
    if not args.quiet:
        for warning in result.info.get("warnings", []):
            print(f"stembridge {result.command}: note: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=None))
        return
    if args.quiet:
        return
    print(f"{result.command}: {len(result.outputs)} file(s) by {result.engine} ({result.model})")
    for o in result.outputs:
        label = o.stem if o.variation is None else f"{o.stem} v{o.variation}"
        print(f"  {label:<10} {o.path}")
        if o.midi is not None and o.midi != o.path:
            print(f"  {'':<10} {o.midi}")


def _run_job(args: argparse.Namespace, label: str, job: Callable[[Any, Any, Any], Any]) -> int:
    settings = _settings(args)
    options = _output_options(args, settings)
    bar = _progress(args, label)
    try:
        result = job(settings, options, bar)
    finally:
        bar.close()
    _report(args, result)
    return EXIT_OK


def cmd_separate(args: argparse.Namespace) -> int:
    from bridge.pipeline import separate_file

    stems = [s for s in args.stems.split(",")] if args.stems else None
    return _run_job(
        args,
        "separate",
        lambda s, o, bar: separate_file(
            args.file,
            o,
            stems=stems,
            engine=s.engine,
            model=args.model,
            models_dir=s.models_dir,
            engine_options=_engine_options(s, args, **_demucs_options(args)),
            section=_section(args),
            midi=args.midi,
            progress=bar,
        ),
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from bridge.audio.timing import TimeSignature
    from bridge.engines.base import GenerateSpec
    from bridge.pipeline import generate_files

    spec = GenerateSpec(
        stem=args.stem,
        bpm=args.bpm,
        bars=args.bars,
        time_signature=TimeSignature.parse(args.time_signature),
        prompt=args.prompt,
        seed=args.seed,
        variations=args.variations,
    )
    return _run_job(
        args,
        "generate",
        lambda s, o, bar: generate_files(
            args.context,
            spec,
            o,
            engine=s.engine,
            model=args.model,
            models_dir=s.models_dir,
            engine_options=_engine_options(s, args),
            match_loudness=not args.no_loudness_match,
            context_starts=args.context_start,
            midi=args.midi,
            progress=bar,
        ),
    )


def cmd_vary(args: argparse.Namespace) -> int:
    from bridge.audio.timing import TimeSignature, check_bars, check_bpm
    from bridge.pipeline import vary_file

    bpm = None if args.bpm is None else check_bpm(args.bpm)
    bars = None if args.bars is None else check_bars(args.bars)
    ts = TimeSignature.parse(args.time_signature)
    return _run_job(
        args,
        "vary",
        lambda s, o, bar: vary_file(
            args.file,
            o,
            variations=args.variations,
            strength=args.strength,
            seed=args.seed,
            bpm=bpm,
            bars=bars,
            time_signature=ts,
            engine=s.engine,
            model=args.model,
            models_dir=s.models_dir,
            engine_options=_engine_options(s, args),
            section=_section(args),
            midi=args.midi,
            stem=args.stem,
            progress=bar,
        ),
    )


def cmd_transcribe(args: argparse.Namespace) -> int:
    from bridge.audio.timing import TimeSignature, check_bpm
    from bridge.midi.files import transcribe_file
    from bridge.midi.transcribe import check_stem, quantize_step
    from bridge.pipeline import Output, Result

    stem = check_stem(args.stem)
    quantize_step(args.quantize)
    bpm = None if args.bpm is None else check_bpm(args.bpm)
    settings = _settings(args)
    bar = _progress(args, "transcribe")
    try:
        path, info = transcribe_file(
            args.file,
            settings.out_dir,
            stem=stem,
            bpm=bpm,
            time_signature=TimeSignature.parse(args.time_signature),
            quantize_to=args.quantize,
            section=_section(args),
            progress=bar,
        )
    finally:
        bar.close()
    _report(args, Result("transcribe", "builtin", "transcribe", [Output(stem, path, midi=path)], dict(info)))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from bridge.catalog import model_statuses
    from bridge.engines.base import available_engines, engine_class

    settings = _settings(args)
    if args.action == "pull":
        return _pull(args, settings)
    if args.name:
        raise InvalidArgument(
            f"unexpected {args.name!r}; to download a model: stembridge models pull {args.name}"
        )
    from bridge.train.card import trained_models

    engines = available_engines()
    statuses = model_statuses(settings.models_dir)
    trained = trained_models(settings.models_dir)
    if args.json:
        print(
            json.dumps(
                {
                    "engines": {
                        name: {"available": reason is None, "reason": reason or ""}
                        for name, reason in engines.items()
                    },
                    "models": [
                        {
                            "name": s.entry.name,
                            "engine": s.entry.engine,
                            "tasks": list(s.entry.tasks),
                            "available": s.available,
                            "reason": s.reason,
                        }
                        for s in statuses
                    ],
                    "trained": [t.to_dict() for t in trained],
                    "models_dir": str(settings.models_dir),
                }
            )
        )
        return EXIT_OK
    print("engines:")
    for name, reason in engines.items():
        if reason is None:
            cls = engine_class(name)
            print(f"  {name:<10} available   {', '.join(sorted(cls.capabilities))}")
        else:
            print(f"  {name:<10} unavailable {reason}")
    print(f"models (local checkpoints in {settings.models_dir}):")
    for s in statuses:
        state = "available" if s.available else "unavailable"
        why = f"  ({s.short_reason})" if s.reason else ""
        print(f"  {s.entry.name:<28} {s.entry.engine:<9} {state:<11} {'/'.join(s.entry.tasks)}{why}")
    if trained:
        print(f"trained models (stembridge train, in {settings.models_dir}):")
        for t in trained:
            val = "" if t.val_loss is None else f", validation loss {t.val_loss:.3f}"
            print(f"  {t.name:<28} musicgen  {t.stem} from {t.base}, {t.steps} steps{val}")
    return EXIT_OK


def _pull(args: argparse.Namespace, settings: Any) -> int:
    from bridge.catalog import engine_for_model
    from bridge.engines.base import engine_class

    if not args.name:
        raise InvalidArgument("name the model to download, e.g.: stembridge models pull htdemucs")
    engine = args.engine if args.engine and args.engine != "auto" else engine_for_model(args.name)
    if not args.json:
        print(f"stembridge models: downloading {args.name} for the {engine} engine...", file=sys.stderr)
    where = engine_class(engine).pull(args.name, settings.models_dir)
    if args.json:
        print(json.dumps({"model": args.name, "engine": engine, "path": str(where)}))
    else:
        print(f"{args.name}: ready in {where}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from bridge.engines.base import set_threads
    from bridge.train.loop import train
    from bridge.train.settings import TrainSettings

    settings = _settings(args)
    options = TrainSettings(
        data=tuple(args.data),
        stem=args.stem,
        name=args.name,
        models_dir=settings.models_dir,
        base=args.base,
        steps=args.steps,
        lora=args.lora,
        rank=args.rank,
        learning_rate=args.lr,
        warmup=args.warmup,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        clip=args.clip,
        seed=args.seed,
        bars=args.bars,
        tags=args.tags,
        time_signature=args.time_signature,
        val_songs=args.val_songs,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        samples=args.samples,
        device=settings.device,
        precision=args.precision,
        resume=args.resume,
        allow_download=settings.allow_download,
        command=" ".join(["stembridge", *map(shlex.quote, args.argv)]),
    )
    set_threads(settings.threads or None)
    talk = not (args.quiet or args.json)
    bar = _progress(args, "train")
    try:
        result = train(
            options,
            bar,
            say=lambda text: print(f"stembridge train: {text}", file=sys.stderr) if talk else None,
            warn=lambda text: print(f"stembridge train: warning: {text}", file=sys.stderr),
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_dict()))
    elif not args.quiet:
        val = "none held out" if result.val_loss_last is None else f"{result.val_loss_last:.3f}"
        print(
            f"train: {result.path} after {result.steps} steps; train loss {result.train_loss_first:.3f} -> "
            f"{result.train_loss_last:.3f}, validation loss {val}"
        )
        for sample in result.samples:
            print(f"  sample     {sample}")
        print(f"use it: stembridge generate --stem {args.stem} --model {args.name} ...")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo
    from bridge.progressbar import ProgressBar

    settings = _settings(args)
    bar = ProgressBar("demo", enabled=not args.quiet)
    try:
        result = run_demo(settings.out_dir, seed=args.seed, progress=bar)
    finally:
        bar.close()
    print(f"stembridge demo: everything is in {result.folder}")
    print(f"  song       {result.song}")
    for o in result.stems:
        print(f"  stem       {o.path}")
    if result.bass is not None:
        print(f"  new bass   {result.bass.path}")
        if result.bass.midi is not None:
            print(f"  its notes  {result.bass.midi}")
    for o in result.variations:
        print(f"  variation  {o.path}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "separate": cmd_separate,
    "generate": cmd_generate,
    "vary": cmd_vary,
    "transcribe": cmd_transcribe,
    "models": cmd_models,
    "demo": cmd_demo,
    "train": cmd_train,
}


def _doing(args: argparse.Namespace) -> str:
    """What the command was doing, for an error: ``separate song.wav``."""
    target = getattr(args, "file", None)
    return f"{args.command} {target.name}" if isinstance(target, Path) else str(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    # The commands here, `jam` and `batch` write audio files: SIGTERM and SIGHUP remove what they were writing, as
    # Ctrl-C does.
    # The daemon's commands (bridge.cli_daemon) write none, and `serve` handles its signals itself.
    writes = args.command in COMMANDS or args.command in ("jam", "batch")
    cleanup = termination_raises() if writes else contextlib.nullcontext()
    try:
        with cleanup:
            handler: Callable[[argparse.Namespace], int] = args.handler
            return handler(args)
    except (StembridgeError, MemoryError) as caught:
        # the library turns running out of memory inside a job into OutOfMemory; this catches the rest
        exc = caught if isinstance(caught, StembridgeError) else OutOfMemory(memory_message(_doing(args)))
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        print(f"stembridge {args.command}: error: {exc.message}", file=sys.stderr)
        if args.debug:
            raise
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"stembridge {args.command}: interrupted; files being written were discarded", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print(
            f"stembridge {args.command}: terminated ({exc.name}); files being written were discarded",
            file=sys.stderr,
        )
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
