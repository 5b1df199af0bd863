"""The OSC contract: addresses, argument parsing and validation, and the reply messages. No sockets here.

A request is ``<address> <reply_port> <request_id> [<positional>] [<key> <value> ...]``. Numbers may arrive
as int or float (Pure Data sends every number as a float): a whole-number float is accepted where a whole
number is meant, and numeric strings are accepted too. Options are alternating key / value pairs, so any OSC
client can send them without JSON; ``context`` and ``stems`` may repeat. docs/PROTOCOL.md is the contract
for clients.

Validation happens here, before a job is queued, and raises the :mod:`bridge.errors` classes whose ``code``
the error reply carries: a request that passes becomes a :class:`Request` holding a ready :class:`JobSpec`. The
checks that touch the disk (do the input files exist, where do symlinks lead) are a step of their own,
:func:`finish_job`, which the server runs off the event loop (see :mod:`bridge.server.paths`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.audio.timing import TimeSignature, check_bars, check_bpm
from bridge.config import Settings
from bridge.engines.base import GENERATE_STEMS, SEPARATE_STEMS, engine_names
from bridge.errors import InvalidArgument, Unauthorized, UnknownEngine
from bridge.jobs.spec import JobSpec
from bridge.server.paths import (
    InputPath,
    allowed_roots,
    check_input,
    input_path,
    out_text,
    output_folder,
    string_roots,
)
from bridge.server.values import as_bool, as_float, as_int, as_text, describe, number_of

PREFIX = "/stembridge"
PROTOCOL_VERSION = 1  # this contract's version, advertised over mDNS; raised when a change breaks clients
# Requests
PING, SEPARATE, GENERATE, VARY = (
    f"{PREFIX}/ping",
    f"{PREFIX}/separate",
    f"{PREFIX}/generate",
    f"{PREFIX}/vary",
)
CANCEL, STATUS, MODELS = f"{PREFIX}/cancel", f"{PREFIX}/status", f"{PREFIX}/models"
# Replies
PONG, ACCEPTED, PROGRESS = f"{PREFIX}/pong", f"{PREFIX}/accepted", f"{PREFIX}/progress"
DONE, ERROR, STATE = f"{PREFIX}/done", f"{PREFIX}/error", f"{PREFIX}/state"
MADE = f"{PREFIX}/made"
QUEUE = QUEUE_REPLY = f"{PREFIX}/queue"
MODELS_REPLY = MODELS
# The jam's requests (parsed in bridge.server.jam_protocol)
JAM_ADDRESSES = (f"{PREFIX}/jam/start", f"{PREFIX}/jam/cycle", f"{PREFIX}/jam/stop")

COMMANDS = ("ping", "separate", "generate", "vary", "cancel", "status", "models", "queue")
JOB_COMMANDS = ("separate", "generate", "vary")
STATES = ("queued", "running", "done", "failed", "cancelled", "unknown")
# What follows reply_port and request_id before the key/value pairs.
POSITIONAL = {"separate": "path", "generate": "stem", "vary": "path", "cancel": "job_id", "status": "job_id"}
MAX_ID_LENGTH = 128

Reply = tuple[str, list[Any]]


@dataclass(frozen=True)
class PendingJob:
    """A job request whose every check that needs no disk has passed; :func:`finish_job` does the rest.

    Attributes:
        kind: ``separate``, ``generate`` or ``vary``.
        options: the validated options, without ``out``, ``path`` and ``context``.
        inputs: the input files (``path``, or the ``context`` files in order), checked as text.
        out: the ``out`` option's text, None for the render folder.
        remote: the request came from another machine (its input files must lie inside the roots).
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[InputPath, ...] = ()
    out: str | None = None
    remote: bool = False


@dataclass(frozen=True)
class Request:
    """A parsed, validated request.

    Attributes:
        command: one of :data:`COMMANDS`.
        reply_port: the UDP port on the sender's address that replies go to.
        request_id: the id the client picked; replies carry it.
        target: for ``cancel`` and ``status``, the request_id of the job asked about.
        job: for ``separate``, ``generate`` and ``vary``, the job to queue (once its files are checked).
        pending: a job whose files are still to be checked (``parse_request(..., disk=False)``); pass it to
            :func:`finish_job`, or use :meth:`finished`.
    """

    command: str
    reply_port: int
    request_id: str
    target: str = ""
    job: JobSpec | None = None
    pending: PendingJob | None = None

    def finished(self, settings: Settings) -> Request:
        """This request with its files checked (blocking: it touches the disk)."""
        if self.pending is None:
            return self
        return replace(self, job=finish_job(self.pending, settings), pending=None)


