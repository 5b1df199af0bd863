"""The ``stembridge jam`` command: parse arguments, jam on the sound card or play a file into a jam session,
print. Nothing else.

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
        "next cycle, ready before the bar line. On the sound card by default (a count-in, then the band plays; "
        "Ctrl-C ends the jam and writes the take); --input plays a file as the humans.",
        epilog="examples:\n"
        "  stembridge jam --list-devices\n"
        "  stembridge jam --stem bass --bpm 120 --input-device 'Scarlett' --channels 1,2 --count-in 2\n"
        "  stembridge jam --input band.wav --stem bass --bpm 120\n"
        "  stembridge jam --input band.wav --stem drums --bpm 96 --bars 2 --lead 2 --realtime\n"
        "  stembridge jam --input band.wav --stem bass --bpm 120 --json --out /tmp/jam",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help="play this file as the humans (bar 1 at its start) instead of the sound card",
    )
    p.add_argument("--stem", help="the part the AI plays: bass, drums, keys, pad, lead, ... (required)")
    p.add_argument("--bpm", type=float, help="tempo in quarter notes per minute, 20-400 (required)")
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
    card = p.add_argument_group("the sound card (without --input)")
    card.add_argument("--list-devices", action="store_true", help="print the sound devices and exit")
    card.add_argument(
        "--input-device", help="where the band comes in: a number or part of a name from --list-devices"
    )
    card.add_argument("--output-device", help="where the AI and the click go out (default: the system's)")
    card.add_argument(
        "--channels", help="the input channels that are the band, from 1: 1,2 or 3-4 (default: the first two)"
    )
    card.add_argument(
        "--count-in", type=int, default=1, metavar="BARS", help="bars of click before bar 1 (0-8, default 1)"
    )
    card.add_argument(
        "--cycles", type=int, default=None, metavar="N", help="stop after N cycles (default: at Ctrl-C)"
    )
    card.add_argument(
        "--latency",
        type=float,
        default=None,
        metavar="MS",
        help="the round trip out to in, measured (e.g. jack_iodelay); default: what the sound card reports",
    )
    card.add_argument(
        "--samplerate", type=int, default=None, help="stream rate (default: the input device's)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ~/Music/Stembridge)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the cycles and outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages")
    return {"jam": cmd_jam}


def _session_name(path: Path | None) -> str:
    stem = "live" if path is None else re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-_")[:40] or "jam"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr if args.json else sys.stdout)


def cmd_jam(args: argparse.Namespace) -> int:
    from bridge.audio.io import read_audio
    from bridge.audio.timing import TimeSignature
    from bridge.config import load_settings
    from bridge.engines.base import load_engine
    from bridge.errors import InvalidArgument
    from bridge.jam import JamOptions, JamPart, JamSession
    from bridge.jam.player import JamRun, play

    if args.list_devices:
        from bridge.jam.devices import describe_devices

        print(describe_devices())
        return EXIT_OK
    if args.stem is None or args.bpm is None:
        raise InvalidArgument(
            "stembridge jam needs --stem and --bpm, e.g. --stem bass --bpm 120 (see --help)"
        )
    settings = load_settings().with_overrides(
        out_dir=args.out, models_dir=args.models_dir, device=args.device
    )
    card = None
    if args.input is not None:
        humans, rate = read_audio(args.input)
    else:
        from bridge.jam.devices import find_card, parse_channels
        from bridge.jam.live import LiveJam, LiveOptions

        channels = parse_channels(args.channels) if args.channels else None
        card = find_card(args.input_device, args.output_device, channels, args.samplerate)
        latency = None if args.latency is None else args.latency / 1000.0
        live = LiveOptions(card.channels, card.out_channels, args.count_in, args.cycles, latency)
        rate = card.sample_rate
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

    run: JamRun
    if card is None:
        run = play(session, humans, realtime=args.realtime, on_part=said)
    else:

        def opened(note: str) -> None:
            if not args.quiet:
                print(f"stembridge jam: note: {note}", file=sys.stderr)

        jam = LiveJam(session, live, card.open, on_part=said, on_note=opened)
        if not args.quiet:
            print(
                "stembridge jam: count-in, then play (Ctrl-C ends the jam and writes the take)",
                file=sys.stderr,
            )
        run = jam.run()
        if jam.duplex.xruns and not args.quiet:
            print(
                f"stembridge jam: note: the sound card flagged {jam.duplex.xruns} blocks as dropped or late "
                f"(xruns); a larger buffer in the driver's settings helps",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(run.to_dict()))
    else:
        _say(args, f"jam: {sum(not p.late for p in run.parts)} of {len(run.parts)} parts on time")
        _say(args, f"  performance {run.performance}")
        if run.recording is not None:
            _say(args, f"  the band {run.recording}")
    return EXIT_OK
