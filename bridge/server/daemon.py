"""The daemon's lifecycle: start (journal, worker, sockets, port file), serve, graceful shutdown.

``serve(settings)`` is what ``stembridge serve`` calls: it runs until SIGINT, SIGTERM or SIGHUP (its terminal
closed), then stops accepting requests, cancels the running job at its next chunk (and the queued ones at once,
each with an error reply; the job's temp files go with it), flushes the journal, withdraws the mDNS
advertisement and removes the port file. :class:`DaemonThread` runs the same daemon on a background thread, for
tests, benchmarks and embedding.

On start, jobs that a crash cut off are reported failed (``interrupted``): the files of a job cut off while
publishing are removed (its journaled plan says which), and the temp files and claims that dead writers left in
the output folders of those jobs are removed (:mod:`bridge.jobs.leftovers`).

Separations are served from a content-hash cache in ``<state_dir>/cache`` when the same audio was separated
the same way before (:mod:`bridge.jobs.cache`; ``cache_max_mb`` bounds it, 0 turns it off).

With ``watch_dir`` set (``stembridge serve --watch DIR``), a hot folder watcher (:mod:`bridge.server.hotfolder`)
feeds what is dropped into DIR to the same queue; it starts after the recovery and stops around the queue's
shutdown, so a drop whose job the shutdown cancels stays for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from bridge import __version__
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.jobs.cache import ResultCache
from bridge.jobs.journal import FILE_NAME as JOURNAL_FILE
from bridge.jobs.journal import JobRecord, Journal
from bridge.jobs.leftovers import remove_temp_files, undo_publish
from bridge.jobs.queue import JobEvent, JobQueue, ReplyTo
from bridge.jobs.runner import pipeline_runner
from bridge.jobs.spec import Runner
from bridge.server import protocol
from bridge.server.discovery import Advertiser
from bridge.server.handlers import RequestHandler, event_reply
from bridge.server.hotfolder import HotFolder, prepare_folders
from bridge.server.jam import JamService, SessionFactory
from bridge.server.lograte import LogLimiter
from bridge.server.osc import PacketChannel, Replier, UdpEndpoint
from bridge.server.tcp import Connections, TcpLimits, start_tcp_server

log = logging.getLogger(__name__)

PORT_FILE = "daemon.json"
LOCK_FILE = "daemon.lock"
CACHE_DIR = "cache"
JOURNAL_MAX_AGE_S = 30 * 24 * 3600.0


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_network_policy(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"--host {settings.host} is reachable from other machines; refusing to start without a token: "
            f"pass --token SECRET (or set STEMBRIDGE_TOKEN), and add `token SECRET` to every request"
        )


def read_port_file(state_dir: Path) -> dict[str, Any] | None:
    """What a running daemon wrote about itself (host, port, pid, version), or None."""
    try:
        data = json.loads((state_dir / PORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _lock_state_dir(state_dir: Path) -> IO[str]:
    handle = open(state_dir / LOCK_FILE, "a+", encoding="utf-8")  # held open until shutdown
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock, the port still cannot be bound twice
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        other = read_port_file(state_dir) or {}
        where = f" (pid {other.get('pid')}, port {other.get('port')})" if other else ""
        raise ConfigError(
            f"another stembridge daemon{where} is using the state folder {state_dir}; stop it, or pass "
            f"another --state-dir"
        ) from None
    return handle


def discovery_wanted(settings: Settings, discovery: bool | None) -> bool:
    """``discovery`` when given, else the settings' ``discovery`` (on when the settings have no such field)."""
    return settings.discovery if discovery is None else discovery


