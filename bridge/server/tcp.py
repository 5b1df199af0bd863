"""OSC over TCP on the same port number as UDP.

OSC 1.1 frames packets on a stream with SLIP (RFC 1055: each packet ends, and may start, with the byte 0xC0).
OSC 1.0 clients (liblo's default, some older libraries) put a 4-byte big-endian length before each packet
instead. The first byte a client sends tells them apart (a length prefix starts with 0x00, a SLIP stream with
0xC0 or an address's ``/``), and replies go back on the connection in the client's own framing.

Connections cost nothing to hold open, so a few rules keep idle ones from locking clients out
(:class:`TcpLimits`, from the settings): a connection with no bytes either way for ``idle_timeout`` seconds is
closed; one address may hold at most ``max_per_address`` connections (more are refused); and when all
``max_connections`` are open, the one idle longest is closed to make room for the new one.
"""

from __future__ import annotations

import asyncio
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
        max_connections: connections open at once; a new one beyond closes the one idle longest.
        max_per_address: connections open at once from one IP address; a new one beyond is refused.
        idle_timeout: seconds without a byte in either direction after which a connection is closed.
    """

    max_connections: int
    max_per_address: int
    idle_timeout: float


class Connections:
    """The open TCP connections, least recently active first, and the limits a new one must fit."""

    def __init__(self, limits: TcpLimits, logs: LogLimiter) -> None:
        self.limits = limits
        self._logs = logs
        self._open: OrderedDict[OscStream, None] = OrderedDict()

    def admit(self, stream: OscStream) -> bool:
        """Take ``stream`` in, closing the connection idle longest if all slots are taken; False (and the
        stream should be closed) when its address already holds ``max_per_address`` connections."""
        same_address = sum(1 for other in self._open if other.host == stream.host)
        if same_address >= self.limits.max_per_address:
            self._logs.warning(
                "tcp-address",
                "refused a TCP connection from %s: it already has %d open (tcp_max_per_address)",
                stream.host,
                same_address,
            )
            return False
        while len(self._open) >= self.limits.max_connections:
            idlest, _ = self._open.popitem(last=False)
            self._logs.warning(
                "tcp-full",
                "closed the TCP connection from %s, idle longest, to make room for one from %s: %d open "
                "(tcp_max_connections)",
                idlest.host,
                stream.host,
                self.limits.max_connections,
            )
            idlest.close()
        self._open[stream] = None
        return True

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
        self.host, self.port = "", 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.host, self.port = str(peer[0]), int(peer[1])
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

    def _check_idle(self) -> None:
        if self._loop is None or self._transport is None:
            return
        timeout = self._connections.limits.idle_timeout
        idle = self._loop.time() - self._last_active
        if idle < timeout:
            self._idle_timer = self._loop.call_later(timeout - idle, self._check_idle)
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
        self._active()
        self._buffer += data
        if self._length_prefixed is None and self._buffer:
            self._length_prefixed = self._buffer[0] == 0
        for packet in self._length_frames() if self._length_prefixed else self._slip_frames():
            try:
                self._on_packet(packet, self.host, self.port, self)
            except Exception:  # a bug in handling one packet must not drop the connection
                self._logs.log(
                    logging.ERROR, "tcp-handler", "error handling a packet from %s", self.host, exc_info=True
                )

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
