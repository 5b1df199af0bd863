"""The ``stembridge serve``, ``request`` and ``discover`` commands: parse arguments, call the daemon or client.

Hooked into bridge/cli.py by ``COMMANDS.update(add_commands(sub))`` in ``build_parser``'s subparsers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.errors import StembridgeError

Handler = Callable[[argparse.Namespace], int]
EXIT_OK = 0
DISCOVER_TIMEOUT = 2.0


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _parser(
    subparsers: Any, name: str, help_text: str, *examples: str, **kwargs: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    return parser


def add_commands(subparsers: Any) -> dict[str, Handler]:
    """Add ``serve``, ``request`` and ``discover`` to the ``stembridge`` subparsers; returns ``{name: handler}``."""
    p = _parser(
        subparsers,
        "serve",
        "Run the daemon: OSC over UDP and TCP for Max for Live, Reaper and other clients.",
        "stembridge serve",
        "stembridge serve --port 9977 --out ~/Music/Stembridge",
        "stembridge serve --host 0.0.0.0 --token s3cret --allowed-root /Volumes/Projects",
        "stembridge serve --watch ~/Music/Stembridge/Hot   # Logic and any DAW: see docs/LOGIC.md",
    )
    p.add_argument(
        "--host", default=None, help="address to listen on (default 127.0.0.1; others need --token)"
    )
    p.add_argument(
        "--port", type=int, default=None, help="UDP and TCP port (default 9977; 0 picks a free one)"
    )
    p.add_argument("--token", default=None, help="secret every request must carry as `token <secret>`")
    p.add_argument(
        "--state-dir", type=Path, default=None, help="journal and port file (default: per-user data)"
    )
    p.add_argument("--out", type=Path, default=None, help="render folder (default: ~/Music/Stembridge)")
    p.add_argument(
        "--allowed-root",
        type=Path,
        action="append",
        default=None,
        metavar="DIR",
        help="another folder requests may render into (repeatable)",
    )
    p.add_argument("--models-dir", type=Path, default=None, help="folder holding local checkpoints")
    p.add_argument("--engine", default=None, help="default engine (default: auto)")
    p.add_argument("--device", default=None, help="where models run: auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for models (default: one per core)")
    p.add_argument(
        "--allow-download",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let missing models be downloaded (default: the allow_download setting, off)",
    )
    p.add_argument(
        "--model-memory-mb",
        type=int,
        default=None,
        help="memory loaded models may keep between jobs (default: half the machine's)",
    )
    p.add_argument(
        "--queue-size", type=int, default=None, help="jobs that may wait behind the running one (16)"
    )
    p.add_argument(
        "--no-discovery",
        action="store_true",
        help="do not advertise over mDNS (clients then need the port file or --host/--port)",
    )
    p.add_argument(
        "--watch",
        type=Path,
        default=None,
        metavar="DIR",
        help="hot folder: take audio dropped into DIR/separate, DIR/vary and DIR/generate; results in DIR/done",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="URL",
        help="run jobs on a Ray cluster's warm actors: ray://HOST:10001, or auto (RAY_ADDRESS); see docs/CLUSTER.md",
    )
    p.add_argument(
        "--shared-fs",
        action="store_true",
        help="with --cluster: the cluster sees this machine's paths (send paths, not the files' bytes)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")

    p = _parser(
        subparsers,
        "request",
        "Send a request to a running daemon and wait for the result.",
        "stembridge request ping",
        "stembridge request separate ~/song.wav --stems drums,bass",
        "stembridge request generate --stem bass --context ~/drums.wav --bpm 120 --bars 8 --result-file r",
        "stembridge request status 3f2a9c01b7d4",
    )
    ops = p.add_subparsers(dest="operation", metavar="OPERATION", parser_class=type(p))
    ops.required = True
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("daemon")
    g.add_argument(
        "--host", default=None, help="daemon address (default: from its port file, else 127.0.0.1)"
    )
    g.add_argument(
        "--port", type=int, default=None, help="daemon port (default: from its port file, else 9977)"
    )
    g.add_argument("--token", default=None, help="the daemon's token, if it has one")
    g.add_argument("--state-dir", type=Path, default=None, help="where the daemon's port file is")
    g.add_argument(
        "--discover",
        action="store_true",
        help=f"without --host/--port and a port file, find the daemon over mDNS ({DISCOVER_TIMEOUT:g} s at most)",
    )
    g.add_argument("--request-id", default=None, help="the request's id (default: a random one)")
    g.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the daemon to answer (3)")
    g.add_argument(
        "--result-file",
        type=Path,
        default=None,
        metavar="F",
        help="write the result as JSON to F (atomically) and progress lines to F.progress",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object; a job\'s files as "outputs": [{"stem", "path", "variation"}] and "paths"',
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages")

    def op(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        return _parser(ops, name, help_text, *examples, parents=[common])

    op("ping", "Check that the daemon answers; print its version and engines.", "stembridge request ping")
    op("models", "List the daemon's models and whether each can run.", "stembridge request models --json")
    op("queue", "Show whether a job is running and how many wait.", "stembridge request queue --json")
    for name, verb in (("status", "Show the state of a job"), ("cancel", "Cancel a job")):
        q = op(name, f"{verb} by its request id.", f"stembridge request {name} 3f2a9c01b7d4")
        q.add_argument("job_id", help="the job's request id")

    q = op(
        "separate", "Split a song into stems.", "stembridge request separate /abs/song.wav --stems drums,bass"
    )
    q.add_argument("file", type=Path, help="the audio file")
    q.add_argument("--stems", default=None, help="comma-separated stems (default: all the engine knows)")
    _add_section_options(q)
    q.add_argument("--segment", type=float, default=None, help="demucs: chunk length in seconds")
    q.add_argument("--overlap", type=float, default=None, help="demucs: chunk overlap, 0 to 0.99 (0.25)")
    q.add_argument("--shifts", type=int, default=None, help="demucs: shifted passes averaged, 0 to 20 (1)")
    _add_output_options(q)

    q = op(
        "generate",
        "Generate a stem that fits the context.",
        "stembridge request generate --stem bass --context drums.wav --bpm 120 --bars 8",
    )
    q.add_argument("--stem", required=True, help="bass, drums, keys, pad, lead, ...")
    q.add_argument(
        "--context", type=Path, nargs="+", default=[], metavar="FILE", help="the other stems or the mix"
    )
    q.add_argument("--bpm", type=float, required=True, help="tempo in quarter notes per minute (20-400)")
    q.add_argument("--bars", type=float, required=True, help="length in bars (1-256)")
    q.add_argument("--time-signature", default=None, help="e.g. 4/4, 6/8 (default 4/4)")
    q.add_argument("--prompt", default=None, help="describe the part")
    q.add_argument("--seed", type=int, default=None, help="same seed, same result (default 0)")
    q.add_argument("--variations", type=int, default=None, help="how many takes (1-16, default 1)")
    q.add_argument("--no-loudness-match", action="store_true", help="keep the engine's level")
    q.add_argument(
        "--context-start",
        type=float,
        nargs="+",
        default=None,
        metavar="SECONDS",
        help="bar 1 in each context",
    )
    _add_output_options(q)

    q = op(
        "vary", "Make variations of a part.", "stembridge request vary loop.wav --variations 4 --strength 0.6"
    )
    q.add_argument("file", type=Path, help="the audio file")
    q.add_argument("--variations", type=int, default=None, help="how many (1-16, default 3)")
    q.add_argument("--strength", type=float, default=None, help="0 = unchanged ... 1 = far from the original")
    q.add_argument("--bpm", type=float, default=None, help="tempo; estimated when omitted")
    q.add_argument("--bars", type=float, default=None, help="length in bars")
    q.add_argument("--time-signature", default=None, help="e.g. 4/4, 6/8 (default 4/4)")
    q.add_argument("--seed", type=int, default=None, help="same seed, same result (default 0)")
    _add_section_options(q)
    _add_output_options(q)

    p = _parser(
        subparsers,
        "discover",
        "List the stembridge daemons that answer over mDNS (on this machine and the network).",
        "stembridge discover",
        "stembridge discover --timeout 5 --json",
    )
    p.add_argument(
        "--timeout", type=float, default=DISCOVER_TIMEOUT, help=f"seconds to listen ({DISCOVER_TIMEOUT:g})"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    return {"serve": cmd_serve, "request": cmd_request, "discover": cmd_discover}


def _add_section_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=float, default=None, help="use the file from this many seconds in")
    p.add_argument("--length", type=float, default=None, help="use this many seconds of it")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine and output")
    g.add_argument("--engine", default=None, help="engine name, or auto")
    g.add_argument("--model", default=None, help="model name")
    g.add_argument(
        "--precision", choices=("auto", "float32", "bfloat16"), default=None, help="auto, float32 or bfloat16"
    )
    g.add_argument(
        "--out",
        default=None,
        help="a subfolder of the daemon's render folder, or an absolute folder inside it or an allowed root",
    )
    g.add_argument(
        "--format", dest="fmt", choices=("wav", "aiff"), default=None, help="file format (default: wav)"
    )
    g.add_argument("--bit-depth", type=int, choices=(16, 24, 32), default=None, help="16, 24 or 32 (float)")
    g.add_argument("--samplerate", type=int, default=None, help="output sample rate (default: the input's)")
    g.add_argument("--position", type=float, default=None, help="timeline position of bar 1 in seconds (BWF)")
    g.add_argument(
        "--midi",
        action="store_true",
        help="also a MIDI file (.mid) per audio file: sends `midi 1`; the .mid paths follow the audio's",
    )


# --- serve --------------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.server.daemon import serve

    settings = load_settings().with_overrides(
        host=args.host,
        port=args.port,
        token=args.token,
        state_dir=args.state_dir,
        out_dir=args.out,
        allowed_roots=tuple(args.allowed_root) if args.allowed_root else None,
        models_dir=args.models_dir,
        engine=args.engine,
        device=args.device,
        threads=args.threads,
        allow_download=args.allow_download,
        model_memory_mb=args.model_memory_mb,
        queue_size=args.queue_size,
        watch_dir=args.watch,
    )
    bridge_log = logging.getLogger("bridge")
    if bridge_log.getEffectiveLevel() > logging.INFO and not args.quiet:
        bridge_log.setLevel(logging.INFO)
    if args.cluster is None:
        return serve(settings, discovery=False if args.no_discovery else None)
    from bridge.batch.ray_executor import connect
    from bridge.jobs.cluster_runner import ClusterRunner

    runner = ClusterRunner(settings, connect(args.cluster), shared_fs=args.shared_fs)
    try:
        return serve(settings, runner, discovery=False if args.no_discovery else None)
    finally:
        runner.close()


# --- discover -----------------------------------------------------------------------------------------------


def cmd_discover(args: argparse.Namespace) -> int:
    from bridge.errors import InvalidArgument
    from bridge.server.discovery import browse

    if not 0 < args.timeout <= 600:
        raise InvalidArgument(f"--timeout must be between 0 and 600 seconds, got {args.timeout:g}")
    found = browse(args.timeout)
    if args.json:
        print(json.dumps([d.to_dict() for d in found]))
    elif not found:
        print(
            f"no stembridge daemon answered within {args.timeout:g} s (daemons started with "
            f"--no-discovery, or on networks without multicast, do not show)",
            file=sys.stderr,
        )
    else:
        print(f"{'NAME':<36} {'HOST':<16} {'PORT':>5}  {'VERSION':<9} TOKEN")
        for d in found:
            token = "needed" if d.token_required else "no"
            print(f"{d.name:<36} {d.host:<16} {d.port:>5}  {d.version:<9} {token}")
    sys.stdout.flush()
    return EXIT_OK


# --- request ------------------------------------------------------------------------------------------------


def _output_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "engine": args.engine,
        "model": args.model,
        "precision": args.precision,
        "out": args.out,
        "format": args.fmt,
        "bitdepth": args.bit_depth,
        "samplerate": args.samplerate,
        "position": args.position,
        "midi": 1 if args.midi else None,
    }


def _absolute(path: Path) -> str:
    return str(path.expanduser().absolute())


def _job(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The positional argument and options of a job request, from the command line."""
    options = _output_options(args)
    if args.operation == "separate":
        options.update(
            stems=args.stems,
            start=args.start,
            length=args.length,
            segment=args.segment,
            overlap=args.overlap,
            shifts=args.shifts,
        )
        return [_absolute(args.file)], options
    options.update(
        bpm=args.bpm, bars=args.bars, timesig=args.time_signature, seed=args.seed, variations=args.variations
    )
    if args.operation == "generate":
        options.update(
            context=[_absolute(p) for p in args.context],
            context_start=args.context_start,
            prompt=args.prompt,
            loudness=0 if args.no_loudness_match else None,
        )
        return [args.stem], options
    options.update(strength=args.strength, start=args.start, length=args.length)
    return [_absolute(args.file)], options


