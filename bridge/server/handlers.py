"""Request handling on the event loop: parse, validate, enqueue, reply. Never compute here, never wait on a disk.

Every message under ``/stembridge/`` gets a reply: the answer, or ``/stembridge/error <request_id> <code>
<message>`` when it cannot be served (as long as a reply port can be read from it). Other traffic and packets
that are not OSC get one rate-limited log line and no reply.

A job request is validated in two steps: everything that needs no disk at once, then its files (exist, readable,
inside the allowed roots) in a worker thread with a timeout (:mod:`bridge.server.offload`), because a stat on a
sleeping network volume can take seconds and ``ping``, ``status`` and progress must not wait for it. Only then
is the job queued and ``accepted`` sent, so a missing file still gets an ``error`` and no ``accepted``. While its
files are being checked, ``status`` reports the job ``queued`` and ``cancel`` drops it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

from bridge import __version__
from bridge.config import Settings
from bridge.engines.base import engine_names
from bridge.errors import AudioReadError, Cancelled, StembridgeError
from bridge.jobs.queue import CANCEL_MESSAGE, JobEvent, JobQueue, JobStatus, ReplyTo
from bridge.jobs.spec import JobSpec
from bridge.server import jam_protocol, protocol
from bridge.server.jam import JamService
from bridge.server.lograte import LogLimiter
from bridge.server.offload import Offloader
from bridge.server.osc import PacketChannel, Replier, decode_packet
from bridge.server.paths import string_roots

log = logging.getLogger(__name__)

FILE_CHECK_TIMEOUT_S = 15.0  # a disk that has not answered by then is taken as unreachable
FILE_CHECK_THREADS = 8  # file checks run at once (some maybe stuck on a dead disk); more wait their turn


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
    if event.kind == "made":
        return protocol.made(event.request_id, event.made_by)
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
        (s.entry.name, s.entry.engine, "/".join(s.entry.tasks), s.available, s.short_reason)
        for s in model_statuses(settings.models_dir)
    ]


class RequestHandler:
    """Turns packets into replies and queued jobs.

    Args:
        settings: the token, render folder and allowed roots requests are checked against.
        queue: where jobs go.
        replier: sends replies.
        logs: the rate-limited log.
        jam: serves the jam requests (:mod:`bridge.server.jam`); without it they are refused.
        file_check_timeout: how long a job request's file checks may take before it is refused.
    """

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        replier: Replier,
        logs: LogLimiter,
        *,
        jam: JamService | None = None,
        file_check_timeout: float = FILE_CHECK_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._jam = jam
        self._queue = queue
        self._replier = replier
        self._logs = logs
        self._file_check_timeout = file_check_timeout
        self._roots = string_roots(settings)  # resolved once here, before the daemon serves
        self._offload = Offloader(FILE_CHECK_THREADS, "stembridge-file-check")
        self._checking: dict[tuple[str, str], int] = {}  # (client, request_id) -> file checks under way
        self._cancelled: set[tuple[str, str]] = set()  # cancelled while their files were being checked
        self._tasks: set[asyncio.Task[None]] = set()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the job requests whose files are being checked have been answered (``timeout``: at most
        that many seconds)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def on_packet(self, data: bytes, host: str, port: int, channel: PacketChannel | None) -> bool:
        """Handle one packet from ``host:port`` (``channel`` is the TCP stream it came on, None for UDP).

        Returns:
            Whether it held a request that was accepted: parsed and its token right (a job whose files are
            then refused counts; garbage, foreign addresses and a wrong or missing token do not). A TCP
            connection counts as active only for these (:mod:`bridge.server.tcp`).
        """
        try:
            messages = decode_packet(data)
        except StembridgeError as exc:
            self._logs.warning("malformed", "dropped a packet from %s:%d: %s", host, port, exc)
            return False
        accepted = False
        for address, args in messages:
            accepted = self._on_message(address, args, host, channel) or accepted
        return accepted

    def _on_message(self, address: str, args: list[Any], host: str, channel: PacketChannel | None) -> bool:
        if not address.startswith(protocol.PREFIX + "/"):
            self._logs.log(
                logging.INFO,
                "foreign",
                "ignored OSC message %s from %s (not a stembridge address)",
                address[:80],
                host,
            )
            return False
        request: protocol.Request | None = None
        try:
            remote = not is_local(host)
            if address in protocol.JAM_ADDRESSES and self._jam is not None:
                received = time.monotonic()  # a cycle's budget counts from here
                jam = jam_protocol.parse_jam(address, args, self._settings, remote=remote, roots=self._roots)
                self._jam.handle(jam, ReplyTo(host, jam.reply_port, channel), received, remote)
                return True  # parsed, its token right: the connection is in use
            request = protocol.parse_request(
                address, args, self._settings, remote=remote, disk=False, roots=self._roots
            )
            self._serve(request, ReplyTo(host, request.reply_port, channel))
        except StembridgeError as exc:
            reply_port, request_id = protocol.read_envelope(args)
            to = ReplyTo(host, reply_port or 0, channel)
            self._refuse(address, request_id, to, exc.code, exc.message, replyable=reply_port is not None)
        except Exception as exc:  # a bug must cost one request, not the daemon
            self._logs.log(
                logging.ERROR, "internal", "error serving %s from %s", address, host, exc_info=True
            )
            reply_port, request_id = protocol.read_envelope(args)
            to = ReplyTo(host, reply_port or 0, channel)
            message = f"internal error: {type(exc).__name__}; see the daemon log"
            self._refuse(
                address, request_id, to, StembridgeError.code, message, replyable=reply_port is not None
            )
        return request is not None  # parsed, token checked: accepted, even if serving it then failed (busy)

    def _refuse(
        self, address: str, request_id: str, to: ReplyTo, code: str, message: str, *, replyable: bool = True
    ) -> None:
        """Log (rate-limited) and send an error reply, when there is a way to reply."""
        self._logs.warning(
            f"rejected-{code}", "rejected %s %r from %s: %s (%s)", address, request_id, to.host, message, code
        )
        if replyable or to.channel is not None:
            self._replier.send(to, protocol.error(request_id, code, message))

    def _serve(self, request: protocol.Request, to: ReplyTo) -> None:
        rid = request.request_id
        if request.command == "ping":
            self._replier.send(to, protocol.pong(rid, __version__, engine_names()))
        elif request.pending is not None:
            self._check_files(request, to)
        elif request.job is not None:
            self._submit(request.command, request.request_id, request.job, to)
        elif request.command == "status":
            status = self._queue.status(to.host, request.target)
            if status.state == "unknown" and (to.host, request.target) in self._checking:
                status = JobStatus(request.target, "queued")
            self._replier.send(to, state_reply(status))
        elif request.command == "cancel":
            key = (to.host, request.target)
            status = self._queue.cancel(to.host, request.target)
            if status.state == "unknown" and key in self._checking:
                self._cancelled.add(key)  # dropped when its file checks end, with an error to its client
                status = JobStatus(request.target, "cancelled", code=Cancelled.code, message=CANCEL_MESSAGE)
            # rate-limited: a cancelled job's end is logged anyway, and repeats must not flood the log
            self._logs.log(
                logging.INFO, "cancel", "cancel of job %r from %s: %s", request.target, to.host, status.state
            )
            self._replier.send(to, state_reply(status))
        elif request.command == "models":
            self._models(rid, to)
        elif request.command == "queue":
            q = self._queue.overview(to.host)
            self._replier.send(
                to, protocol.queue(rid, q.running, q.waiting, q.job, q.fraction, q.stage, q.yours_waiting)
            )

    def _submit(self, command: str, rid: str, job: JobSpec, to: ReplyTo) -> None:
        """Queue a job whose files are checked; reply ``accepted``, or the first job's state to a repeat."""
        submission = self._queue.submit(to.host, rid, job, to)
        if submission.new and isinstance(to.channel, PacketChannel):
            to.channel.job_started()  # ended when the daemon sends the job's last reply on it
        if submission.new:
            log.info(
                "job %r (%s) from %s queued at position %d",
                rid,
                command,
                to.host,
                submission.status.position,
            )
            self._replier.send(to, protocol.accepted(rid, submission.status.position))
        else:
            self._replier.send(to, state_reply(submission.status))

    def _check_files(self, request: protocol.Request, to: ReplyTo) -> None:
        """Check a job request's files in a worker thread; submit it when they pass, else reply the error."""
        task = asyncio.get_running_loop().create_task(self._finish(request, to))
        key = (to.host, request.request_id)
        self._checking[key] = self._checking.get(key, 0) + 1
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, request: protocol.Request, to: ReplyTo) -> None:
        key = (to.host, request.request_id)
        address = f"{protocol.PREFIX}/{request.command}"
        try:
            try:
                checked = await self._offload.run(self._file_check_timeout, request.finished, self._settings)
            except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
                raise AudioReadError(
                    f"checking the input files took longer than {self._file_check_timeout:g} s; is their disk "
                    f"asleep or unreachable? send the request again when it answers"
                ) from None
            if key in self._cancelled:
                raise Cancelled(CANCEL_MESSAGE)
            if checked.job is not None:
                self._submit(request.command, request.request_id, checked.job, to)
        except StembridgeError as exc:
            self._refuse(address, request.request_id, to, exc.code, exc.message)
        except Exception as exc:  # a bug must cost one request, not the daemon
            self._logs.log(
                logging.ERROR, "internal", "error serving %s from %s", address, to.host, exc_info=True
            )
            message = f"internal error: {type(exc).__name__}; see the daemon log"
            self._refuse(address, request.request_id, to, StembridgeError.code, message)
        finally:
            left = self._checking.pop(key, 1) - 1
            if left > 0:
                self._checking[key] = left
            else:
                self._cancelled.discard(key)

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