def engine_option(value: Any) -> str:
    """The ``engine`` option: ``auto`` or a registered engine's name."""
    name = as_text("engine", value).strip().lower()
    if name != "auto" and name not in engine_names():
        raise UnknownEngine(f"unknown engine {name!r}; choose one of: auto, {', '.join(engine_names())}")
    return name


def model_option(value: Any) -> str:
    """A model by name only: a path could point the daemon at any checkpoint, and loading one runs its code."""
    name = as_text("model", value).strip()
    if (
        not name
        or any(c in name for c in "/\\:")
        or name.startswith((".", "~"))
        or name.lower().endswith((".th", ".yaml", ".yml", ".bin", ".pt", ".ckpt", ".safetensors"))
    ):
        raise InvalidArgument(
            f"model must be a model name such as htdemucs or musicgen-small, got {describe(value)}; "
            "for a checkpoint of your own, put it in the daemon's models folder as <models-dir>/<name>/ "
            "and send its name"
        )
    return name


def _precision(value: Any) -> str:
    text = as_text("precision", value).strip().lower()
    if text not in ("auto", "float32", "bfloat16"):
        raise InvalidArgument(f"precision must be auto, float32 or bfloat16, got {describe(value)}")
    return text


def _stem_list(values: list[Any], known: Sequence[str]) -> list[str]:
    stems: list[str] = []
    for value in values:
        for word in re.split(r"[\s,+/]+", as_text("stems", value).lower()):
            if word and word not in stems:
                stems.append(word)
    unknown = [s for s in stems if s not in known]
    if unknown or not stems:
        raise InvalidArgument(
            f"stems must name some of {', '.join(known)}, got {', '.join(unknown) or 'none'}"
        )
    return stems


def _format(value: Any) -> str:
    text = as_text("format", value).strip().lower().lstrip(".")
    text = {"aif": "aiff", "wave": "wav"}.get(text, text)
    if text not in ("wav", "aiff"):
        raise InvalidArgument(f"format must be wav or aiff, got {describe(value)}")
    return text


def _bit_depth(value: Any) -> int:
    depth = as_int("bitdepth", value, 16, 32)
    if depth not in (16, 24, 32):
        raise InvalidArgument(f"bitdepth must be 16, 24 or 32 (float), got {describe(value)}")
    return depth


def _time_signature(value: Any) -> str:
    return str(TimeSignature.parse(as_text("timesig", value)))


def bpm_option(value: Any) -> float:
    """A request's ``bpm``: a number between 20 and 400 (jam requests take it too)."""
    number = number_of(value)
    if number is None:
        raise InvalidArgument(f"bpm must be a number between 20 and 400, got {describe(value)}")
    return check_bpm(number)


def _bars(value: Any) -> int:
    number = number_of(value)
    if number is None:
        raise InvalidArgument(f"bars must be a whole number between 1 and 256, got {describe(value)}")
    return check_bars(number)


# --- options ----------------------------------------------------------------------------------------------