def cmd_request(args: argparse.Namespace) -> int:
    from bridge.client import Client, locate, new_request_id
    from bridge.config import load_settings

    rid = args.request_id or new_request_id()
    result_file = _result_file(args.result_file) if args.result_file else None
    try:  # from here on every failure also goes into the result file, which a script may be polling
        settings = load_settings().with_overrides(state_dir=args.state_dir)
        discover_timeout = DISCOVER_TIMEOUT if args.discover else None
        endpoint = locate(settings, args.host, args.port, discover_timeout=discover_timeout)
        with Client(endpoint, args.token or settings.token, answer_timeout=args.timeout) as client:
            payload = _request(client, args, rid, result_file)
    except StembridgeError as exc:
        if result_file is not None:
            result_file.error(rid, exc.code, exc.message)
        raise
    except KeyboardInterrupt:
        if result_file is not None:
            result_file.error(rid, "cancelled", "interrupted by the user")
        raise
    if result_file is not None:
        result_file.write({"request_id": rid, "status": "done", **payload})
    _print(args, payload)
    return EXIT_OK


def _result_file(path: Path) -> Any:
    from bridge.client import ResultFile
    from bridge.errors import InvalidArgument

    try:
        return ResultFile(path)
    except OSError as exc:
        raise InvalidArgument(
            f"cannot write the result file {path}: {exc.strerror or exc}; pass a --result-file in a "
            f"writable folder"
        ) from None


