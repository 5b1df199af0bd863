"""Request handling on the event loop: parse, validate, enqueue, reply. Never compute here.

Every message under ``/stembridge/`` gets a reply: the answer, or ``/stembridge/error <request_id> <code>
<message>`` when it cannot be served (as long as a reply port can be read from it). Other traffic and packets
that are not OSC get one rate-limited log line and no reply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from bridge import __version__
from bridge.config import Settings
from bridge.engines.base import engine_names
from bridge.errors import StembridgeError
from bridge.jobs.queue import JobEvent, JobQueue, JobStatus, ReplyTo
from bridge.server import protocol
from bridge.server.lograte import LogLimiter
from bridge.server.osc import PacketChannel, Replier, decode_packet

log = logging.getLogger(__name__)


def is_local(host: str) -> bool:
    """Whether a request from ``host`` comes from this machine (a loopback address, IPv4-mapped ones too)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def event_reply(event: JobEvent) -> protocol.Reply:
    """The OSC reply for a job event."""
    if event.kind == "progress":
        return protocol.progress(event.request_id, event.fraction, event.stage)
    if event.kind == "done":
        return protocol.done(event.request_id, event.paths)
    return protocol.error(event.request_id, event.code, event.message)


def state_reply(status: JobStatus) -> protocol.Reply:
    return protocol.state(
        status.request_id, status.state, status.fraction, status.paths, status.code, status.message
    )


def list_models(settings: Settings) -> list[tuple[str, str, str, bool, str]]:
    """``(name, engine, tasks, available, reason)`` per model; it imports engines, so never on the loop."""
    from bridge.catalog import model_statuses

    return [
        (s.entry.name, s.entry.engine, "/".join(s.entry.tasks), s.available, s.reason)
        for s in model_statuses(settings.models_dir)
    ]


class RequestHandler:
    """Turns packets into replies and queued jobs.

    Args:
        settings: the token, render folder and allowed roots requests are checked against.
        queue: where jobs go.
        replier: sends replies.
        logs: the rate-limited log.
    """

    def __init__(self, settings: Settings, queue: JobQueue, replier: Replier, logs: LogLimiter) -> None:
        self._settings = settings
        self._queue = queue
        self._replier = replier
        self._logs = logs

    def on_packet(self, data: bytes, host: str, port: int, channel: PacketChannel | None) -> None:
        """Handle one packet from ``host:port`` (``channel`` is the TCP stream it came on, None for UDP)."""
        try:
            messages = decode_packet(data)
        except StembridgeError as exc:
            self._logs.warning("malformed", "dropped a packet from %s:%d: %s", host, port, exc)
            return
        for address, args in messages:
            self._on_message(address, args, host, channel)

    def _on_message(self, address: str, args: list[Any], host: str, channel: PacketChannel | None) -> None:
        if not address.startswith(protocol.PREFIX + "/"):
            self._logs.log(
                logging.INFO,
                "foreign",
                "ignored OSC message %s from %s (not a stembridge address)",
                address[:80],
                host,
            )
            return
        try:
            request = protocol.parse_request(address, args, self._settings, remote=not is_local(host))
            self._serve(request, ReplyTo(host, request.reply_port, channel))
        except StembridgeError as exc:
            self._refuse(address, args, host, channel, exc.code, exc.message)
        except Exception as exc:  # a bug must cost one request, not the daemon
            self._logs.log(
                logging.ERROR, "internal", "error serving %s from %s", address, host, exc_info=True
            )
            message = f"internal error: {type(exc).__name__}; see the daemon log"
            self._refuse(address, args, host, channel, StembridgeError.code, message)

    def _refuse(
        self, address: str, args: list[Any], host: str, channel: PacketChannel | None, code: str, message: str
    ) -> None:
        """Log (rate-limited) and send an error reply, when there is a way to reply."""
        reply_port, request_id = protocol.read_envelope(args)
        self._logs.warning(
            f"rejected-{code}", "rejected %s %r from %s: %s (%s)", address, request_id, host, message, code
        )
        if reply_port is not None or channel is not None:
            self._replier.send(
                ReplyTo(host, reply_port or 0, channel), protocol.error(request_id, code, message)
            )

    def _serve(self, request: protocol.Request, to: ReplyTo) -> None:
        rid = request.request_id
        if request.command == "ping":
            self._replier.send(to, protocol.pong(rid, __version__, engine_names()))
        elif request.job is not None:
            submission = self._queue.submit(to.host, rid, request.job, to)
            if submission.new:
                log.info(
                    "job %r (%s) from %s queued at position %d",
                    rid,
                    request.command,
                    to.host,
                    submission.status.position,
                )
                self._replier.send(to, protocol.accepted(rid, submission.status.position))
            else:
                self._replier.send(to, state_reply(submission.status))
        elif request.command == "status":
            self._replier.send(to, state_reply(self._queue.status(to.host, request.target)))
        elif request.command == "cancel":
            status = self._queue.cancel(to.host, request.target)
            # rate-limited: a cancelled job's end is logged anyway, and repeats must not flood the log
            self._logs.log(
                logging.INFO, "cancel", "cancel of job %r from %s: %s", request.target, to.host, status.state
            )
            self._replier.send(to, state_reply(status))
        elif request.command == "models":
            self._models(rid, to)

    def _models(self, request_id: str, to: ReplyTo) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, list_models, self._settings)

        def finished(f: asyncio.Future[list[tuple[str, str, str, bool, str]]]) -> None:
            try:
                reply = protocol.models(request_id, f.result())
            except StembridgeError as exc:
                reply = protocol.error(request_id, exc.code, exc.message)
            except Exception as exc:  # importing an engine can fail in many ways; the client gets one line
                log.exception("listing models failed")
                reply = protocol.error(request_id, StembridgeError.code, f"could not list models: {exc}")
            self._replier.send(to, reply)

        future.add_done_callback(finished)
