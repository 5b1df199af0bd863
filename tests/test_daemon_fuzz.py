"""Fuzzing the daemon: over 10,000 random and malformed packets by UDP and TCP, after which it still answers
ping, has not leaked a thread or a file descriptor, logged no internal error, and kept its log short.

The packets are built by hand (python-osc refuses to build most of them): random bytes, truncated messages,
type tags that do not match the data, huge strings, every address with arguments of every OSC type, NaN and
infinite floats, negative and out-of-range reply ports, unknown addresses, nested and malformed bundles, and TCP
streams with garbage frames, bad SLIP escapes, huge length prefixes and too many connections. Jobs go to a fake
runner, so nothing heavy runs.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pythonosc import slip
from pythonosc.osc_message import OscMessage

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.tcp import MAX_PACKET
from tests.test_daemon import WAIT, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads

N_UDP = 10_000
N_TCP_FRAMES = 1_200
Arg = tuple[str, bytes]  # an OSC type tag and its encoded value


# --- building packets by hand -------------------------------------------------------------------------------


def osc_string(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return data + b"\0" * (4 - len(data) % 4)


def message(address: str | bytes, args: list[Arg], tags: str | None = None) -> bytes:
    tags = "," + "".join(t for t, _ in args) if tags is None else tags
    return osc_string(address) + osc_string(tags) + b"".join(v for _, v in args)


def bundle(elements: list[bytes], sizes: list[int] | None = None) -> bytes:
    sizes = sizes or [len(e) for e in elements]
    body = b"".join(struct.pack(">i", n) + e for n, e in zip(sizes, elements, strict=True))
    return b"#bundle\0" + b"\0\0\0\0\0\0\0\1" + body


def i32(v: int) -> Arg:
    return "i", struct.pack(">i", v)


def f32(v: float) -> Arg:
    return "f", struct.pack(">f", v)


def text(v: str) -> Arg:
    return "s", osc_string(v)


class Fuzzer:
    """Makes packets; ``reply_port`` is the test's listening socket, ``daemon_port`` the daemon's own."""

    def __init__(self, rng: random.Random, reply_port: int, daemon_port: int, audio: str) -> None:
        self.rng = rng
        self.reply_port = reply_port
        self.daemon_port = daemon_port
        self.audio = audio
        self.valid_jobs = 0

    def value(self) -> Arg:
        """One argument of a random OSC type, often an awkward value."""
        r = self.rng
        kind = r.choice("iihffdssssbTFNIctmr[")
        if kind == "i":
            return i32(r.choice([0, 1, -1, 4, 8, 120, 65535, 65536, -(2**31), 2**31 - 1, r.getrandbits(31)]))
        if kind == "h":
            return "h", struct.pack(">q", r.choice([2**40, -(2**63), 2**63 - 1, 0]))
        if kind == "f":
            return f32(r.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 120.0, 8.5, 3e38, 1e-45, 0.5]))
        if kind == "d":
            return "d", struct.pack(">d", r.choice([math.nan, math.inf, -math.inf, 1e308, 120.0, 2.0]))
        if kind == "s":
            return text(
                r.choice(
                    [
                        "", " ", "bass", "drums,bass", "4/4", "5/3", "0/4", "nan", "inf", "-1", "1e400", "auto",
                        "builtin", "wav", "mp3", self.audio, "/etc/passwd", "../../x", "~/x.wav", "Macintosh HD:/x",
                        "\x01\x02", "ü🎵 é", "x" * r.randint(100, 5000), *protocol.known_keys("generate"),
                    ]
                )
            )  # fmt: skip
        if kind == "b":
            blob = r.randbytes(r.randint(0, 40))
            return "b", struct.pack(">I", len(blob)) + blob + b"\0" * (-len(blob) % 4)
        if kind in "TFNI":
            return kind, b""
        if kind in "cmr":
            return kind, r.randbytes(4)
        if kind == "t":
            return "t", r.randbytes(8)
        inner = [self.value() for _ in range(r.randint(0, 3))]  # an array, sometimes of arrays
        return "[" + "".join(t for t, _ in inner) + "]", b"".join(v for _, v in inner)

    def reply_port_arg(self) -> Arg:
        r = self.rng
        choice = r.random()
        if choice < 0.5:
            return i32(self.reply_port)
        if choice < 0.6:
            return f32(float(self.reply_port))
        if choice < 0.65:
            return i32(self.daemon_port)  # replies to itself must not bounce
        return r.choice(
            [i32(-1), i32(-65535), i32(-(2**31)), i32(0), i32(65536), f32(math.nan), f32(-math.inf)]
            + [text(str(self.reply_port)), text("port"), ("N", b""), ("T", b""), self.value()]
        )

    def request(self) -> bytes:
        """A request to a real address with a plausible envelope and random positional and options."""
        r = self.rng
        command = r.choice(protocol.COMMANDS)
        args = [self.reply_port_arg(), r.choice([text(f"fz{r.getrandbits(20)}"), self.value()])]
        if command in protocol.POSITIONAL and r.random() < 0.9:
            args.append(r.choice([text(self.audio), text("bass"), self.value()]))
        for _ in range(r.randint(0, 4)):
            keys = protocol.known_keys(command) or ["bpm"]
            args.append(text(r.choice(keys)) if r.random() < 0.8 else self.value())
            if r.random() < 0.9:
                args.append(self.value())
        return message(f"{protocol.PREFIX}/{command}", args)

    def valid_job(self) -> bytes:
        self.valid_jobs += 1
        rid = f"job{self.valid_jobs}"
        return message(
            protocol.VARY, [i32(self.reply_port), text(rid), text(self.audio), text("strength"), f32(0.5)]
        )

    def packet(self) -> bytes:
        r = self.rng
        kind = r.random()
        if kind < 0.12:
            return r.randbytes(r.randint(0, 300))
        if kind < 0.17:
            prefix = r.choice([b"/", b"/stembridge/ping\0\0\0\0", b"#bundle\0", b",", b"\0\0\0\x10"])
            return prefix + r.randbytes(r.randint(0, 100))
        if kind < 0.32:
            data = self.request()
            return data[: r.randint(0, len(data) - 1)]  # truncated
        if kind < 0.45:  # type tags that do not match the data
            data = self.request()
            args = [self.value() for _ in range(r.randint(0, 6))]
            tags = "," + "".join(r.choice("ifsbhdtTFNIcmrS[]X?,\x00") for _ in range(r.randint(0, 12)))
            return message(f"{protocol.PREFIX}/{r.choice(protocol.COMMANDS)}", args, tags) if r.random() < 0.7 else (
                data[:8] + osc_string(tags) + data[8:]
            )  # fmt: skip
        if kind < 0.70:
            return self.request()
        if kind < 0.72:  # huge strings (within a datagram)
            big = "x" * r.randint(10_000, 60_000)
            return message(protocol.PING, [i32(self.reply_port), text(big)]) if r.random() < 0.5 else message(
                protocol.SEPARATE, [i32(self.reply_port), text("big"), text("/" + big)]
            )  # fmt: skip
        if kind < 0.78:  # unknown and odd addresses
            address = r.choice(
                [
                    "/stembridge", "/stembridge/", "/stembridge/xyz", "/Stembridge/ping", "//", "/stembridge/ping/x",
                    "/stembridge/*", "/stembridge/{ping,cancel}", "/other/app", "/stembridge/done", "/stembridge/error",
                    "/\x01\x02", "/ü", "/" + "a" * 2000, "",
                ]
            )  # fmt: skip
            return message(address, [self.reply_port_arg(), text("odd")])
        if kind < 0.90:
            return self.bundle_packet()
        if kind < 0.905:
            return self.valid_job()
        return message(
            protocol.PING, [self.reply_port_arg(), self.value(), *[self.value() for _ in range(3)]]
        )

    def bundle_packet(self) -> bytes:
        r = self.rng
        style = r.random()
        if style < 0.3:  # nested, sometimes far deeper than anything real
            data = self.request()
            for _ in range(r.choice([1, 2, 5, 50, 400])):
                data = bundle([data])
            return data
        if style < 0.5:  # element sizes that lie
            elements = [self.request() for _ in range(r.randint(1, 3))]
            sizes = [r.choice([len(e), len(e) + 4, 10**6, -4, 0, 3]) for e in elements]
            return bundle(elements, sizes)
        if style < 0.6:
            return bundle([message(protocol.PING, [i32(self.reply_port), text(f"b{i}")]) for i in range(80)])
        if style < 0.8:
            data = bundle([self.request(), self.request()])
            return data[: r.randint(8, len(data) - 1)]
        return bundle([self.request(), r.randbytes(r.randint(1, 40)), bundle([self.packet_no_bundle()])])

    def packet_no_bundle(self) -> bytes:
        return self.request() if self.rng.random() < 0.7 else self.rng.randbytes(self.rng.randint(0, 50))

    def tcp_stream(self, framing: str) -> Iterator[bytes]:
        """Chunks for one connection: frames of garbage and requests, badly escaped SLIP, lying lengths."""
        r = self.rng
        for _ in range(r.randint(20, 60)):
            payload = self.packet()
            if framing == "slip":
                choice = r.random()
                if choice < 0.15:
                    yield b"\xc0" + payload[:50] + b"\xdb" + bytes([r.choice([0, 1, 0xC0, 0xDB])]) + b"\xc0"
                elif choice < 0.2:
                    yield b"\xc0\xc0\xc0"  # empty frames, keep-alives
                else:
                    yield slip.encode(payload)
            else:
                if r.random() < 0.1:
                    yield struct.pack(">I", len(payload) + r.randint(1, 8)) + payload  # a lying length
                    return  # the stream is out of step from here: the daemon waits for the rest
                yield struct.pack(">I", len(payload)) + payload


# --- the test -----------------------------------------------------------------------------------------------


def quick_runner(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
    progress(0.5, "half")
    progress(1.0, "done")
    return Outcome([])


def open_fds() -> int | None:
    gc.collect()  # files other tests left to the garbage collector would close in the middle otherwise
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: the descriptor check is skipped
        return None


class Listener:
    """The test's reply socket; ``ping`` paces the fuzzing and proves the daemon still answers."""

    def __init__(self, daemon_port: int) -> None:
        self.daemon_port = daemon_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.replies = 0
        self.pings = 0

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, ("127.0.0.1", self.daemon_port))
        except OSError:  # e.g. EMSGSIZE for an oversize packet; the fuzzer does not care
            pass

    def ping(self) -> None:
        """Send pings until one is answered (the daemon drops what overflows its buffer, as UDP does)."""
        for attempt in range(5):
            self.pings += 1
            rid = f"alive{self.pings}"
            self.send(message(protocol.PING, [i32(self.port), text(rid)]))
            deadline = time.monotonic() + (WAIT if attempt == 4 else 0.3)
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    break
                self.replies += 1
                try:
                    msg = OscMessage(data)
                except Exception:
                    raise AssertionError(f"the daemon sent a malformed reply: {data[:80]!r}") from None
                if msg.address == protocol.PONG and msg.params[0] == rid:
                    return
        raise AssertionError("the daemon stopped answering ping")

    def close(self) -> None:
        self.sock.close()