def _request(client: Any, args: argparse.Namespace, rid: str, result_file: Any) -> dict[str, Any]:
    op = args.operation
    if op == "ping":
        version, engines = client.ping()
        return {"version": version, "engines": engines, "daemon": str(client.endpoint)}
    if op == "models":
        return {"models": client.models()}
    if op == "queue":
        return {"queue": client.queue()}
    if op in ("status", "cancel"):
        state = client.status(args.job_id) if op == "status" else client.cancel(args.job_id)
        return dict(state.to_dict())
    from bridge.client import outputs_payload
    from bridge.progressbar import ProgressBar

    bar = ProgressBar(op, enabled=not (args.quiet or args.json))

    def progress(fraction: float, stage: str) -> None:
        bar(fraction, stage)
        if result_file is not None:
            result_file.progress(fraction, stage)

    def accepted(position: int) -> None:
        if result_file is not None:
            result_file.progress(0.0, f"queued {position}")

    positional, options = _job(args)
    try:
        result = client.run(
            op, positional, options, request_id=rid, on_accepted=accepted, on_progress=progress
        )
    finally:
        bar.close()
    payload = outputs_payload(result.paths)
    if result.engine:  # from the daemon's `made` reply
        payload.update(engine=result.engine, model=result.model)
        if result.warnings:
            payload["warnings"] = result.warnings
    return payload


