"""The ``stembridge jam`` command: parse arguments, play a file into a jam session, print. Nothing else.

Hooked into bridge/cli.py beside the other commands (``add_command(sub)`` in ``build_parser``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]
EXIT_OK = 0


def add_command(subparsers: Any) -> dict[str, Handler]:
    """Add ``jam`` to the ``stembridge`` subparsers; returns ``{"jam": handler}``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "jam",
        help="Jam: the AI answers each cycle of the humans' playing with its part for the next cycle.",
        description="Jam: the AI hears each cycle of bars the humans play and answers with its part for the "
        "next cycle, ready before the bar line. --input plays a file as the humans.",
        epilog="examples:\n"
        "  stembridge jam --input band.wav --stem bass --bpm 120\n"
        "  stembridge jam --input band.wav --stem drums --bpm 96 --bars 2 --lead 2 --realtime\n"
        "  stembridge jam --input band.wav --stem bass --bpm 120 --json --out /tmp/jam",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", type=Path, required=True, metavar="FILE", help="the humans' playing; bar 1 at its start"
    )
    p.add_argument("--stem", required=True, help="the part the AI plays: bass, drums, keys, pad, lead, ...")
    p.add_argument("--bpm", type=float, required=True, help="tempo in quarter notes per minute (20-400)")
    p.add_argument("--bars", type=float, default=4, help="bars per cycle (1-16, default 4)")
    p.add_argument("--time-signature", default="4/4", help="e.g. 4/4, 3/4, 6/8 (default 4/4)")
    p.add_argument(
        "--lag",
        type=int,
        default=0,
        help="0: answer in the next cycle (default); 1: the one after (GPU models)",
    )
    p.add_argument(
        "--lead", type=float, default=1.0, help="quarter notes before the cycle's end it is sent (default 1)"
    )
    p.add_argument("--memory", type=int, default=2, help="earlier cycles the AI hears (0-8, default 2)")
    p.add_argument(
        "--on-late",
        choices=("repeat", "rest"),
        default="repeat",
        help="when a part is late: repeat the previous part (default) or rest",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same parts (default 0)")
    p.add_argument("--prompt", default="", help="describe the part, e.g. 'dark sparse bass'")
    p.add_argument("--engine", default="builtin", help="engine name (default builtin: keeps up at lag 0)")
    p.add_argument("--model", default=None, help="model name from `stembridge models`, or a local folder")
    p.add_argument("--models-dir", type=Path, default=None, help="folder holding local checkpoints")
    p.add_argument(
        "--device", default=None, help="where models run: auto (default), cpu, cuda, cuda:N or mps"
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace the file in real time (default: as fast as possible, "
        "each part still held to the deadline it would have had)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ~/Music/Stembridge)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the cycles and outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages")
    return {"jam": cmd_jam}


def _session_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-_")[:40] or "jam"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr if args.json else sys.stdout)


def cmd_jam(args: argparse.Namespace) -> int:
    from bridge.audio.io import read_audio
    from bridge.audio.timing import TimeSignature
    from bridge.config import load_settings
    from bridge.engines.base import load_engine
    from bridge.jam import JamOptions, JamPart, JamSession
    from bridge.jam.player import play

    settings = load_settings().with_overrides(
        out_dir=args.out, models_dir=args.models_dir, device=args.device
    )
    humans, rate = read_audio(args.input)
    options = JamOptions(
        stem=args.stem,
        bars=args.bars,
        bpm=args.bpm,
        time_signature=TimeSignature.parse(args.time_signature),
        seed=args.seed,
        prompt=args.prompt,
        lag=args.lag,
        lead=args.lead,
        memory=args.memory,
        sample_rate=rate,
        on_late=args.on_late,
    )
    engine = load_engine(
        args.engine, "generate", model=args.model, models_dir=settings.models_dir, **settings.engine_options()
    )
    session = JamSession(options, engine, settings.out_dir, _session_name(args.input))
    seconds = session.estimate()
    advice = session.advice(seconds)
    if advice and not args.quiet:
        print(f"stembridge jam: note: {advice}", file=sys.stderr)

    def said(part: JamPart) -> None:
        if part.late:
            _say(
                args, f"cycle {part.index}: part {part.play_index} late by {-part.margin_ms:.0f} ms; skipped"
            )
        else:
            _say(
                args,
                f"cycle {part.index}: part {part.play_index} ready {part.margin_ms:.0f} ms before the line",
            )

    run = play(session, humans, realtime=args.realtime, on_part=said)
    if args.json:
        print(json.dumps(run.to_dict()))
    else:
        _say(args, f"jam: {sum(not p.late for p in run.parts)} of {len(run.parts)} parts on time")
        _say(args, f"  performance {run.performance}")
    return EXIT_OK