def tcp_ping(port: int) -> str:
    """A ping over a new TCP connection. Right after the crowd of connections in :func:`fuzz_tcp` closed, the
    daemon may not have seen all of them go yet and refuse this one as over the limit (by design): try again."""
    for _ in range(19):
        try:
            return _tcp_ping_once(port)
        except ConnectionResetError:
            time.sleep(0.05)
    return _tcp_ping_once(port)


def _tcp_ping_once(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(slip.encode(message(protocol.PING, [i32(9), text("tcp-alive")])))
        buf = b""
        while buf.count(slip.END) < 2:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            buf += chunk
        return str(OscMessage(slip.decode(buf)).address)


def fuzz_tcp(fuzzer: Fuzzer, port: int) -> int:
    """Garbage over TCP: framed streams, an oversize unframed stream, too many connections. Returns frames sent."""
    frames = 0
    while frames < N_TCP_FRAMES:
        framing = fuzzer.rng.choice(["slip", "length"])
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            for chunk in fuzzer.tcp_stream(framing):
                frames += 1
                try:
                    s.sendall(chunk)
                except OSError:  # the daemon dropped the connection (a length over MAX_PACKET, say)
                    break
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        try:
            s.sendall(b"/" * (MAX_PACKET + 10))  # never a frame end: dropped
            s.sendall(struct.pack(">I", MAX_PACKET + 1))
        except OSError:
            pass
    crowd_size = Settings().tcp_max_connections + 6
    crowd = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(crowd_size)]
    for s in crowd:
        s.close()
    return frames