def _print(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(payload))
        return
    if args.quiet:
        return
    op = args.operation
    if op == "ping":
        print(
            f"stembridge {payload['version']} at {payload['daemon']}; "
            f"engines: {', '.join(payload['engines'])}"
        )
    elif op == "queue":
        print(_queue_line(payload["queue"]))
    elif op == "models":
        for m in payload["models"]:
            state = "available" if m["available"] else f"unavailable ({m['reason']})"
            print(f"  {m['name']:<22} {m['engine']:<9} {'/'.join(m['tasks']):<24} {state}")
    elif op in ("status", "cancel"):
        line = f"job {payload['request_id']}: {payload['state']}"
        if payload["state"] in ("queued", "running"):
            line += f" {payload['fraction'] * 100:.0f}%"
        if "error" in payload:
            line += f": {payload['error']['message']} ({payload['error']['code']})"
        print(line)
        for path in payload.get("paths", []):
            print(f"  {path}")
    else:
        for warning in payload.get("warnings", []):
            print(f"stembridge request: note: {warning}", file=sys.stderr)
        for path in payload["paths"]:
            print(path)
    sys.stdout.flush()


def _queue_line(q: dict[str, Any]) -> str:
    """``running (yours: job1, 42% separate); 2 waiting (1 yours)`` or ``idle``."""
    if not q["running"] and not q["waiting"]:
        return "idle: no job running or waiting"
    running = "no job running"
    if q["running"]:
        whose = f"yours: {q['job']}" if q["job"] else "another machine's"
        running = f"a job running ({whose}, {q['fraction'] * 100:.0f}% {q['stage']})".replace(" )", ")")
    waiting = f"{q['waiting']} waiting" + (f" ({q['yours_waiting']} yours)" if q["yours_waiting"] else "")
    return f"{running}; {waiting}"
