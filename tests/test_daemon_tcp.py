"""TCP connections cannot lock clients out: idle ones are closed, one address holds only so many, and a full
table makes room for a new client by closing the connection idle longest. Loopback only (127.0.0.2 and up
stand in for other machines: Linux answers on all of 127.0.0.0/8)."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pythonosc import slip
from pythonosc.osc_message import OscMessage

from bridge.config import Settings, load_settings
from bridge.engines.base import ProgressCallback
from bridge.errors import ConfigError
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.osc import encode_message

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


def start_daemon(tmp_path: Path, **overrides: object) -> DaemonThread:
    settings = Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0)
    return DaemonThread(settings.with_overrides(**overrides), no_jobs, discovery=False)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))


def ping(sock: socket.socket, rid: str) -> str:
    """Send a ping on ``sock``; the id of the pong that comes back on it."""
    sock.sendall(slip.encode(encode_message(protocol.PING, [9, rid])))
    buf = b""
    while buf.count(slip.END) < 2:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        buf += chunk
    msg = OscMessage(slip.decode(buf))
    assert msg.address == protocol.PONG
    return str(msg.params[0])


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
