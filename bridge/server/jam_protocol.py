"""The jam's part of the OSC contract: ``/stembridge/jam/start``, ``cycle`` and ``stop``, parsed and validated
without the disk, and the replies. No sockets and no samples here (docs/PROTOCOL.md, "Jam", is the contract).

Requests share the envelope of every request (``<reply_port> <request_id>``), the token rule and the path rules
(:mod:`bridge.server.paths`): a cycle's file is checked as text here and on the disk off the event loop; the
``out`` folder likewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.audio.timing import Grid, TimeSignature
from bridge.config import Settings
from bridge.engines.base import GENERATE_STEMS
from bridge.errors import InvalidArgument
from bridge.server import protocol
from bridge.server.paths import InputPath, input_path, out_text
from bridge.server.values import as_float, as_int, as_text, describe

JAM = f"{protocol.PREFIX}/jam"
START, CYCLE, STOP = protocol.JAM_ADDRESSES
STARTED, ADVICE, PART = f"{JAM}/started", f"{JAM}/advice", f"{JAM}/part"
LATE, STOPPED = f"{JAM}/late", f"{JAM}/stopped"
MAX_INDEX = 2**31 - 1
ON_LATE = ("repeat", "rest")

Reply = protocol.Reply


@dataclass(frozen=True)
class JamStart:
    """A validated ``jam/start``.

    Attributes:
        options: keyword arguments for :class:`bridge.jam.options.JamOptions` (stem, bars, bpm...).
        engine: the engine's name (``builtin`` unless the request names another).
        model: the model's name, None for the engine's default.
        out: the ``out`` option's text, None for the render folder (checked on the disk later).
    """

    reply_port: int
    request_id: str
    options: dict[str, Any] = field(default_factory=dict)
    engine: str = "builtin"
    model: str | None = None
    out: str | None = None


@dataclass(frozen=True)
class JamCycle:
    """A validated ``jam/cycle``: the humans' audio of cycle ``index`` in the file ``path`` (checked as text)."""

    reply_port: int
    request_id: str
    session: str
    index: int
    path: InputPath
    bpm: float | None = None


@dataclass(frozen=True)
class JamStop:
    reply_port: int
    request_id: str
    session: str


JamRequest = JamStart | JamCycle | JamStop


def _on_late(value: Any) -> str:
    text = as_text("on_late", value).strip().lower()
    if text not in ON_LATE:
        raise InvalidArgument(f"on_late must be repeat or rest, got {describe(value)}")
    return text


# Protocol key -> (JamOptions field, converter).
_START_KEYS: dict[str, tuple[str, Any]] = {
    "bars": ("bars", lambda v: as_int("bars", v, 1, 16)),
    "bpm": ("bpm", protocol.bpm_option),
    "timesig": ("time_signature", lambda v: TimeSignature.parse(as_text("timesig", v))),
    "seed": ("seed", lambda v: as_int("seed", v, 0, 2**63 - 1)),
    "prompt": ("prompt", lambda v: as_text("prompt", v)),
    "lag": ("lag", lambda v: as_int("lag", v, 0, 2)),
    "lead": ("lead", lambda v: as_float("lead", v, 1e-3, 64.0)),
    "memory": ("memory", lambda v: as_int("memory", v, 0, 8)),
    "samplerate": ("sample_rate", lambda v: as_int("samplerate", v, 8000, 192000)),
    "on_late": ("on_late", _on_late),
}
_ALIASES = {
    "time_signature": "timesig",
    "timesignature": "timesig",
    "sample_rate": "samplerate",
    "sr": "samplerate",
    "onlate": "on_late",
}
_KEYS = {
    "start": sorted({*_START_KEYS, "engine", "model", "out", "token"}),
    "cycle": ["bpm", "token"],
    "stop": ["token"],
}


def _pairs(command: str, items: Sequence[Any]) -> dict[str, Any]:
    """Alternating key / value pairs (see :func:`bridge.server.protocol.pairs`), for a jam command."""
    if len(items) % 2:
        last = items[-1]
        raise InvalidArgument(
            f"options must come as key value pairs; {describe(last)} has no value"
            if isinstance(last, str)
            else f"options must come as key value pairs, got {len(items)} values"
        )
    allowed = _KEYS[command]
    out: dict[str, Any] = {}
    for raw_key, value in zip(items[0::2], items[1::2], strict=True):
        if not isinstance(raw_key, str):
            raise InvalidArgument(f"an option key must be a string, got {describe(raw_key)}")
        key = raw_key.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in allowed:
            raise InvalidArgument(f"unknown option {raw_key!r} for jam/{command}; use {', '.join(allowed)}")
        if key in out:
            raise InvalidArgument(f"option {key!r} given twice; give it once")
        out[key] = value
    return out