Converter = Callable[[Any], Any]
_OUTPUT: dict[str, tuple[str, Converter]] = {
    "engine": ("engine", engine_option),
    "model": ("model", model_option),
    "precision": ("precision", lambda v: _precision(v)),
    "format": ("format", _format),
    "bitdepth": ("bit_depth", _bit_depth),
    "samplerate": ("sample_rate", lambda v: as_int("samplerate", v, 8000, 192000)),
    "position": ("position", lambda v: as_float("position", v, 0.0, 1e7)),
}
_SEED = ("seed", lambda v: as_int("seed", v, 0, 2**63 - 1))
# A section of the input file (a trimmed DAW item): seconds into the file, and how long.
_SECTION = {
    "start": ("start", lambda v: as_float("start", v, 0.0, 86_400.0)),
    "length": ("length", lambda v: as_float("length", v, 0.001, 86_400.0)),
}
_VARIATIONS = ("variations", lambda v: as_int("variations", v, 1, 16))
_MIDI = ("midi", lambda v: as_bool("midi", v))  # also write each file's notes as a .mid
# For each job: protocol key -> (option name in the JobSpec, converter). ``out`` and the repeatable keys
# (``context``, ``stems``) are handled apart.
_KEYS: dict[str, dict[str, tuple[str, Converter]]] = {
    "separate": {
        **_OUTPUT,
        **_SECTION,
        "segment": ("segment", lambda v: as_float("segment", v, 0.1, 600.0)),
        "overlap": ("overlap", lambda v: as_float("overlap", v, 0.0, 0.99)),
        "shifts": ("shifts", lambda v: as_int("shifts", v, 0, 20)),
        "midi": _MIDI,
    },
    "generate": {
        **_OUTPUT,
        "prompt": ("prompt", lambda v: as_text("prompt", v)),
        "bpm": ("bpm", bpm_option),
        "bars": ("bars", _bars),
        "timesig": ("time_signature", _time_signature),
        "seed": _SEED,
        "variations": _VARIATIONS,
        "loudness": ("match_loudness", lambda v: as_bool("loudness", v)),
        "midi": _MIDI,
    },
    "vary": {
        **_OUTPUT,
        **_SECTION,
        "variations": _VARIATIONS,
        "strength": ("strength", lambda v: as_float("strength", v, 0.0, 1.0)),
        "seed": _SEED,
        "bpm": ("bpm", bpm_option),
        "bars": ("bars", _bars),
        "timesig": ("time_signature", _time_signature),
        "midi": _MIDI,
    },
}
_REPEATABLE = {"separate": ("stems",), "generate": ("context", "context_start")}
_ALIASES = {
    "time_signature": "timesig",
    "timesignature": "timesig",
    "bit_depth": "bitdepth",
    "sample_rate": "samplerate",
    "sr": "samplerate",
    "stem": "stems",
    "fmt": "format",
}


def known_keys(command: str) -> list[str]:
    """The option keys a command accepts, for messages and docs."""
    keys = {"token", *_KEYS.get(command, {}), *_REPEATABLE.get(command, ())}
    if command in JOB_COMMANDS:
        keys.add("out")
    return sorted(keys)


def pairs(command: str, items: Sequence[Any]) -> dict[str, Any]:
    """Read alternating key / value pairs: ``{key: value}``, or ``{key: [values]}`` for repeatable keys.

    Raises:
        InvalidArgument: an odd count, a key that is not a string, an unknown key, or a key given twice.
    """
    if len(items) % 2:
        last = items[-1]
        raise InvalidArgument(
            f"options must come as key value pairs; {describe(last)} has no value"
            if isinstance(last, str)
            else f"options must come as key value pairs, got {len(items)} values"
        )
    allowed = known_keys(command)
    repeatable = _REPEATABLE.get(command, ())
    out: dict[str, Any] = {}
    for raw_key, value in zip(items[0::2], items[1::2], strict=True):
        if not isinstance(raw_key, str):
            raise InvalidArgument(f"an option key must be a string, got {describe(raw_key)}")
        key = raw_key.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in allowed:
            raise InvalidArgument(
                f"unknown option {raw_key!r} for {command}; use {', '.join(allowed) or 'no options'}"
            )
        if key in repeatable:
            out.setdefault(key, []).append(value)
        elif key in out:
            raise InvalidArgument(f"option {key!r} given twice; give it once")
        else:
            out[key] = value
    return out


def check_token(given: Any, expected: str | None) -> None:
    """Raise Unauthorized unless the request carries the daemon's token (when it has one)."""
    if expected is None:
        return
    if given is None:
        raise Unauthorized("this daemon needs a token: add the pair `token <secret>` to every request")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(
            "wrong token; use the one the daemon was started with (--token or STEMBRIDGE_TOKEN)"
        )


# --- requests ---------------------------------------------------------------------------------------------


def command_of(address: str) -> str:
    """``/stembridge/separate`` -> ``separate``; raises InvalidArgument for an unknown address."""
    name = address[len(PREFIX) + 1 :] if address.startswith(PREFIX + "/") else ""
    if name not in COMMANDS:
        known = ", ".join([*(f"{PREFIX}/{c}" for c in COMMANDS), *JAM_ADDRESSES])
        raise InvalidArgument(f"unknown address {address!r}; use one of {known}")
    return name


