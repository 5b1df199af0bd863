"""OSC over TCP on the same port number as UDP.

OSC 1.1 frames packets on a stream with SLIP (RFC 1055: each packet ends, and may start, with the byte 0xC0).
OSC 1.0 clients (liblo's default, some older libraries) put a 4-byte big-endian length before each packet
instead. The first byte a client sends tells them apart (a length prefix starts with 0x00, a SLIP stream with
0xC0 or an address's ``/``), and replies go back on the connection in the client's own framing.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import cast

from pythonosc import slip

from bridge.server.lograte import LogLimiter
from bridge.server.osc import PacketHandler

log = logging.getLogger(__name__)

MAX_PACKET = 64 * 1024  # the largest request accepted; requests carry paths, never audio
MAX_BACKLOG = 1024 * 1024  # unsent reply bytes before a client that does not read is dropped
MAX_CONNECTIONS = 64
SLIP_END = slip.END[0]


class OscStream(asyncio.Protocol):
    """One TCP connection: splits the byte stream into OSC packets and sends replies back framed alike."""

    def __init__(self, on_packet: PacketHandler, logs: LogLimiter, connections: set[OscStream]) -> None:
        self._on_packet = on_packet
        self._logs = logs
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._length_prefixed: bool | None = None  # decided by the first byte
        self.host, self.port = "", 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.host, self.port = str(peer[0]), int(peer[1])
        if len(self._connections) >= MAX_CONNECTIONS:
            self._logs.warning(
                "tcp-full",
                "refused a TCP connection from %s: %d already open",
                self.host,
                len(self._connections),
            )
            self._transport.close()
            return
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
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
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def start_tcp_server(
    host: str, port: int, on_packet: PacketHandler, logs: LogLimiter, connections: set[OscStream]
) -> asyncio.Server:
    """Listen for OSC over TCP on ``host:port``; open connections are kept in ``connections``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: OscStream(on_packet, logs, connections), host, port)
