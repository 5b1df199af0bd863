"""TCP connections cannot lock clients out: idle ones are closed, one address holds only so many, and a full
table makes room for a new client by closing the connection idle longest; only accepted requests count as
activity, and a connection with a job in flight stays. Loopback only (127.0.0.2 and up stand in for other
machines: Linux answers on all of 127.0.0.0/8)."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pythonosc import slip
from pythonosc.osc_message import OscMessage

from bridge.config import Settings, load_settings
from bridge.engines.base import ProgressCallback
from bridge.errors import ConfigError
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.lograte import LogLimiter
from bridge.server.osc import encode_message
from bridge.server.tcp import Connections, TcpLimits, address_group

WAIT = 10.0  # an upper bound for any single reply; the tests never assert on timing


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not extra, f"the test left threads running: {[t.name for t in extra]}"


def no_jobs(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
    raise AssertionError("these tests send no jobs")


def start_daemon(tmp_path: Path, runner: Any = no_jobs, **overrides: object) -> DaemonThread:
    settings = Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0)
    return DaemonThread(settings.with_overrides(**overrides), runner, discovery=False)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))


def send(sock: socket.socket, address: str, *args: object) -> None:
    sock.sendall(slip.encode(encode_message(address, list(args))))


def receive(sock: socket.socket) -> tuple[str, list[Any]]:
    """The next reply on ``sock`` (SLIP framed: END, packet, END)."""
    buf = b""
    while buf.count(slip.END) < 2:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        buf += chunk
    msg = OscMessage(slip.decode(buf))
    return msg.address, list(msg.params)


def ping(sock: socket.socket, rid: str, *token: str) -> str:
    """Send a ping on ``sock`` (with ``token`` when given); the id of the pong that comes back on it."""
    send(sock, protocol.PING, 9, rid, *(("token", *token) if token else ()))
    address, args = receive(sock)
    assert address == protocol.PONG, args
    return str(args[0])


def closed_by_daemon(sock: socket.socket) -> bool:
    """Whether the daemon has closed ``sock`` (waits up to WAIT for it)."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    """Whether ``sock`` is open and quiet right now: nothing to read, not even the end of the stream."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_a_full_table_still_answers_a_new_client(tmp_path: Path) -> None:
    """The default table (64 connections, 16 per address) filled by silent connections from four addresses:
    a new client gets its ping answered, and the connection idle longest made room for it."""
    defaults = Settings()
    per_address = defaults.tcp_max_per_address
    addresses = [f"127.0.0.{i}" for i in range(1, defaults.tcp_max_connections // per_address + 1)]
    assert len(addresses) * per_address == defaults.tcp_max_connections
    with start_daemon(tmp_path) as d, ExitStack() as stack:
        crowd = [stack.enter_context(connect(d.port, a)) for a in addresses for _ in range(per_address)]
        newcomer = stack.enter_context(connect(d.port, "127.0.0.200"))
        assert ping(newcomer, "newcomer") == "newcomer"
        assert closed_by_daemon(crowd[0])  # the first one opened has been idle longest
        assert [still_open(s) for s in crowd[1:]] == [True] * (len(crowd) - 1)


def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    with start_daemon(tmp_path, tcp_idle_timeout_s=0.3) as d, connect(d.port) as sock:
        assert ping(sock, "before") == "before"
        assert closed_by_daemon(sock)  # within WAIT, far longer than the timeout
        with connect(d.port) as again:  # the daemon itself goes on
            assert ping(again, "after") == "after"


def test_one_address_over_its_cap_is_refused_and_another_is_not(tmp_path: Path) -> None:
    with start_daemon(tmp_path, tcp_max_per_address=2) as d, ExitStack() as stack:
        first = [stack.enter_context(connect(d.port)) for _ in range(2)]
        assert [ping(s, f"first{i}") for i, s in enumerate(first)] == ["first0", "first1"]
        third = stack.enter_context(connect(d.port))
        assert closed_by_daemon(third)
        other = stack.enter_context(connect(d.port, "127.0.0.2"))
        assert ping(other, "other") == "other"
        assert [ping(s, f"again{i}") for i, s in enumerate(first)] == ["again0", "again1"]


def test_the_limits_are_settings_checked_for_range(tmp_path: Path) -> None:
    environ = {"STEMBRIDGE_TCP_IDLE_TIMEOUT_S": "30", "STEMBRIDGE_TCP_MAX_PER_ADDRESS": "4"}
    loaded = load_settings(tmp_path / "none.toml", environ)
    limits = (loaded.tcp_idle_timeout_s, loaded.tcp_max_per_address, loaded.tcp_max_connections)
    assert limits == (30.0, 4, 64)
    with pytest.raises(ConfigError, match=r"tcp_idle_timeout_s in \$STEMBRIDGE_TCP_IDLE_TIMEOUT_S must be"):
        load_settings(tmp_path / "none.toml", {"STEMBRIDGE_TCP_IDLE_TIMEOUT_S": "0"})
    with pytest.raises(ConfigError, match="tcp_max_connections in arguments must be a whole number"):
        Settings().with_overrides(tcp_max_connections=0)


# --- what counts as activity (a hostile review: slots held, real clients evicted, without the token) ----------


def test_junk_and_wrong_tokens_neither_hold_a_slot_nor_evict_a_real_client(tmp_path: Path) -> None:
    """A real client pings once, then stays quiet; attackers without the token fill the other slots and keep
    sending (a byte of junk, a junk frame, a well-formed ping with a wrong token, which gets an error reply).
    New connections close the attackers' first, however recently they sent bytes."""
    with start_daemon(tmp_path, token="s3cret", tcp_max_connections=4) as d, ExitStack() as stack:
        real = stack.enter_context(connect(d.port))
        assert ping(real, "real", "s3cret") == "real"
        attackers = [stack.enter_context(connect(d.port, "127.0.0.2")) for _ in range(3)]
        attackers[0].sendall(b"x")  # a packet that never ends
        attackers[1].sendall(b"junk" + slip.END)  # a complete frame that is not OSC
        send(attackers[2], protocol.PING, 9, "guess", "token", "wrong")
        assert receive(attackers[2]) == (
            protocol.ERROR,
            [
                "guess",
                "unauthorized",
                "wrong token; use the one the daemon was started with (--token or STEMBRIDGE_TOKEN)",
            ],
        )
        attackers[0].sendall(b"y")
        for k in range(3):  # each newcomer closes the attacker opened first of those left
            newcomer = stack.enter_context(connect(d.port, "127.0.0.3"))
            assert closed_by_daemon(attackers[k])
            assert [still_open(s) for s in attackers[k + 1 :]] == [True] * (2 - k)
            assert ping(newcomer, f"new{k}", "s3cret") == f"new{k}"
        assert still_open(real)
        assert ping(real, "still", "s3cret") == "still"


def test_bytes_alone_do_not_keep_a_connection_open(tmp_path: Path) -> None:
    """A byte of junk now and then (part of a packet that never ends) is not activity: the idle timeout closes
    the connection all the same."""
    with start_daemon(tmp_path, tcp_idle_timeout_s=0.5) as d, connect(d.port) as sock:
        closed = False
        for _ in range(int(WAIT / 0.05)):  # bounded: before the fix this trickle kept it open for good
            if select.select([sock], [], [], 0.05)[0]:
                closed = closed_by_daemon(sock)
                break
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):  # closed between the check and the send
                closed = True
                break
        assert closed  # while it was still trickling


class HeldJob:
    """A runner whose job waits for :attr:`release`, then reports one made file."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        self.started.set()
        assert self.release.wait(3 * WAIT)
        return Outcome(["/renders/take.wav"])


def receive_until(sock: socket.socket, *addresses: str) -> tuple[str, list[Any]]:
    """Replies on ``sock`` until one at one of ``addresses`` (bounded: a job sends a handful)."""
    for _ in range(100):
        reply = receive(sock)
        if reply[0] in addresses:
            return reply
    raise AssertionError(f"no reply at {addresses}")


@pytest.fixture()
def held_job() -> Iterator[HeldJob]:
    runner = HeldJob()
    yield runner
    runner.release.set()


def submit_job(sock: socket.socket, rid: str) -> None:
    send(sock, protocol.GENERATE, 9, rid, "bass", "bpm", 120, "bars", 1)
    assert receive_until(sock, protocol.ACCEPTED, protocol.ERROR) == (protocol.ACCEPTED, [rid, 0])


def test_a_connection_with_a_job_in_flight_is_never_closed_to_make_room(
    tmp_path: Path, held_job: HeldJob
) -> None:
    with start_daemon(tmp_path, held_job, tcp_max_connections=3) as d, ExitStack() as stack:
        waiting = stack.enter_context(connect(d.port))
        submit_job(waiting, "job")
        assert held_job.started.wait(WAIT)
        others = [stack.enter_context(connect(d.port, "127.0.0.2")) for _ in range(2)]
        assert [ping(s, f"other{i}") for i, s in enumerate(others)] == ["other0", "other1"]
        newcomer = stack.enter_context(connect(d.port, "127.0.0.3"))  # the job's connection is idle longest
        assert closed_by_daemon(others[0])
        assert still_open(others[1])
        held_job.release.set()
        assert receive_until(waiting, protocol.DONE, protocol.ERROR) == (
            protocol.DONE,
            ["job", "/renders/take.wav"],
        )
        assert ping(newcomer, "newcomer") == "newcomer"
        assert ping(waiting, "after") == "after"


def test_a_connection_with_a_job_in_flight_is_not_closed_for_idleness(
    tmp_path: Path, held_job: HeldJob
) -> None:
    with start_daemon(tmp_path, held_job, tcp_idle_timeout_s=0.5) as d, ExitStack() as stack:
        waiting = stack.enter_context(connect(d.port))
        submit_job(waiting, "job")
        assert held_job.started.wait(WAIT)
        assert receive_until(waiting, protocol.PROGRESS) == (protocol.PROGRESS, ["job", 0.0, "started"])
        quiet = stack.enter_context(connect(d.port))
        assert ping(quiet, "quiet") == "quiet"  # after the job's last reply: quiet since a shorter time
        assert closed_by_daemon(quiet)  # so the idle timeout has passed for the job's connection as well
        assert still_open(waiting)
        held_job.release.set()
        assert receive_until(waiting, protocol.DONE, protocol.ERROR)[0] == protocol.DONE


class FakeStream:
    """What :class:`Connections` reads of a stream."""

    def __init__(self, host: str) -> None:
        self.host, self.group = host, address_group(host)
        self.accepted, self.jobs_in_flight, self.closed = False, 0, False

    def close(self) -> None:
        self.closed = True


def test_the_per_address_cap_counts_ipv6_by_its_64() -> None:
    assert address_group("2001:db8:1:2::a") == address_group("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::a") == "2001:db8:1:3::/64"
    assert address_group("fe80::1%eth0") == "fe80::/64"
    assert address_group("::ffff:192.0.2.7") == address_group("192.0.2.7") == "192.0.2.7"
    assert address_group("192.0.2.8") == "192.0.2.8"
    table = Connections(TcpLimits(64, 2, 300.0), LogLimiter(logging.getLogger("test")))
    streams = [FakeStream(h) for h in ("2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2::c")]
    assert [table.admit(s) for s in streams] == [True, True, False]  # type: ignore[arg-type]
    assert table.admit(FakeStream("2001:db8:1:3::a"))  # type: ignore[arg-type]
    assert table.admit(FakeStream("::ffff:192.0.2.7")) and table.admit(FakeStream("192.0.2.7"))  # type: ignore[arg-type]
    assert not table.admit(FakeStream("192.0.2.7"))  # type: ignore[arg-type]
    assert len(table) == 5 and not any(s.closed for s in streams)
