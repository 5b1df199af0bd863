"""OSC over TCP on the same port number as UDP.

OSC 1.1 frames packets on a stream with SLIP (RFC 1055: each packet ends, and may start, with the byte 0xC0).
OSC 1.0 clients (liblo's default, some older libraries) put a 4-byte big-endian length before each packet
instead. The first byte a client sends tells them apart (a length prefix starts with 0x00, a SLIP stream with
0xC0 or an address's ``/``), and replies go back on the connection in the client's own framing.

Connections cost nothing to hold open, so a few rules keep idle ones from locking clients out
(:class:`TcpLimits`, from the settings). A connection is *active* when it delivers a complete OSC packet holding
a request the daemon accepts (parsed, its token right: the packet handler's result says so) or when the daemon
sends it a reply after that; bytes alone (junk, a packet trickled in a byte at a time, a request with a wrong
token) do not count, so nobody can keep a slot warm without the token. Then:

- a connection not active for ``idle_timeout`` seconds is closed, unless it has a job in flight (the daemon
  sends a job's replies on the connection its request came on, and the ``done`` would be lost);
- one address may hold at most ``max_per_address`` connections (more are refused); IPv6 addresses count by
  their /64, which one machine commonly holds whole;
- when all ``max_connections`` are open, one is closed to make room for the new one: first one that has never
  had a request accepted, else the one not active for longest; never one with a job in flight (if every one
  has, the new connection is refused).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from pythonosc import slip

from bridge.server.lograte import LogLimiter
from bridge.server.osc import PacketHandler

log = logging.getLogger(__name__)

MAX_PACKET = 64 * 1024  # the largest request accepted; requests carry paths, never audio
MAX_BACKLOG = 1024 * 1024  # unsent reply bytes before a client that does not read is dropped
SLIP_END = slip.END[0]


@dataclass(frozen=True)
class TcpLimits:
    """How many TCP connections the daemon holds, and for how long (see the module doc).

    Attributes:
        max_connections: connections open at once; a new one beyond closes another (see the module doc).
        max_per_address: connections open at once from one IP address (IPv6: one /64); a new one beyond is
            refused.
        idle_timeout: seconds without activity (an accepted request or a reply) after which a connection with
            no job in flight is closed.
    """

    max_connections: int
    max_per_address: int
    idle_timeout: float


def address_group(host: str) -> str:
    """What ``max_per_address`` counts by: an IPv4 address (an IPv4-mapped IPv6 one too) as it is, an IPv6
    address by its /64 network (its zone dropped), anything else as written."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Connections:
    """The open TCP connections, least recently active first, and the limits a new one must fit."""

    def __init__(self, limits: TcpLimits, logs: LogLimiter) -> None:
        self.limits = limits
        self._logs = logs
        self._open: OrderedDict[OscStream, None] = OrderedDict()

    def admit(self, stream: OscStream) -> bool:
        """Take ``stream`` in, closing another connection if all slots are taken (see the module doc); False
        (and the stream should be closed) when its address already holds ``max_per_address`` connections, or
        every open connection has a job in flight."""
        same_address = sum(1 for other in self._open if other.group == stream.group)
        if same_address >= self.limits.max_per_address:
            self._logs.warning(
                "tcp-address",
                "refused a TCP connection from %s: %s already has %d open (tcp_max_per_address)",
                stream.host,
                stream.group,
                same_address,
            )
            return False
        while len(self._open) >= self.limits.max_connections:
            victim = self._victim()
            if victim is None:
                self._logs.warning(
                    "tcp-busy",
                    "refused a TCP connection from %s: all %d open ones have jobs in flight "
                    "(tcp_max_connections)",
                    stream.host,
                    len(self._open),
                )
                return False
            del self._open[victim]
            self._logs.warning(
                "tcp-full",
                "closed the TCP connection from %s, %s, to make room for one from %s: %d open "
                "(tcp_max_connections)",
                victim.host,
                "idle longest" if victim.accepted else "with no request accepted",
                stream.host,
                self.limits.max_connections,
            )
            victim.close()
        self._open[stream] = None
        return True

    def _victim(self) -> OscStream | None:
        """The connection to close for a new one: the first one opened of those that never had a request
        accepted, else the one not active for longest; never one with a job in flight."""
        free = [s for s in self._open if not s.jobs_in_flight]
        return next((s for s in free if not s.accepted), None) or next(iter(free), None)

    def touch(self, stream: OscStream) -> None:
        """``stream`` was just active: it is now the last to make room."""
        if stream in self._open:
            self._open.move_to_end(stream)

    def discard(self, stream: OscStream) -> None:
        self._open.pop(stream, None)

    def __iter__(self) -> Iterator[OscStream]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)


