"""OSC packets in and out, and the UDP endpoint.

python-osc parses packets (messages and bundles) and builds replies; the endpoint is a plain asyncio datagram
protocol so that replies go to the sender's IP at the ``reply_port`` the request names (Max's [udpsend] sends
from another port than its [udpreceive] listens on), and so that a malformed packet gets a log line instead of
being dropped in silence.
"""

from __future__ import annotations

import asyncio
import ipaddress
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

    def job_started(self) -> None:
        """A job whose replies go to this connection was accepted."""

    def job_ended(self) -> None:
        """The last reply (``done`` or ``error``) of such a job has been sent."""


# Called with (packet bytes, sender IP, sender port, the stream it came on or None for UDP); returns whether the
# packet was a well-formed OSC packet holding a request the daemon accepted (parsed, its token right).
PacketHandler = Callable[[bytes, str, int, PacketChannel | None], bool]


BUNDLE_TAG = b"#bundle\0"
MAX_BUNDLE_DEPTH = 8
TYPE_TAGS = frozenset("ihfdsbrmtTFN[]")  # what python-osc decodes; it skips others and logs each one


def _check_message(data: bytes) -> None:
    """Refuse type tags python-osc cannot decode (it would log a warning per packet and misread the rest)."""
    end = data.find(b"\0")
    start = (end // 4 + 1) * 4 if end >= 0 else len(data)
    if data[start : start + 1] != b",":
        return  # no type tag string: python-osc decides (OSC 1.0 allows it)
    tag_end = data.find(b"\0", start)
    tags = data[start + 1 : tag_end if tag_end >= 0 else len(data)].decode("latin-1")
    unknown = sorted(set(tags) - TYPE_TAGS)
    if unknown:
        raise InvalidArgument(
            f"unsupported OSC type tag(s) {', '.join(map(repr, unknown))}; send i, h, f, d, s, b, T, F or N"
        )


def _check_structure(data: bytes, depth: int = 0) -> None:
    """Check the frame of a message or bundle (element sizes, nesting, type tags) before python-osc parses it,
    so that garbage is refused here, with a reason, instead of being logged by python-osc."""
    if data.startswith(b"/"):
        _check_message(data)
        return
    if not data.startswith(BUNDLE_TAG):
        raise InvalidArgument("an OSC packet starts with '/' (a message) or '#bundle' (a bundle)")
    if depth >= MAX_BUNDLE_DEPTH:
        raise InvalidArgument(f"bundles nested more than {MAX_BUNDLE_DEPTH} deep; nest them less")
    index = len(BUNDLE_TAG) + 8  # the time tag
    if len(data) < index:
        raise InvalidArgument("a bundle without its time tag")
    while index < len(data):
        if index + 4 > len(data):
            raise InvalidArgument("a bundle element without its size")
        size = int.from_bytes(data[index : index + 4], "big", signed=True)
        index += 4
        if size <= 0 or size % 4 or index + size > len(data):
            raise InvalidArgument(f"a bundle element of {size} bytes where {len(data) - index} remain")
        _check_structure(data[index : index + size], depth + 1)
        index += size


def decode_packet(data: bytes) -> list[tuple[str, list[Any]]]:
    """The messages in an OSC packet (a message or a bundle, nested bundles flattened) as ``(address, args)``.

    Raises:
        InvalidArgument: the bytes are not an OSC packet.
    """
    try:
        _check_structure(data)
        messages = [(m.message.address, list(m.message.params)) for m in OscPacket(data).messages]
    except Exception as exc:  # python-osc raises ParseError, but garbage can also trip struct errors
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
    """Hands every datagram to ``on_packet``; nothing a client sends can stop it.

    Datagrams from the daemon's own socket are dropped: they are replies it sent to itself because a request
    named the daemon's port as its ``reply_port``, and answering them would bounce packets back and forth.
    """

    def __init__(self, on_packet: PacketHandler, logs: LogLimiter) -> None:
        self._on_packet = on_packet
        self._logs = logs
        self.transport: asyncio.DatagramTransport | None = None
        self._own: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname") or ("", 0)
        self._own = (str(sockname[0]), int(sockname[1]))

    def _from_self(self, host: str, port: int) -> bool:
        if port != self._own[1]:
            return False
        if host == self._own[0]:
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._from_self(str(addr[0]), int(addr[1])):
            self._logs.log(logging.DEBUG, "self", "dropped a packet the daemon sent to itself")
            return
        try:
            self._on_packet(data, str(addr[0]), int(addr[1]), None)
        except Exception:  # a bug in handling one packet must not stop the endpoint
            self._logs.log(
                logging.ERROR, "udp-handler", "error handling a packet from %s", addr, exc_info=True
            )

    def error_received(self, exc: Exception) -> None:
        # e.g. an ICMP "port unreachable" after a reply to a client that has gone away
        self._logs.log(logging.DEBUG, "udp-error", "UDP error: %s", exc)