def read_envelope(args: Sequence[Any]) -> tuple[int | None, str]:
    """The reply port and request id as far as they can be read, to answer a request that fails to parse.

    Returns:
        ``(port or None, request_id or "")``.
    """
    port: int | None = None
    if args:
        number = number_of(args[0])
        if number is not None and number == int(number) and 1 <= number <= 65535:
            port = int(number)
    request_id = ""
    if len(args) > 1:
        try:
            request_id = as_text("request_id", args[1], MAX_ID_LENGTH)
        except InvalidArgument:
            request_id = ""
    return port, request_id


def parse_envelope(args: Sequence[Any]) -> tuple[int, str]:
    if len(args) < 2:
        raise InvalidArgument(
            f"every request starts with reply_port and request_id, got {len(args)} argument(s)"
        )
    return as_int("reply_port", args[0], 1, 65535), as_text("request_id", args[1], MAX_ID_LENGTH)


def parse_request(
    address: str,
    args: Sequence[Any],
    settings: Settings,
    *,
    remote: bool = False,
    disk: bool = True,
    roots: Sequence[Path] | None = None,
) -> Request:
    """Parse and validate one request.

    Args:
        address: the OSC address, e.g. ``/stembridge/separate``.
        args: the OSC arguments as python-osc decodes them (int, float, str, bool, bytes, None...).
        settings: the render folder and allowed roots (for ``out``) and the token.
        remote: the request comes from another machine: its input files must lie inside the render folder or
            an allowed root too.
        disk: check the files now (blocking). With False, nothing touches the disk: a job request comes back
            with ``pending`` set instead of ``job``, for :meth:`Request.finished` to complete.
        roots: for ``remote``, the roots to check paths against as text (:func:`bridge.server.paths.string_roots`,
            which resolves them, by default).

    Raises:
        StembridgeError: a subclass whose ``code`` goes into the error reply.
    """
    command = command_of(address)
    reply_port, request_id = parse_envelope(args)
    rest = list(args[2:])
    positional_name = POSITIONAL.get(command)
    positional: Any = None
    if positional_name is not None:
        if not rest:
            raise InvalidArgument(
                f"{address} needs the {positional_name.replace('_', ' ')} after reply_port and request_id"
            )
        positional = rest.pop(0)
    options = pairs(command, rest)
    check_token(options.pop("token", None), settings.token)
    if command in ("cancel", "status"):
        return Request(command, reply_port, request_id, target=as_text("job_id", positional, MAX_ID_LENGTH))
    if command not in JOB_COMMANDS:
        return Request(command, reply_port, request_id)
    if remote and roots is None:
        roots = string_roots(settings)
    pending = pending_job(command, positional, options, roots if remote else None)
    request = Request(command, reply_port, request_id, pending=pending)
    return request.finished(settings) if disk else request


def pending_job(
    command: str, positional: Any, options: dict[str, Any], roots: Sequence[Path] | None = None
) -> PendingJob:
    """Validate a job's positional argument and options as far as it can be done without the disk.

    Args:
        command: ``separate``, ``generate`` or ``vary``.
        positional: the path (separate, vary) or the stem (generate).
        options: what :func:`pairs` read (the token taken out).
        roots: for a request from another machine, the roots its input files must lie inside as written.
    """
    out = out_text(options.pop("out", None))
    inputs: list[InputPath] = []
    spec: dict[str, Any] = {
        "format": "wav",
        "bit_depth": 24,
        "sample_rate": None,
        "position": None,
        "engine": None,
        "model": None,
    }
    if command == "generate":
        stem = as_text("stem", positional).strip().lower()
        if stem not in GENERATE_STEMS:
            raise InvalidArgument(f"stem must be one of {', '.join(GENERATE_STEMS)}, got {stem!r}")
        inputs = [input_path("context", v, roots) for v in options.pop("context", [])]
        starts = [as_float("context_start", v, 0.0, 86_400.0) for v in options.pop("context_start", [])]
        if starts and len(starts) != len(inputs):
            raise InvalidArgument(
                f"got {len(starts)} context_start value(s) for {len(inputs)} context file(s); "
                "give one per context, in the same order"
            )
        spec.update(
            stem=stem,
            prompt="",
            time_signature="4/4",
            seed=0,
            variations=1,
            match_loudness=True,
            context_start=starts or None,
        )
    else:
        inputs = [input_path("path", positional, roots)]
    if command == "separate":
        stems = options.pop("stems", None)
        spec["stems"] = None if stems is None else _stem_list(stems, SEPARATE_STEMS)
    if command == "vary":
        spec.update(variations=3, strength=0.5, seed=0, bpm=None, bars=None, time_signature="4/4")
    table = _KEYS[command]
    for key, value in options.items():
        name, convert = table[key]
        spec[name] = convert(value)
    if command == "generate" and ("bpm" not in spec or "bars" not in spec):
        missing = " and ".join(k for k in ("bpm", "bars") if k not in spec)
        raise InvalidArgument(f"generate needs {missing}, e.g. `bpm 120 bars 8`")
    return PendingJob(command, spec, tuple(inputs), out, roots is not None)