def _positional(address: str, rest: list[Any], names: Sequence[str]) -> list[Any]:
    if len(rest) < len(names):
        missing = " and the ".join(names[len(rest) :])
        raise InvalidArgument(f"{address} needs the {missing} after reply_port and request_id")
    return [rest.pop(0) for _ in names]


def cycle_seconds(options: dict[str, Any]) -> tuple[int, float]:
    """A cycle's length in samples and in seconds for jam options (the defaults filled in)."""
    grid = Grid(
        float(options.get("bpm", 120.0)),
        options.get("time_signature", TimeSignature(4, 4)),
        int(options.get("sample_rate", 44100)),
    )
    samples = grid.samples_for_bars(int(options.get("bars", 4)))
    return samples, samples / grid.sample_rate


def parse_jam(
    address: str,
    args: Sequence[Any],
    settings: Settings,
    *,
    remote: bool = False,
    roots: Sequence[Path] | None = None,
) -> JamRequest:
    """Parse and validate one jam request without touching the disk.

    Args:
        address: ``/stembridge/jam/start``, ``cycle`` or ``stop``.
        args: the OSC arguments.
        settings: the token.
        remote: the request comes from another machine: a cycle's file must lie inside ``roots`` as written.
        roots: the roots a remote path is checked against as text (:func:`bridge.server.paths.string_roots`).

    Raises:
        StembridgeError: a subclass whose ``code`` goes into the error reply.
    """
    if address not in protocol.JAM_ADDRESSES:
        raise InvalidArgument(f"unknown address {address!r}; use one of {', '.join(protocol.JAM_ADDRESSES)}")
    command = address.rsplit("/", 1)[1]
    reply_port, request_id = protocol.parse_envelope(args)
    rest = list(args[2:])
    if command == "start":
        (stem,) = _positional(address, rest, ["stem"])
        options = _pairs(command, rest)
        protocol.check_token(options.pop("token", None), settings.token)
        return _start(reply_port, request_id, stem, options)
    session, *more = _positional(
        address, rest, ["session"] + (["index", "path"] if command == "cycle" else [])
    )
    options = _pairs(command, rest)
    protocol.check_token(options.pop("token", None), settings.token)
    name = as_text("session", session, protocol.MAX_ID_LENGTH)
    if command == "stop":
        return JamStop(reply_port, request_id, name)
    index = as_int("index", more[0], 0, MAX_INDEX)
    path = input_path("path", more[1], roots if remote else None)
    bpm = protocol.bpm_option(options["bpm"]) if "bpm" in options else None
    return JamCycle(reply_port, request_id, name, index, path, bpm)


def _start(reply_port: int, request_id: str, stem_value: Any, options: dict[str, Any]) -> JamStart:
    stem = as_text("stem", stem_value).strip().lower()
    if stem not in GENERATE_STEMS:
        raise InvalidArgument(f"stem must be one of {', '.join(GENERATE_STEMS)}, got {stem!r}")
    out = out_text(options.pop("out", None))
    engine = protocol.engine_option(options.pop("engine", "builtin"))
    model = protocol.model_option(options.pop("model")) if "model" in options else None
    jam: dict[str, Any] = {"stem": stem}
    for key, value in options.items():
        name, convert = _START_KEYS[key]
        jam[name] = convert(value)
    samples, seconds = cycle_seconds(jam)
    lead = float(jam.get("lead", 1.0))
    lead_seconds = lead * 60.0 / float(jam.get("bpm", 120.0))
    if lead_seconds >= seconds:
        raise InvalidArgument(
            f"lead must be shorter than the cycle ({seconds:g} s, {samples} samples), got {lead:g} quarter "
            f"notes ({lead_seconds:g} s); send a smaller lead or more bars"
        )
    return JamStart(reply_port, request_id, jam, engine, model, out)


# --- replies ----------------------------------------------------------------------------------------------


def started(request_id: str, session: str, estimate: float) -> Reply:
    return STARTED, [request_id, session, float(estimate)]


def advice(session: str, text: str) -> Reply:
    return ADVICE, [session, text]


def part(session: str, play_index: int, path: str, seconds_spent: float) -> Reply:
    return PART, [session, int(play_index), path, float(seconds_spent)]


def late(session: str, play_index: int, ms_late: float) -> Reply:
    return LATE, [session, int(play_index), float(ms_late)]


def stopped(session: str, path: str) -> Reply:
    return STOPPED, [session, path]