class OscStream(asyncio.Protocol):
    """One TCP connection: splits the byte stream into OSC packets and sends replies back framed alike."""

    def __init__(self, on_packet: PacketHandler, logs: LogLimiter, connections: Connections) -> None:
        self._on_packet = on_packet
        self._logs = logs
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._length_prefixed: bool | None = None  # decided by the first byte
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
        self.host, self.port, self.group = "", 0, ""
        self.accepted = False  # it has delivered a request the daemon accepted
        self.jobs_in_flight = 0  # jobs accepted from it whose last reply has not been sent yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.host, self.port = str(peer[0]), int(peer[1])
        self.group = address_group(self.host)
        if not self._connections.admit(self):
            self._transport.close()
            return
        self._loop = asyncio.get_running_loop()
        self._last_active = self._loop.time()
        self._idle_timer = self._loop.call_later(self._connections.limits.idle_timeout, self._check_idle)

    def _active(self) -> None:
        if self._loop is not None:
            self._last_active = self._loop.time()
            self._connections.touch(self)

    def job_started(self) -> None:
        """A job whose replies come back here was accepted: this connection is not closed until it ends."""
        self.jobs_in_flight += 1

    def job_ended(self) -> None:
        """That job's last reply has been sent (or it could not be, the connection being gone)."""
        self.jobs_in_flight = max(0, self.jobs_in_flight - 1)

    def _check_idle(self) -> None:
        if self._loop is None or self._transport is None:
            return
        timeout = self._connections.limits.idle_timeout
        idle = self._loop.time() - self._last_active
        if idle < timeout or self.jobs_in_flight:
            self._idle_timer = self._loop.call_later(max(timeout - idle, timeout / 2), self._check_idle)
            return
        self._logs.log(
            logging.INFO,
            "tcp-idle",
            "closed the TCP connection from %s: idle for %g s (tcp_idle_timeout_s)",
            self.host,
            timeout,
        )
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._cancel_idle_timer()
        self._transport = None

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._length_prefixed is None and self._buffer:
            self._length_prefixed = self._buffer[0] == 0
        for packet in self._length_frames() if self._length_prefixed else self._slip_frames():
            try:
                accepted = self._on_packet(packet, self.host, self.port, self)
            except Exception:  # a bug in handling one packet must not drop the connection
                self._logs.log(
                    logging.ERROR, "tcp-handler", "error handling a packet from %s", self.host, exc_info=True
                )
                continue
            if accepted:  # bytes alone, or a request refused for its token, do not count (see the module doc)
                self.accepted = True
                self._active()

    def _slip_frames(self) -> list[bytes]:
        frames = []
        while True:
            end = self._buffer.find(SLIP_END)
            if end < 0:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if not frame:
                continue  # the leading END of a double-END frame, or a keep-alive
            try:
                frames.append(slip.decode(frame))
            except slip.ProtocolError:
                self._logs.warning(
                    "slip", "dropped a badly escaped SLIP frame from %s (%d bytes)", self.host, len(frame)
                )
        if len(self._buffer) > MAX_PACKET:
            self._drop(f"more than {MAX_PACKET} bytes without a SLIP frame end")
        return frames

    def _length_frames(self) -> list[bytes]:
        frames = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack(">I", self._buffer[:4])
            if size > MAX_PACKET:
                self._drop(f"a packet of {size} bytes (at most {MAX_PACKET})")
                break
            if len(self._buffer) < 4 + size:
                break
            frames.append(bytes(self._buffer[4 : 4 + size]))
            del self._buffer[: 4 + size]
        return frames

    def _drop(self, why: str) -> None:
        self._logs.warning("tcp-drop", "closed the TCP connection from %s: %s", self.host, why)
        self._buffer.clear()
        self.close()

    def send_packet(self, data: bytes) -> bool:
        """Send one packet framed as the client frames its own; False when the connection is gone."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_BACKLOG:
            self._drop(f"it has not read {transport.get_write_buffer_size()} bytes of replies")
            return False
        transport.write(struct.pack(">I", len(data)) + data if self._length_prefixed else slip.encode(data))
        if self.accepted:  # not the replies to a connection that never had a request accepted (a wrong token)
            self._active()
        return True

    def close(self) -> None:
        self._cancel_idle_timer()
        if self._transport is not None:
            self._transport.close()


async def start_tcp_server(
    host: str, port: int, on_packet: PacketHandler, logs: LogLimiter, connections: Connections
) -> asyncio.Server:
    """Listen for OSC over TCP on ``host:port``; open connections are kept in ``connections``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: OscStream(on_packet, logs, connections), host, port)