def _remove_leftovers(cut_off: list[JobRecord]) -> None:
    for rec in cut_off:
        if rec.plan:
            unpublished = undo_publish(rec.plan)
            log.warning(
                "job %r was cut off while publishing its files; removed the %d it had published%s",
                rec.request_id,
                len(unpublished),
                "".join(f"\n  {p}" for p in unpublished),
            )
    folders = {Path(rec.options["out"]) for rec in cut_off if isinstance(rec.options.get("out"), str)}
    folders |= {
        Path(item["path"]).parent for rec in cut_off for item in rec.plan if isinstance(item.get("path"), str)
    }
    removed = remove_temp_files(folders)
    if removed:
        log.warning(
            "removed %d temp file(s) left by the interrupted job(s) in %s",
            len(removed),
            ", ".join(sorted({str(p.parent) for p in removed})),
        )


class Daemon:
    """One stembridge daemon: UDP and TCP on one port, a job queue with its worker, the journal, and its mDNS
    advertisement.

    Args:
        settings: host, port, token, folders and queue size.
        runner: runs jobs; the pipeline by default (tests pass a fake).
        shutdown_timeout: how long shutdown waits for the running job to reach its next chunk.
        discovery: advertise over mDNS; None follows the settings (on by default).
        jam: makes jam sessions (tests pass one with a slow engine); the real one by default.
    """

    def __init__(
        self,
        settings: Settings,
        runner: Runner | None = None,
        *,
        shutdown_timeout: float = 10.0,
        discovery: bool | None = None,
        jam: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.port = 0
        self.advertiser: Advertiser | None = None
        self._runner = runner
        self._jam_factory = jam
        self._jam: JamService | None = None
        self._shutdown_timeout = shutdown_timeout
        self._discovery = discovery_wanted(settings, discovery)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._logs = LogLimiter(log)
        self._replier = Replier(self._logs)
        self._lock: IO[str] | None = None
        self._journal: Journal | None = None
        self._queue: JobQueue | None = None
        self._handler: RequestHandler | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        limits = TcpLimits(
            settings.tcp_max_connections, settings.tcp_max_per_address, settings.tcp_idle_timeout_s
        )
        self._streams = Connections(limits, self._logs)
        self._closed = False
        self._hotfolder: HotFolder | None = None

    async def start(self) -> None:
        """Open the journal, report jobs a crash cut off and remove their temp files, bind UDP and TCP, start
        the worker, write the port file, and start advertising (in the background).

        Raises:
            ConfigError: a non-loopback host without a token, a busy port or state folder, a broken journal.
        """
        check_network_policy(self.settings)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        state_dir = self.settings.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state folder {state_dir}: {exc}; pass another --state-dir"
            ) from exc
        self._lock = _lock_state_dir(state_dir)
        if self.settings.watch_dir is not None:  # a bad hot folder stops the start before anything listens
            prepare_folders(self.settings.watch_dir)
        self._journal = Journal(state_dir / JOURNAL_FILE)
        cut_off = self._journal.recover()
        _remove_leftovers(cut_off)
        self._journal.prune(JOURNAL_MAX_AGE_S)
        self._queue = JobQueue(
            self._runner or pipeline_runner(self.settings, self._cache()),
            self._journal,
            self._on_job_event,
            max_pending=self.settings.queue_size,
        )
        self._jam = JamService(self.settings, self._replier, factory=self._jam_factory)
        handler = self._handler = RequestHandler(
            self.settings, self._queue, self._replier, self._logs, jam=self._jam
        )
        await self._bind(handler)
        self._replier.attach(self._udp)
        self._queue.start()
        watch_dir = self.settings.watch_dir
        if watch_dir is not None:  # started after the recovery removed the leftovers of cut-off jobs
            self._hotfolder = HotFolder(watch_dir, self._queue, settle=self.settings.watch_settle_s)
            self._hotfolder.start()
        for rec in cut_off:
            if rec.reply_port:
                reply = protocol.error(rec.request_id, rec.error_code, rec.error_message)
                self._replier.send(ReplyTo(rec.reply_host, rec.reply_port), reply)
        _write_atomically(
            state_dir / PORT_FILE,
            json.dumps(
                {
                    "host": self.settings.host,
                    "port": self.port,
                    "pid": os.getpid(),
                    "version": __version__,
                    "token_required": bool(self.settings.token),
                }
            ),
        )
        log.info(
            "stembridge %s listening on %s:%d (UDP and TCP); renders go to %s; state in %s",
            __version__,
            self.settings.host,
            self.port,
            self.settings.out_dir,
            state_dir,
        )
        if self._discovery and self._udp is not None:
            self.advertiser = Advertiser(
                str(self._udp.get_extra_info("sockname")[0]),
                self.port,
                version=__version__,
                protocol=protocol.PROTOCOL_VERSION,
                token_required=bool(self.settings.token),
            )
            await self.advertiser.start()

    def _cache(self) -> ResultCache | None:
        max_mb = self.settings.cache_max_mb
        if max_mb <= 0:
            return None
        return ResultCache(self.settings.state_dir / CACHE_DIR, max_mb << 20)

    async def _bind(self, handler: RequestHandler) -> None:
        loop = asyncio.get_running_loop()
        host, wanted = self.settings.host, self.settings.port
        host = "127.0.0.1" if host.strip().lower() == "localhost" else host  # one address for UDP and TCP
        attempts = 5 if wanted == 0 else 1  # with port 0, retry when TCP finds UDP's free port taken
        for attempt in range(attempts):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: UdpEndpoint(handler.on_packet, self._logs), local_addr=(host, wanted)
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on UDP {host}:{wanted}: {exc.strerror or exc}; is another daemon "
                    f"running? stop it or pass --port"
                ) from exc
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await start_tcp_server(host, port, handler.on_packet, self._logs, self._streams)
            except OSError as exc:
                transport.close()
                if attempt + 1 < attempts:
                    continue
                raise ConfigError(
                    f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}; stop what uses it or pass "
                    f"--port"
                ) from exc
            self._udp = transport
            self.port = port
            return

    def _on_job_event(self, event: JobEvent) -> None:
        """Called by the queue on the worker thread: log the end of a job and hand the reply to the loop."""
        if event.kind == "done":
            log.info("job %r done: %d file(s)", event.request_id, len(event.paths))
        elif event.kind == "error":
            log.info("job %r ended: %s (%s)", event.request_id, event.message, event.code)
        if self._hotfolder is not None:
            self._hotfolder.on_job_event(event)
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop has closed: the daemon is gone, and so is the way to reply
            log.debug("dropped a %s reply for job %r after shutdown", event.kind, event.request_id)

    def _deliver(self, event: JobEvent) -> None:
        """On the loop: send a job event's reply; after a job's last one, its TCP connection (if the request
        came on one) no longer has that job in flight."""
        self._replier.send(event.reply, event_reply(event))
        channel = event.reply.channel
        if event.kind in ("done", "error") and isinstance(channel, PacketChannel):
            channel.job_ended()

    def request_stop(self) -> None:
        """Ask the daemon to shut down; safe from any thread and from signal handlers."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    async def run(self, started: Callable[[], None] | None = None) -> None:
        """Start, call ``started``, serve until :meth:`request_stop`, shut down (also when start fails)."""
        try:
            await self.start()
            if started is not None:
                started()
            if self._stop is not None:
                await self._stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, cancel the jobs, deliver their error replies, close sockets, flush the journal,
        withdraw the mDNS advertisement (at the same time), remove the port file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        withdraw = asyncio.ensure_future(self.advertiser.stop()) if self.advertiser is not None else None
        try:
            await self._stop_serving()
        finally:
            try:
                if self._journal is not None:
                    self._journal.close()
                port_file = self.settings.state_dir / PORT_FILE
                if (read_port_file(self.settings.state_dir) or {}).get("pid") == os.getpid() and self.port:
                    port_file.unlink(missing_ok=True)
            finally:
                if withdraw is not None:
                    await withdraw
                if self._lock is not None:
                    self._lock.close()
                log.info("stopped")

    async def _stop_serving(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._hotfolder is not None:  # take no new drops; jobs cancelled now leave their sources in place
            self._hotfolder.stop_scanning()
        if self._jam is not None:  # each session writes its take and answers `stopped` while UDP is open
            await self._jam.close(self._shutdown_timeout)
        if self._queue is not None:
            log.info("stopping: no new jobs; cancelling the running job and %d waiting", self._queue.pending)
            stopped = await asyncio.to_thread(self._queue.shutdown, self._shutdown_timeout)
            if not stopped:
                log.warning(
                    "the running job did not stop within %g s; it will be reported interrupted on the next "
                    "start",
                    self._shutdown_timeout,
                )
        if self._hotfolder is not None:  # move the sources of the jobs that ended, then stop watching
            await asyncio.to_thread(self._hotfolder.close)
        if self._handler is not None:  # job requests still having their files checked get their `busy` error
            await self._handler.drain(timeout=1.0)
        for _ in range(3):  # let the replies the worker handed over go out
            await asyncio.sleep(0)
        for stream in list(self._streams):
            stream.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._udp is not None:
            self._udp.close()
        self._replier.attach(None)


def stop_signals() -> list[signal.Signals]:
    """The signals that stop :func:`serve` gracefully: SIGINT, SIGTERM and SIGHUP (its terminal closed; not on
    Windows, and not when this process ignores it, as under ``nohup``). Left to its default, SIGHUP would end
    the daemon without unwinding, leaving the running job's full-size temp files behind."""
    wanted = [signal.SIGINT, signal.SIGTERM]
    hup = getattr(signal, "SIGHUP", None)
    if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN:
        wanted.append(hup)
    return wanted