def finish_job(pending: PendingJob, settings: Settings) -> JobSpec:
    """Check a pending job's files on the disk and complete its options (``out``, ``path`` or ``context``).

    For a remote request the roots are checked, symlinks followed, before the files are looked at. Blocking:
    the server runs this in a worker thread.

    Raises:
        InvalidArgument: ``out`` or (remote) an input file leads outside the render folder and allowed roots.
        AudioReadError: an input file is missing, not a file, or not readable.
    """
    roots = allowed_roots(settings) if pending.remote else None
    options = {"out": output_folder(pending.out, settings), **pending.options}
    files = [check_input(item, roots) for item in pending.inputs]
    if pending.kind == "generate":
        options["context"] = files
    else:
        options["path"] = files[0]
    return JobSpec(pending.kind, options)


def encode_options(options: dict[str, Any]) -> list[Any]:
    """Flatten ``{key: value or [values]}`` into OSC key / value arguments; None values are left out."""
    out: list[Any] = []
    for key, value in options.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                out += [key, item]
    return out


# --- replies ----------------------------------------------------------------------------------------------


def pong(request_id: str, version: str, engines: Sequence[str]) -> Reply:
    return PONG, [request_id, version, *engines]


def accepted(request_id: str, position: int) -> Reply:
    return ACCEPTED, [request_id, int(position)]


def progress(request_id: str, fraction: float, stage: str) -> Reply:
    return PROGRESS, [request_id, float(fraction), stage or "working"]


def queue(
    request_id: str, running: bool, waiting: int, job: str, fraction: float, stage: str, yours_waiting: int
) -> Reply:
    """The queue at a glance: ``<running 0|1> <waiting> <your running job's id or ""> <fraction> <stage>
    <your waiting jobs>``."""
    return QUEUE_REPLY, [
        request_id,
        int(running),
        int(waiting),
        job,
        float(fraction),
        stage,
        int(yours_waiting),
    ]


def made(request_id: str, made_by: Sequence[str]) -> Reply:
    """Which engine and model made a job's files, and notes on it: sent right before ``done``."""
    return MADE, [request_id, *made_by]


def done(request_id: str, paths: Sequence[str]) -> Reply:
    return DONE, [request_id, *paths]


def error(request_id: str, code: str, message: str) -> Reply:
    return ERROR, [request_id, code, message]


def state(
    request_id: str,
    name: str,
    fraction: float | None = None,
    paths: Sequence[str] = (),
    code: str = "",
    message: str = "",
) -> Reply:
    """``/stembridge/state <id> <state> [<fraction>]``, then the paths of a done job or the code and message
    of a failed one."""
    args: list[Any] = [request_id, name]
    if name != "unknown":
        args.append(float(fraction or 0.0))
    if name == "done":
        args += list(paths)
    elif name == "failed":
        args += [code, message]
    return STATE, args


def models(request_id: str, rows: Sequence[tuple[str, str, str, bool, str]]) -> Reply:
    """``/stembridge/models <id>`` then ``<name> <engine> <tasks> <available 1|0> <reason>`` per model."""
    args: list[Any] = [request_id]
    for name, engine, tasks, available, reason in rows:
        args += [name, engine, tasks, 1 if available else 0, reason]
    return MODELS_REPLY, args
