"""OSC packets in and out, and the UDP endpoint.

python-osc parses packets (messages and bundles) and builds replies; the endpoint is a plain asyncio datagram
protocol so that replies go to the sender's IP at the ``reply_port`` the request names (Max's [udpsend] sends
from another port than its [udpreceive] listens on), and so that a malformed packet gets a log line instead of
being dropped in silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge.errors import InvalidArgument
from bridge.jobs.queue import ReplyTo
from bridge.server.lograte import LogLimiter

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_PACKET = 64
INT32 = (-(2**31), 2**31 - 1)


@runtime_checkable
class PacketChannel(Protocol):
    """A live connection that replies can travel back on (a TCP stream)."""

    def send_packet(self, data: bytes) -> bool:
        """Send one OSC packet; False when the connection is gone."""


# Called with (packet bytes, sender IP, sender port, the stream it came on or None for UDP).
PacketHandler = Callable[[bytes, str, int, PacketChannel | None], None]


def decode_packet(data: bytes) -> list[tuple[str, list[Any]]]:
    """The messages in an OSC packet (a message or a bundle, nested bundles flattened) as ``(address, args)``.

    Raises:
        InvalidArgument: the bytes are not an OSC packet.
    """
    try:
        messages = [(m.message.address, list(m.message.params)) for m in OscPacket(data).messages]
    except (
        Exception
    ) as exc:  # python-osc raises ParseError, but garbage can also trip struct or recursion errors
        raise InvalidArgument(f"not an OSC packet ({len(data)} bytes): {exc}") from None
    if len(messages) > MAX_MESSAGES_PER_PACKET:
        raise InvalidArgument(
            f"a bundle of {len(messages)} messages; send at most {MAX_MESSAGES_PER_PACKET} per packet"
        )
    return messages


def encode_message(address: str, args: Sequence[Any]) -> bytes:
    """One OSC message: ints as ``i`` (``h`` beyond 32 bits), floats as ``f``, strings as ``s``."""
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, bool):
            builder.add_arg(arg)
        elif isinstance(arg, int):
            builder.add_arg(arg, "i" if INT32[0] <= arg <= INT32[1] else "h")
        elif isinstance(arg, float):
            builder.add_arg(arg, "f")
        else:
            builder.add_arg(str(arg), "s")
    return bytes(builder.build().dgram)


class Replier:
    """Sends replies: on the request's stream while it is open, else by UDP to ``host:port``."""

    def __init__(self, logs: LogLimiter) -> None:
        self._logs = logs
        self._udp: asyncio.DatagramTransport | None = None

    def attach(self, transport: asyncio.DatagramTransport | None) -> None:
        self._udp = transport

    def send(self, to: ReplyTo, reply: tuple[str, list[Any]]) -> None:
        address, args = reply
        try:
            data = encode_message(address, args)
        except Exception as exc:  # an unencodable value is a bug here, not the client's fault: log it
            self._logs.log(logging.ERROR, "encode", "could not encode %s %r: %s", address, args[:4], exc)
            return
        channel = to.channel
        if isinstance(channel, PacketChannel) and channel.send_packet(data):
            return
        if not to.port or self._udp is None or self._udp.is_closing():
            return
        try:
            self._udp.sendto(data, (to.host, to.port))
        except OSError as exc:
            self._logs.warning("send", "could not send %s to %s:%d: %s", address, to.host, to.port, exc)


class UdpEndpoint(asyncio.DatagramProtocol):
    """Hands every datagram to ``on_packet``; nothing a client sends can stop it."""

    def __init__(self, on_packet: PacketHandler, logs: LogLimiter) -> None:
        self._on_packet = on_packet
        self._logs = logs
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._on_packet(data, str(addr[0]), int(addr[1]), None)
        except Exception:  # a bug in handling one packet must not stop the endpoint
            self._logs.log(
                logging.ERROR, "udp-handler", "error handling a packet from %s", addr, exc_info=True
            )

    def error_received(self, exc: Exception) -> None:
        # e.g. an ICMP "port unreachable" after a reply to a client that has gone away
        self._logs.log(logging.DEBUG, "udp-error", "UDP error: %s", exc)