def serve(settings: Settings, runner: Runner | None = None, *, discovery: bool | None = None) -> int:
    """Run a daemon in the foreground until SIGINT, SIGTERM or SIGHUP (:func:`stop_signals`); returns the exit
    code (0).

    Args:
        settings: the daemon's settings.
        runner: runs jobs (the pipeline by default).
        discovery: advertise over mDNS; None follows the settings.
    """

    async def main() -> None:
        daemon = Daemon(settings, runner, discovery=discovery)
        loop = asyncio.get_running_loop()
        for sig in stop_signals():
            try:
                loop.add_signal_handler(sig, daemon.request_stop)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                signal.signal(sig, lambda *_: daemon.request_stop())
        await daemon.run()

    asyncio.run(main())
    return 0


class DaemonThread:
    """A :class:`Daemon` on its own event loop in a background thread.

    Example:
        >>> with DaemonThread(settings.with_overrides(port=0)) as d:  # doctest: +SKIP
        ...     send_to(("127.0.0.1", d.port), ...)
    """

    def __init__(
        self,
        settings: Settings,
        runner: Runner | None = None,
        *,
        shutdown_timeout: float = 10.0,
        discovery: bool | None = None,
        jam: SessionFactory | None = None,
    ):
        self.daemon = Daemon(
            settings, runner, shutdown_timeout=shutdown_timeout, discovery=discovery, jam=jam
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="stembridge-daemon", daemon=True)

    @property
    def port(self) -> int:
        return self.daemon.port

    def wait_discoverable(self, timeout: float = 10.0) -> bool:
        """Wait until the mDNS advertisement is out; False when discovery is off, failed or still probing."""
        advertiser = self.daemon.advertiser
        return advertiser is not None and advertiser.settled.wait(timeout) and advertiser.registered.is_set()

    def _main(self) -> None:
        try:
            asyncio.run(self.daemon.run(started=self._ready.set))
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 10.0) -> DaemonThread:
        """Start and wait until the daemon listens; re-raises what stopped it from starting."""
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the daemon did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._error
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Shut the daemon down and wait for its thread."""
        self.daemon.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the daemon did not stop within {timeout} s")

    def __enter__(self) -> DaemonThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