@pytest.fixture()
def audio_file(tmp_path: Path) -> str:
    path = tmp_path / "in" / "loop.wav"
    path.parent.mkdir()
    path.write_bytes(b"RIFF")  # the fake runner never reads it
    return str(path)


def test_fuzzing_does_not_hurt_the_daemon(
    tmp_path: Path, audio_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0)
    fds_before = open_fds()
    with caplog.at_level(logging.INFO, logger="bridge"):
        with DaemonThread(settings, quick_runner, discovery=False) as d:
            listener = Listener(d.port)
            try:
                fuzzer = Fuzzer(random.Random(20240601), listener.port, d.port, audio_file)
                for i in range(N_UDP):
                    listener.send(fuzzer.packet())
                    if i % 50 == 49:  # small bursts: a burst of huge packets overflows the socket buffer
                        listener.ping()
                tcp_frames = fuzz_tcp(fuzzer, d.port)
                listener.ping()
                assert tcp_ping(d.port) == protocol.PONG
            finally:
                listener.close()
            assert fuzzer.valid_jobs >= 20 and listener.replies > N_UDP // 5
            assert tcp_frames >= N_TCP_FRAMES
    others = [f"{r.name}: {r.getMessage()[:80]}" for r in caplog.records if not r.name.startswith("bridge")]
    assert not others  # python-osc logs each packet it cannot read unless the daemon refuses it first
    records = [r for r in caplog.records if r.name.startswith("bridge")]
    assert not [r.getMessage() for r in records if r.levelno >= logging.ERROR]  # no internal error, ever
    warnings = [r for r in records if r.levelno == logging.WARNING]
    jobs = [r for r in records if r.getMessage().startswith("job ")]
    assert len(warnings) <= 40, [r.getMessage()[:100] for r in warnings]  # rate-limited: not one per packet
    assert len(records) - len(jobs) <= 60  # for over 11,000 packets, thousands of them refused
    assert not settings.out_dir.exists() or not any(settings.out_dir.iterdir())
    if fds_before is not None:
        assert open_fds() == fds_before  # every socket and file the daemon opened is closed


def test_the_fuzzer_makes_what_it_promises(audio_file: str) -> None:
    """Guards the fuzz test itself: its packets really are this varied."""
    fuzzer = Fuzzer(random.Random(1), 9001, 9977, audio_file)
    packets = [fuzzer.packet() for _ in range(3000)]
    decodable = 0
    for data in packets:
        try:
            OscMessage(data)
            decodable += 1
        except Exception:
            pass
    assert 0.2 * len(packets) < decodable < 0.8 * len(packets)
    assert any(p.startswith(b"#bundle") for p in packets) and any(len(p) > 10_000 for p in packets)
    assert any(b"/stembridge/generate" in p for p in packets) and any(b"/other/app" in p for p in packets)
    frames: Callable[[str], list[bytes]] = lambda framing: list(fuzzer.tcp_stream(framing))  # noqa: E731
    assert frames("slip") and frames("length")
