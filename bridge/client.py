"""Talk to a running daemon: what ``stembridge request`` does, usable from Python too.

Requests travel by UDP from a socket whose port is the request's ``reply_port``. A request is sent again, with
the same request_id (which the daemon answers with the first job's state instead of running it twice), until
the daemon answers. While a job runs, a ``status`` request goes out whenever the daemon has been quiet for a
while, which also makes up for a lost ``done`` datagram; a daemon that stops answering is reported as such.

:class:`ResultFile` writes the outcome where scripts without sockets (Reaper's Lua) can poll for it.

The daemon replies with paths only (``/stembridge/done``); :func:`describe_output` reads the stem and the
variation back from the file name, so that ``stembridge request ... --json`` prints its outputs in the shape
``stembridge separate --json`` does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.errors import Cancelled, DaemonUnreachable, InvalidArgument, StembridgeError
from bridge.server import protocol
from bridge.server.daemon import read_port_file
from bridge.server.osc import decode_packet, encode_message

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9977


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class JobState:
    """A ``/stembridge/state`` reply."""

    request_id: str
    state: str
    fraction: float = 0.0
    paths: tuple[str, ...] = ()
    code: str = ""
    message: str = ""

    @classmethod
    def parse(cls, args: Sequence[Any]) -> JobState:
        rid, name = str(args[0]), str(args[1]) if len(args) > 1 else "unknown"
        fraction = float(args[2]) if len(args) > 2 else 0.0
        if name == "done":
            return cls(rid, name, fraction, tuple(str(a) for a in args[3:]))
        if name == "failed":
            rest = [str(a) for a in args[3:5]] + ["", ""]
            return cls(rid, name, fraction, (), rest[0], rest[1])
        return cls(rid, name, fraction)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"request_id": self.request_id, "state": self.state, "fraction": self.fraction}
        if self.state == "done":
            d.update(outputs_payload(self.paths))
        if self.state == "failed":
            d["error"] = {"code": self.code, "message": self.message}
        return d


@dataclass
class JobResult:
    request_id: str
    paths: list[str] = field(default_factory=list)
    #: what made the files (from the daemon's ``made`` reply; empty from an older daemon or a ``state`` reply)
    engine: str = ""
    model: str = ""
    warnings: list[str] = field(default_factory=list)


_NUMBERED = re.compile(r"^(.+)-(\d+)$")  # what the writer makes of a taken name: name-2.wav
_VARIATION = re.compile(r"^v(\d+)$")
_BARS = re.compile(r"^\d+bars$")
_BPM = re.compile(r"^\d+(\.\d+)?bpm$")


def describe_output(path: str) -> dict[str, Any]:
    """``{"stem", "path", "variation"}`` for a file the daemon wrote, read from its name.

    Names are ``<source>__<stem>[__<bpm>bpm__<bars>bars][__v<k>].<ext>`` (:func:`bridge.naming.output_name`),
    with ``-<n>`` added when the name was taken. They are read from the right, so a source name holding ``__``
    does not confuse them. ``stem`` is None for a name that does not follow the pattern; ``variation`` is None
    for a separated stem.

    Example:
        >>> describe_output("/r/My_Song__bass__120bpm__8bars__v2-3.wav")
        {'stem': 'bass', 'path': '/r/My_Song__bass__120bpm__8bars__v2-3.wav', 'variation': 2}
    """
    name = re.split(r"[/\\]", path)[-1]
    base = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    parts = base.split("__")
    numbered = _NUMBERED.match(parts[-1])
    if numbered and len(parts) > 1:
        parts[-1] = numbered.group(1)
    variation: int | None = None
    if len(parts) > 2 and (match := _VARIATION.match(parts[-1])):
        variation = int(match.group(1))
        parts.pop()
    for pattern in (_BARS, _BPM):
        if len(parts) > 2 and pattern.match(parts[-1]):
            parts.pop()
    stem = parts[-1] if len(parts) > 1 and parts[-1] else None
    return {"stem": stem, "path": path, "variation": variation}


def _base(path: str) -> str:
    name = re.split(r"[/\\]", path)[-1]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def is_midi(path: str) -> bool:
    """Whether a path the daemon reported is a MIDI file (``.mid``, any case) rather than audio."""
    return path.lower().endswith(".mid")


def outputs_payload(paths: Sequence[str]) -> dict[str, Any]:
    """What ``stembridge request`` reports about a done job's files: ``outputs`` as ``stembridge separate --json``
    has them (:func:`describe_output`, with ``midi`` for an audio file that has a .mid), and ``paths``, the same
    files as plain strings for simple scripts.

    The daemon lists the .mid files after the audio, in the order of the audio they belong to; each goes with
    the audio file of the same name (``x.wav`` -> ``x.mid``, or ``x-2.mid`` when that was taken), else with the
    next audio file that has none yet.
    """
    outputs = [describe_output(p) for p in paths if not is_midi(p)]
    waiting = list(outputs)
    for mid in (p for p in paths if is_midi(p)):
        base = re.split(r"[/\\]", mid)[-1][: -len(".mid")]
        owner = next(
            (o for o in waiting if re.fullmatch(re.escape(_base(o["path"])) + r"(-\d+)?", base)), None
        )
        owner = owner or (waiting[0] if waiting else None)
        if owner is not None:
            owner["midi"] = mid
            waiting.remove(owner)
    return {"outputs": outputs, "paths": list(paths)}


def new_request_id() -> str:
    return uuid.uuid4().hex[:12]


def remote_error(code: str, message: str) -> StembridgeError:
    """The :mod:`bridge.errors` class with that ``code`` (or a plain StembridgeError carrying it)."""
    pending: list[type[StembridgeError]] = [StembridgeError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message)
        pending += cls.__subclasses__()
    err = StembridgeError(message)
    err.code = code
    return err


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def locate(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    *,
    discover_timeout: float | None = None,
) -> Endpoint:
    """Where the daemon is: ``host``/``port`` when given, else what its port file says, else (with
    ``discover_timeout``) the daemon mDNS finds within that many seconds, else the settings.

    Raises:
        DaemonUnreachable: discovery was asked for and found no daemon.
        InvalidArgument: discovery found several daemons on other machines and none on this one.
    """
    info = read_port_file(settings.state_dir) or {}
    if discover_timeout is not None and not host and not port and not info:
        return discover(discover_timeout)
    host = host or str(info.get("host") or settings.host or DEFAULT_HOST)
    port = port or int(info.get("port") or settings.port or DEFAULT_PORT)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": DEFAULT_HOST}.get(host, host)
    return Endpoint(host, port)


def discover(timeout: float) -> Endpoint:
    """The daemon mDNS finds: the first on this machine (returned as soon as it answers), else the only one.

    Raises:
        DaemonUnreachable: none answered within ``timeout`` seconds.
        InvalidArgument: several on other machines and none on this one.
    """
    from bridge.server.discovery import browse

    found = browse(timeout, until=lambda daemons: any(_is_loopback(d.host) for d in daemons))
    local = [d for d in found if _is_loopback(d.host)]
    if local or len(found) == 1:
        chosen = (local or found)[0]
        return Endpoint(chosen.host, chosen.port)
    if not found:
        raise DaemonUnreachable(
            f"no stembridge daemon answered over mDNS within {timeout:g} s; start one with `stembridge "
            f"serve` (without --no-discovery), or pass --host and --port"
        )
    listed = "; ".join(f"{d.name} at {d.host}:{d.port}" for d in found)
    raise InvalidArgument(f"{len(found)} daemons answered ({listed}); pass --host and --port to choose one")


class Client:
    """Sends requests to one daemon and waits for the answers.

    Args:
        endpoint: the daemon's address.
        token: sent as ``token <secret>`` with every request when given.
        answer_timeout: how long to wait, re-sending, for the daemon to acknowledge a request.
        resend_interval: the pause between re-sends.
        quiet_poll: while a job runs, ask for its status after this many quiet seconds.
        max_unanswered_polls: give up after this many status requests in a row get no answer.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        token: str | None = None,
        *,
        answer_timeout: float = 3.0,
        resend_interval: float = 0.5,
        quiet_poll: float = 5.0,
        max_unanswered_polls: int = 3,
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.answer_timeout = answer_timeout
        self.resend_interval = resend_interval
        self.quiet_poll = quiet_poll
        self.max_unanswered_polls = max_unanswered_polls
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        local = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        self._sock.bind((local if _is_loopback(endpoint.host) else wildcard, 0))
        self.reply_port = int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- wire ---------------------------------------------------------------------------------------------

    def _args(self, request_id: str, positional: Sequence[Any], options: dict[str, Any]) -> list[Any]:
        extra = {"token": self.token} if self.token else {}
        return [self.reply_port, request_id, *positional, *protocol.encode_options({**options, **extra})]

    def send(self, address: str, args: Sequence[Any]) -> None:
        try:
            self._sock.sendto(encode_message(address, args), (self.endpoint.host, self.endpoint.port))
        except OSError as exc:
            raise DaemonUnreachable(
                f"cannot send to {self.endpoint}: {exc}; check --host and --port"
            ) from exc

    def receive(self, timeout: float) -> tuple[str, list[Any]] | None:
        """The next well-formed message within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._sock.settimeout(left)
            try:
                data, _ = self._sock.recvfrom(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:  # Windows reports an earlier ICMP "port unreachable" here
                continue
            try:
                messages = decode_packet(data)
            except StembridgeError:
                continue
            if messages:
                return messages[0]

    def _unreachable(self, what: str) -> DaemonUnreachable:
        return DaemonUnreachable(
            f"{what} from a stembridge daemon at {self.endpoint}; start one with `stembridge serve` "
            f"(or pass --host/--port)"
        )

    # --- one-shot requests --------------------------------------------------------------------------------

    def ask(
        self,
        command: str,
        positional: Sequence[Any] = (),
        options: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ) -> tuple[str, list[Any]]:
        """Send a request and return the first reply carrying its id (re-sending until one comes).

        Raises:
            StembridgeError: the daemon replied with an error (the class matching its code).
            DaemonUnreachable: no reply within ``answer_timeout``.
        """
        rid = request_id or new_request_id()
        address = f"{protocol.PREFIX}/{command}"
        args = self._args(rid, positional, options or {})
        wanted = positional[0] if command in ("status", "cancel") and positional else rid
        start = time.monotonic()
        while time.monotonic() - start < self.answer_timeout:
            self.send(address, args)
            resend_at = time.monotonic() + self.resend_interval
            while (reply := self.receive(resend_at - time.monotonic())) is not None:
                reply_address, reply_args = reply
                if reply_args and reply_args[0] == rid and reply_address == protocol.ERROR:
                    raise remote_error(str(reply_args[1]), str(reply_args[2]))
                if reply_args and reply_args[0] in (rid, wanted):
                    return reply
        raise self._unreachable(f"no answer within {self.answer_timeout:g} s")

    def ping(self) -> tuple[str, list[str]]:
        """The daemon's version and engine names."""
        _, args = self.ask("ping")
        return str(args[1]), [str(a) for a in args[2:]]

    def status(self, job_id: str) -> JobState:
        return JobState.parse(self.ask("status", [job_id])[1])

    def cancel(self, job_id: str) -> JobState:
        return JobState.parse(self.ask("cancel", [job_id])[1])

    def queue(self) -> dict[str, Any]:
        """The daemon's queue: ``{"running", "waiting", "job", "fraction", "stage", "yours_waiting"}``."""
        _, args = self.ask("queue")
        return {
            "running": bool(args[1]),
            "waiting": int(args[2]),
            "job": str(args[3]),
            "fraction": float(args[4]),
            "stage": str(args[5]),
            "yours_waiting": int(args[6]),
        }

    def models(self) -> list[dict[str, Any]]:
        _, args = self.ask("models")
        rows = args[1:]
        return [
            {
                "name": str(rows[i]),
                "engine": str(rows[i + 1]),
                "tasks": str(rows[i + 2]).split("/"),
                "available": bool(rows[i + 3]),
                "reason": str(rows[i + 4]),
            }
            for i in range(0, len(rows) - 4, 5)
        ]

    # --- jobs ---------------------------------------------------------------------------------------------

    def run(
        self,
        command: str,
        positional: Sequence[Any],
        options: dict[str, Any],
        *,
        request_id: str | None = None,
        on_accepted: Callable[[int], None] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
    ) -> JobResult:
        """Run a job (``separate``, ``generate``, ``vary``) and wait for its end.

        Ctrl-C sends a cancel for the job before re-raising KeyboardInterrupt.

        Raises:
            StembridgeError: the job failed (the class matching the error code; Cancelled when cancelled).
            DaemonUnreachable: no answer, or the daemon stopped answering.
        """
        rid = request_id or new_request_id()
        address = f"{protocol.PREFIX}/{command}"
        args = self._args(rid, positional, options)
        poll_id = f"{rid}#status"
        self.send(address, args)
        start = last_heard = time.monotonic()
        next_send = start + self.resend_interval
        acked, unanswered = False, 0
        made_by: list[str] = []
        try:
            while True:
                now = time.monotonic()
                wake = next_send if not acked else last_heard + self.quiet_poll
                reply = self.receive(max(0.01, wake - now))
                now = time.monotonic()
                if reply is not None and reply[1] and reply[1][0] in (rid, poll_id):
                    acked, last_heard, unanswered = True, now, 0
                    if reply[0] == protocol.MADE:
                        made_by = [str(a) for a in reply[1][1:]]
                        continue
                    result = self._job_reply(rid, reply[0], reply[1], on_accepted, on_progress)
                    if result is not None:
                        if made_by:
                            result.engine, result.model = made_by[0], made_by[1] if len(made_by) > 1 else ""
                            result.warnings = made_by[2:]
                        return result
                elif not acked:
                    if now - start > self.answer_timeout:
                        raise self._unreachable(f"no answer within {self.answer_timeout:g} s")
                    if now >= next_send:
                        self.send(address, args)
                        next_send = now + self.resend_interval
                elif now - last_heard >= self.quiet_poll:
                    if unanswered >= self.max_unanswered_polls:
                        raise self._unreachable(f"job {rid}: no answer to {unanswered} status requests")
                    self.send(f"{protocol.PREFIX}/status", self._args(poll_id, [rid], {}))
                    unanswered, last_heard = unanswered + 1, now
        except KeyboardInterrupt:
            try:
                self.send(f"{protocol.PREFIX}/cancel", self._args(f"{rid}#cancel", [rid], {}))
            except DaemonUnreachable:
                pass  # the daemon is gone; nothing left to cancel
            raise

    @staticmethod
    def _job_reply(
        rid: str,
        address: str,
        args: list[Any],
        on_accepted: Callable[[int], None] | None,
        on_progress: Callable[[float, str], None] | None,
    ) -> JobResult | None:
        if address == protocol.ACCEPTED and on_accepted is not None:
            on_accepted(int(args[1]))
        elif address == protocol.PROGRESS and on_progress is not None:
            on_progress(float(args[1]), str(args[2]))
        elif address == protocol.DONE:
            return JobResult(rid, [str(a) for a in args[1:]])
        elif address == protocol.ERROR:
            raise remote_error(str(args[1]), str(args[2]))
        elif address == protocol.STATE:
            state = JobState.parse(args)
            if state.state == "done":
                return JobResult(rid, list(state.paths))
            if state.state == "failed":
                raise remote_error(state.code, state.message)
            if state.state == "cancelled":
                raise Cancelled(f"job {rid} was cancelled")
            if state.state == "unknown":
                raise StembridgeError(
                    f"the daemon does not know job {rid}; was it started with another --state-dir?"
                )
        return None


class ResultFile:
    """The outcome of a request as files a script can poll: JSON in ``path`` (written atomically, once, at the
    end) and ``<fraction> <stage>`` lines appended to ``path.progress`` as the job goes.

    Stale files from an earlier request are removed when this is created.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress")
        self.path.unlink(missing_ok=True)
        self.progress_path.write_text("", encoding="utf-8")

    def progress(self, fraction: float, stage: str) -> None:
        with open(self.progress_path, "a", encoding="utf-8") as fh:
            fh.write(f"{fraction:.3f} {stage}\n")

    def write(self, payload: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def error(self, request_id: str, code: str, message: str) -> None:
        self.write({"request_id": request_id, "status": "error", "error": {"code": code, "message": message}})
