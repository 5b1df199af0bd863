"""The daemon: the job queue alone, then end to end on loopback with python-osc, liblo and the CLI client.

Every test must leave no thread behind (the ``no_leaked_threads`` fixture fails it otherwise) and no server
running.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pythonosc import slip
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from bridge.cli_daemon import add_commands
from bridge.client import Client, Endpoint, locate
from bridge.config import Settings
from bridge.engines.base import ProgressCallback, engine_names
from bridge.errors import (
    Busy,
    Cancelled,
    ConfigError,
    DaemonUnreachable,
    StembridgeError,
    UnsupportedOperation,
)
from bridge.jobs.journal import Journal
from bridge.jobs.queue import JobEvent, JobQueue, QueueOverview, ReplyTo
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import PORT_FILE, DaemonThread, check_network_policy, read_port_file
from bridge.server.osc import encode_message

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0  # generous upper bound for any single reply; tests never assert on timing


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (a worker, a server loop, an executor)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not extra, f"the test left threads running: {[t.name for t in extra]}"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )


@pytest.fixture()
def song(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Two seconds of a stereo chord with a pulse, written as float WAV in tmp_path."""
    sr = 44100
    t = np.arange(2 * sr) / sr
    left = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 440 * t) * (
        np.sin(2 * np.pi * 2 * t) > 0
    )
    right = 0.2 * np.sin(2 * np.pi * 165 * t) + 0.05 * np.sin(2 * np.pi * 660 * t)
    audio = np.stack([left, right]).astype(np.float32)
    path = tmp_path / "in" / "My Song.wav"
    path.parent.mkdir()
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return path, audio


# --- fakes ------------------------------------------------------------------------------------------------


class GatedRunner:
    """A slow job: reports progress every few ms until released, then writes one file.

    Cancel is honoured between chunks because ``progress`` raises Cancelled; a cancelled job writes nothing.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def __call__(
        self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None
    ) -> Outcome:
        self.calls.append(spec.kind)
        self.started.set()
        step = 0
        while not self.release.wait(0.002):
            progress(min(0.9, step / 2000), "working")
            step += 1
        out = Path(spec.options["out"])
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{spec.kind}-{len(self.calls)}.wav"
        path.write_bytes(b"RIFF")
        progress(1.0, "done")
        return Outcome([str(path)])


class Events:
    def __init__(self) -> None:
        self.items: list[JobEvent] = []
        self.cond = threading.Condition()

    def __call__(self, event: JobEvent) -> None:
        with self.cond:
            self.items.append(event)
            self.cond.notify_all()

    def ends(self) -> list[tuple[str, str, str]]:
        return [(e.request_id, e.kind, e.code) for e in self.items if e.kind in ("done", "error")]

    def wait(self, n_ends: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.ends()) >= n_ends, WAIT), self.items


def spec(kind: str = "vary", out: Path | None = None) -> JobSpec:
    return JobSpec(kind, {"path": "/x.wav", "out": str(out or "/tmp/none")})


# --- the queue on its own -----------------------------------------------------------------------------------


def test_progress_is_rate_limited_but_the_last_always_goes_out() -> None:
    now = [0.0]

    def chatty(s: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
        for i in range(1000):  # one call per millisecond of fake time: 1 s of work
            now[0] = i / 1000
            progress(i / 1000, "chunk")
        now[0] = 1.0
        progress(0.999, "last chunk")  # held back by the limit, sent before done
        return Outcome([])

    events = Events()
    queue = JobQueue(chatty, Journal(":memory:"), events, progress_interval=0.05, clock=lambda: now[0])
    queue.start()
    queue.submit("h", "j", spec(), ReplyTo("h", 1))
    events.wait(1)
    assert queue.shutdown(5)
    progress = [(e.fraction, e.stage) for e in events.items if e.kind == "progress"]
    assert progress[0] == (0.0, "started")
    assert 20 <= len(progress) <= 23  # ~20 per second of work, not 1000
    assert progress[-1] == (0.999, "last chunk")
    assert events.items[-1].kind == "done"
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions)


def test_progress_never_goes_down() -> None:
    def wobbly(s: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
        for fraction in (0.2, 0.5, 0.3, 0.6, -1.0, 2.0):
            progress(fraction, "x")
        return Outcome([])

    events = Events()
    queue = JobQueue(wobbly, Journal(":memory:"), events, progress_interval=0.0)
    queue.start()
    queue.submit("h", "j", spec(), ReplyTo("h", 1))
    events.wait(1)
    assert queue.shutdown(5)
    assert [e.fraction for e in events.items if e.kind == "progress"] == [0.0, 0.2, 0.5, 0.5, 0.6, 0.6, 1.0]


def test_cancel_queued_at_once_and_running_at_the_next_chunk(tmp_path: Path) -> None:
    runner, events = GatedRunner(), Events()
    queue = JobQueue(runner, Journal(":memory:"), events)
    queue.start()
    queue.submit("h", "running", spec(out=tmp_path), ReplyTo("h", 1))
    second = queue.submit("h", "waiting", spec(out=tmp_path), ReplyTo("h", 1))
    assert second.status.position == 1
    assert runner.started.wait(WAIT)
    assert queue.cancel("h", "waiting").state == "cancelled"  # at once: it never runs
    assert queue.cancel("h", "running").state == "running"  # stops at its next chunk
    events.wait(2)
    assert sorted(events.ends()) == [("running", "error", "cancelled"), ("waiting", "error", "cancelled")]
    assert runner.calls == ["vary"] and list(tmp_path.iterdir()) == []
    assert queue.status("h", "running").state == "cancelled"
    assert queue.cancel("h", "running").state == "cancelled"  # cancelling again changes nothing
    assert queue.cancel("h", "nobody").state == "unknown"
    assert queue.shutdown(5)


def test_a_full_queue_is_busy_and_failures_do_not_stop_the_worker(tmp_path: Path) -> None:
    gate = GatedRunner()

    def runner(s: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
        if s.kind == "generate":
            raise UnsupportedOperation("the fake engine cannot generate 'kazoo'")
        if s.kind == "separate":
            raise RuntimeError("a bug")
        return gate(s, progress)

    events = Events()
    queue = JobQueue(runner, Journal(":memory:"), events, max_pending=2)
    queue.start()
    queue.submit("h", "a", spec("vary", tmp_path), ReplyTo("h", 1))
    assert gate.started.wait(WAIT)
    queue.submit("h", "b", spec("generate"), ReplyTo("h", 1))
    queue.submit("h", "c", spec("separate"), ReplyTo("h", 1))
    with pytest.raises(Busy, match=r"the queue is full \(2 jobs waiting\)"):
        queue.submit("h", "d", spec(), ReplyTo("h", 1))
    gate.release.set()
    events.wait(3)
    assert events.ends() == [("a", "done", ""), ("b", "error", "unsupported"), ("c", "error", "error")]
    failed = queue.status("h", "c")
    assert (
        failed.state == "failed"
        and failed.message == "internal error: RuntimeError: a bug; see the daemon log"
    )
    assert queue.shutdown(5)


def test_shutdown_ends_every_job_exactly_once(tmp_path: Path) -> None:
    runner, events = GatedRunner(), Events()
    queue = JobQueue(runner, Journal(":memory:"), events)
    queue.start()
    for rid in ("r", "q1", "q2"):
        queue.submit("h", rid, spec(out=tmp_path), ReplyTo("h", 1))
    assert runner.started.wait(WAIT)
    assert queue.shutdown(5)
    assert sorted(events.ends()) == [
        ("q1", "error", "cancelled"),
        ("q2", "error", "cancelled"),
        ("r", "error", "cancelled"),
    ]
    assert "shutting down" in events.items[-1].message
    with pytest.raises(Busy, match="shutting down"):
        queue.submit("h", "late", spec(), ReplyTo("h", 1))


# --- end to end on loopback ---------------------------------------------------------------------------------


class OscPeer:
    """A client as Max sees it: python-osc's SimpleUDPClient sends from one port, replies come to another."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sender = SimpleUDPClient("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.reply_port = self.sock.getsockname()[1]
        self.received: list[tuple[str, list[Any]]] = []

    def request(self, address: str, request_id: Any, *rest: Any) -> None:
        self.sender.send_message(address, [self.reply_port, request_id, *rest])

    def raw(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def wait_for(self, request_id: str, *addresses: str) -> tuple[str, list[Any]]:
        """The next reply for ``request_id`` at one of ``addresses``; every reply is kept in ``received``."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            msg = OscMessage(data)
            self.received.append((msg.address, list(msg.params)))
            if msg.params and msg.params[0] == request_id and msg.address in addresses:
                return msg.address, list(msg.params)
        raise AssertionError(f"no {addresses} for {request_id!r}; got {self.received}")

    def close(self) -> None:
        self.sock.close()
        self.sender.close()


@pytest.fixture()
def gate() -> Iterator[GatedRunner]:
    runner = GatedRunner()
    yield runner
    runner.release.set()


@pytest.fixture()
def daemon(settings: Settings) -> Iterator[DaemonThread]:
    """A daemon with the real pipeline."""
    with DaemonThread(settings, discovery=False) as d:
        yield d


@pytest.fixture()
def peer(daemon: DaemonThread) -> Iterator[OscPeer]:
    p = OscPeer(daemon.port)
    yield p
    p.close()


def test_ping_replies_to_the_reply_port_not_the_sender(daemon: DaemonThread, peer: OscPeer) -> None:
    peer.request(protocol.PING, "p1")
    address, args = peer.wait_for("p1", protocol.PONG)
    assert args == ["p1", "0.1.0", *engine_names()] and "builtin" in args
    peer.sender.send_message(protocol.PING, [float(peer.reply_port), 2.0])  # Pd: every number a float
    assert peer.wait_for("2", protocol.PONG)[1][0] == "2"


def test_separate_end_to_end(
    daemon: DaemonThread, peer: OscPeer, song: tuple[Path, np.ndarray], settings: Settings
) -> None:
    path, audio = song
    peer.request(protocol.SEPARATE, "sep1", str(path), "bitdepth", 32.0)
    assert peer.wait_for("sep1", protocol.ACCEPTED, protocol.ERROR) == (protocol.ACCEPTED, ["sep1", 0])
    address, args = peer.wait_for("sep1", protocol.DONE, protocol.ERROR)
    assert address == protocol.DONE, args
    outputs = [Path(p) for p in args[1:]]
    assert [p.name for p in outputs] == [f"My_Song__{s}.wav" for s in ("drums", "bass", "vocals", "other")]
    stems = []
    for p in outputs:
        assert p.parent == settings.out_dir.resolve()
        data, sr = sf.read(p, dtype="float32", always_2d=True)
        assert sr == 44100 and data.shape == (audio.shape[1], 2)  # sample-exact length, stereo kept
        stems.append(data.T)
    assert np.max(np.abs(np.sum(stems, axis=0) - audio)) < 1e-4  # the stems add back up to the song
    progress = [a for addr, a in peer.received if addr == protocol.PROGRESS and a[0] == "sep1"]
    fractions = [a[1] for a in progress]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    assert all(isinstance(a[2], str) and a[2] for a in progress)
    ends = [
        addr for addr, a in peer.received if a and a[0] == "sep1" and addr in (protocol.DONE, protocol.ERROR)
    ]
    assert ends == [protocol.DONE]
    # status after done answers from the journal, with the files
    peer.request(protocol.STATUS, "st1", "sep1")
    assert peer.wait_for("sep1", protocol.STATE)[1] == ["sep1", "done", 1.0, *args[1:]]


def test_bad_requests_get_error_replies_and_the_daemon_keeps_serving(
    daemon: DaemonThread, peer: OscPeer, tmp_path: Path
) -> None:
    peer.request(protocol.SEPARATE, "b1", str(tmp_path / "missing.wav"))
    _, args = peer.wait_for("b1", protocol.ERROR, protocol.ACCEPTED)
    assert args[1] == "unreadable_audio" and str(tmp_path / "missing.wav") in args[2]
    peer.request(protocol.VARY, "b2", "relative.wav")
    assert peer.wait_for("b2", protocol.ERROR)[1][1] == "invalid_argument"
    peer.request(protocol.GENERATE, "b3", "bass", "bpm", "fast", "bars", 4)
    assert "bpm must be a number" in peer.wait_for("b3", protocol.ERROR)[1][2]
    peer.request("/stembridge/explode", "b4")
    assert peer.wait_for("b4", protocol.ERROR)[1][1] == "invalid_argument"
    peer.raw(b"\x00garbage that is not OSC")
    peer.raw(encode_message(protocol.PING, [peer.reply_port, "trunc"])[:-2])
    peer.request(protocol.STATUS, "b5", "never-submitted")
    assert peer.wait_for("never-submitted", protocol.STATE)[1] == ["never-submitted", "unknown"]
    peer.request(protocol.PING, "still-here")
    assert peer.wait_for("still-here", protocol.PONG)
    assert not list((tmp_path / "renders").glob("*"))


def test_queue_overview_shows_other_machines_jobs_without_their_ids() -> None:
    gate, events = GatedRunner(), Events()
    queue = JobQueue(gate, Journal(":memory:"), events)
    queue.start()
    try:
        assert queue.overview("me") == QueueOverview(running=False, waiting=0)
        queue.submit("them", "theirs", spec(), ReplyTo("them", 1))
        assert gate.started.wait(WAIT)
        queue.submit("me", "mine", spec(), ReplyTo("me", 1))
        queue.submit("them", "theirs-2", spec(), ReplyTo("them", 1))
        mine, theirs = queue.overview("me"), queue.overview("them")
        assert (mine.running, mine.waiting, mine.job, mine.yours_waiting) == (True, 2, "", 1)
        assert (theirs.job, theirs.yours_waiting) == ("theirs", 1)
    finally:
        gate.release.set()
        assert queue.shutdown(5)


def test_queue_request_over_osc_and_the_request_command(
    settings: Settings, gate: GatedRunner, song: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    with DaemonThread(settings, gate, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.QUEUE, "q0")
            assert peer.wait_for("q0", protocol.QUEUE_REPLY)[1] == ["q0", 0, 0, "", 0.0, "", 0]
            peer.request(protocol.VARY, "slow", str(song[0]))
            assert gate.started.wait(WAIT)
            peer.request(protocol.VARY, "next", str(song[0]))
            peer.wait_for("next", protocol.ACCEPTED)
            peer.request(protocol.QUEUE, "q1")
            _, args = peer.wait_for("q1", protocol.QUEUE_REPLY)
            assert args[:4] == ["q1", 1, 1, "slow"] and args[5] in ("started", "working") and args[6] == 1
            args_, handler = cli("request", "queue", "--port", str(d.port))
            assert handler(args_) == 0
            assert capsys.readouterr().out.strip().startswith("a job running (yours: slow, ")
            args_, handler = cli("request", "queue", "--port", str(d.port), "--json")
            assert handler(args_) == 0
            assert json.loads(capsys.readouterr().out)["queue"]["waiting"] == 1
        finally:
            gate.release.set()
            peer.close()


def test_cancel_a_running_job(
    settings: Settings, gate: GatedRunner, tmp_path: Path, song: tuple[Path, np.ndarray]
) -> None:
    with DaemonThread(settings, gate, discovery=False) as d:
        peer, canceller = OscPeer(d.port), OscPeer(d.port)
        try:
            peer.request(protocol.VARY, "slow", str(song[0]))
            peer.wait_for("slow", protocol.ACCEPTED)
            assert gate.started.wait(WAIT)
            peer.wait_for("slow", protocol.PROGRESS)
            # the same request again while it runs: its state, not a second job
            peer.request(protocol.VARY, "slow", str(song[0]))
            assert peer.wait_for("slow", protocol.STATE)[1][1] == "running"
            canceller.request(protocol.CANCEL, "c1", "slow")
            assert canceller.wait_for("slow", protocol.STATE)[1][:2] == ["slow", "running"]
            address, args = peer.wait_for("slow", protocol.ERROR, protocol.DONE)
            assert (address, args[1]) == (protocol.ERROR, "cancelled")
            assert gate.calls == ["vary"]
            peer.request(protocol.STATUS, "s", "slow")
            assert peer.wait_for("slow", protocol.STATE)[1][1] == "cancelled"
        finally:
            peer.close()
            canceller.close()
    assert not settings.out_dir.exists() or not any(settings.out_dir.iterdir())  # no output files


def test_restart_reports_the_cut_off_job_to_its_client(settings: Settings, tmp_path: Path) -> None:
    settings.state_dir.mkdir(parents=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    journal = Journal(settings.state_dir / "journal.sqlite3")  # as a crashed daemon left it
    journal.add("127.0.0.1", "lost", "separate", {"path": "/a.wav"}, "127.0.0.1", listener.getsockname()[1])
    journal.update("127.0.0.1", "lost", "running")
    journal.close()
    try:
        with DaemonThread(settings, discovery=False) as d:
            listener.settimeout(WAIT)
            msg = OscMessage(listener.recv(65536))
            assert (msg.address, msg.params[:2]) == (protocol.ERROR, ["lost", "interrupted"])
            with Client(Endpoint("127.0.0.1", d.port)) as client:
                state = client.status("lost")
            assert (state.state, state.code) == ("failed", "interrupted")
    finally:
        listener.close()


def test_tcp_slip_and_length_prefixed_on_the_same_port(daemon: DaemonThread) -> None:
    ping = encode_message(protocol.PING, [9, "tcp1"])
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT) as s:
        s.sendall(slip.encode(ping)[:7])  # a frame may arrive in pieces
        s.sendall(slip.encode(ping)[7:])
        buf = b""
        while buf.count(slip.END) < 2:
            buf += s.recv(4096)
        msg = OscMessage(slip.decode(buf))
        assert (msg.address, msg.params[0]) == (protocol.PONG, "tcp1")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=WAIT) as s:  # OSC 1.0 framing
        s.sendall(struct.pack(">I", len(ping)) + ping)
        size = struct.unpack(">I", s.recv(4))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
        assert OscMessage(data).address == protocol.PONG


def test_token_and_network_policy(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="refusing to start without a token"):
        check_network_policy(Settings(host="0.0.0.0"))
    check_network_policy(Settings(host="::1"))
    check_network_policy(Settings(host="192.168.1.5", token="t"))
    guarded = Settings(out_dir=settings.out_dir, state_dir=settings.state_dir, port=0, token="s3cret")
    with DaemonThread(guarded, discovery=False) as d:
        with Client(Endpoint("127.0.0.1", d.port)) as client, pytest.raises(StembridgeError) as info:
            client.ping()
        assert info.value.code == "unauthorized"
        with Client(Endpoint("127.0.0.1", d.port), token="s3cret") as client:
            assert client.ping()[0] == "0.1.0"


def test_one_daemon_per_state_dir_and_the_port_file(settings: Settings) -> None:
    with DaemonThread(settings, discovery=False) as d:
        info = read_port_file(settings.state_dir)
        assert info is not None and info["port"] == d.port and info["pid"] == os.getpid()
        assert locate(settings) == Endpoint("127.0.0.1", d.port)
        with pytest.raises(ConfigError, match="another stembridge daemon .* is using the state folder"):
            DaemonThread(settings, discovery=False).start()
    assert not (settings.state_dir / PORT_FILE).exists()


def test_models_are_listed_off_the_event_loop(daemon: DaemonThread, peer: OscPeer) -> None:
    peer.request(protocol.MODELS, "m1")
    _, args = peer.wait_for("m1", protocol.MODELS_REPLY, protocol.ERROR)
    rows = [args[i : i + 5] for i in range(1, len(args), 5)]
    assert ["builtin", "builtin", "separate/generate/vary", 1, ""] in rows
    assert all(len(r) == 5 and r[3] in (0, 1) and (r[3] == 1) == (r[4] == "") for r in rows)


def test_a_taken_port_is_a_clear_error(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on UDP 127.0.0.1:{port}: .*pass --port"):
            DaemonThread(Settings(state_dir=settings.state_dir, port=port), discovery=False).start()
    assert not (settings.state_dir / PORT_FILE).exists()


class LossyDaemon:
    """A stand-in daemon whose ``done`` datagram gets lost: it accepts, then only answers status requests."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, (host, _) = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            msg = OscMessage(data)
            self.seen.append(msg.address)
            port, rid = msg.params[0], msg.params[1]
            if msg.address == protocol.SEPARATE and self.seen.count(protocol.SEPARATE) >= 2:
                reply = protocol.accepted(rid, 0)  # the first request "got lost": the client sent it again
            elif msg.address == protocol.STATUS:
                reply = protocol.state(msg.params[2], "done", 1.0, ["/r/a.wav"])
            else:
                continue
            self.sock.sendto(encode_message(*reply), (host, port))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_client_resends_and_polls_status_when_replies_are_lost(tmp_path: Path) -> None:
    fake = LossyDaemon()
    try:
        with Client(Endpoint("127.0.0.1", fake.port), resend_interval=0.05, quiet_poll=0.1) as client:
            result = client.run("separate", [str(tmp_path / "a.wav")], {}, request_id="r1")
    finally:
        fake.close()
    assert result.paths == ["/r/a.wav"]
    assert fake.seen[:2] == [protocol.SEPARATE, protocol.SEPARATE] and protocol.STATUS in fake.seen


def test_client_reports_no_daemon() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        silent = s.getsockname()[1]  # a port where nobody answers
        with Client(Endpoint("127.0.0.1", silent), answer_timeout=0.3) as client:
            with pytest.raises(DaemonUnreachable, match="no answer within 0.3 s from a stembridge daemon"):
                client.ping()


# --- the CLI client -----------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[argparse.Namespace, Any]:
    parser = argparse.ArgumentParser(prog="stembridge")
    sub = parser.add_subparsers(dest="command")
    handlers = add_commands(sub)
    args = parser.parse_args(argv)
    return args, handlers[args.command]


def test_request_command_with_result_file(
    daemon: DaemonThread, song: tuple[Path, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(daemon.port)
    result = tmp_path / "result.json"
    flags = f"--stems drums,bass --port {port} --request-id cli-1 --out takes".split()
    args, handler = cli("request", "separate", str(song[0]), *flags, "--result-file", str(result))
    assert handler(args) == 0
    payload = json.loads(result.read_text())
    assert payload["status"] == "done" and payload["request_id"] == "cli-1"
    paths = payload["paths"]
    assert [Path(p).name for p in paths] == ["My_Song__drums.wav", "My_Song__bass.wav"]
    assert all(Path(p).parent.name == "takes" and Path(p).is_file() for p in paths)
    # the shape `stembridge separate --json` prints: stem, path, variation per file
    assert payload["outputs"] == [
        {"stem": "drums", "path": paths[0], "variation": None},
        {"stem": "bass", "path": paths[1], "variation": None},
    ]
    lines = (tmp_path / "result.json.progress").read_text().splitlines()
    assert lines[0] == "0.000 queued 0" and lines[-1] == "1.000 done"
    assert capsys.readouterr().out.split() == paths

    args, handler = cli("request", "status", "cli-1", "--port", port, "--json")
    assert handler(args) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done" and status["outputs"] == payload["outputs"] and status["paths"] == paths

    flags = "--stem bass --bpm 120 --bars 2 --variations 2 --seed 4 --out takes --json".split()
    args, handler = cli("request", "generate", *flags, "--port", port, "--result-file", str(result))
    assert handler(args) == 0
    printed = json.loads(capsys.readouterr().out)
    names = [Path(p).name for p in printed["paths"]]  # the audio, then the built-in engine's notes
    assert names == [f"generated__bass__120bpm__2bars__v{k}.{ext}" for ext in ("wav", "mid") for k in (1, 2)]
    assert [(o["stem"], o["variation"]) for o in printed["outputs"]] == [("bass", 1), ("bass", 2)]
    assert [o["midi"] for o in printed["outputs"]] == printed["paths"][2:]
    assert {k: v for k, v in json.loads(result.read_text()).items() if k in printed} == printed

    args, handler = cli(
        "request", "vary", str(tmp_path / "nope.wav"), "--port", port, "--result-file", str(result)
    )
    with pytest.raises(StembridgeError) as info:
        handler(args)  # bridge.cli.main turns this into exit code 2
    assert info.value.code == "unreadable_audio"
    assert json.loads(result.read_text())["error"]["code"] == "unreadable_audio"


# --- liblo's command-line tools -----------------------------------------------------------------------------


def need_liblo() -> None:
    if shutil.which("oscsend") and shutil.which("oscdump"):
        return
    if os.environ.get("CI"):
        pytest.fail("oscsend/oscdump are missing: install liblo-tools (the CI script should)")
    pytest.skip("oscsend/oscdump not installed (apt-get install liblo-tools)")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_oscsend_and_oscdump_round_trip(daemon: DaemonThread, song: tuple[Path, np.ndarray]) -> None:
    need_liblo()
    port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        time.sleep(0.2)  # let oscdump bind before the replies come
        send = ["oscsend", "127.0.0.1", str(daemon.port)]
        subprocess.run([*send, protocol.PING, "fs", str(port), "liblo-1"], check=True)
        subprocess.run(
            [*send, protocol.SEPARATE, "issss", str(port), "liblo-2", str(song[0]), "stems", "bass"],
            check=True,
        )
        assert dump.stdout is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not any("/stembridge/done" in line for line in lines):
            lines.append(dump.stdout.readline().strip())
    finally:
        dump.kill()
        dump.wait()
    # oscdump prints "<timetag> <address> <types> <values>"; the timetag varies
    seen = [line.split(" ", 1)[1] for line in lines if " /stembridge/" in line]
    engines = " ".join(f'"{name}"' for name in engine_names())
    assert f'/stembridge/pong ss{"s" * len(engine_names())} "liblo-1" "0.1.0" {engines}' in seen
    assert '/stembridge/accepted si "liblo-2" 0' in seen
    done = [line for line in seen if line.startswith("/stembridge/done")]
    assert len(done) == 1 and done[0].startswith('/stembridge/done ss "liblo-2" "/')
    assert done[0].endswith('/renders/My_Song__bass.wav"')


# --- the serve command in a process of its own --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "discovery"), [(signal.SIGTERM, True), (signal.SIGINT, False)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_cancels_the_running_job_and_exits_cleanly(
    sig: signal.Signals, discovery: bool, tmp_path: Path, settings: Settings
) -> None:
    script = textwrap.dedent(f"""
        import logging, time
        from pathlib import Path
        from bridge.config import Settings
        from bridge.jobs.spec import Outcome
        from bridge.server.daemon import serve
        logging.basicConfig(level=logging.INFO)
        def endless(spec, progress, on_publish):
            while True:
                progress(0.5, "working")
                time.sleep(0.005)
        out, state = Path({str(settings.out_dir)!r}), Path({str(settings.state_dir)!r})
        where = Settings(out_dir=out, state_dir=state, port=0)
        raise SystemExit(serve(where, runner=endless, discovery={discovery!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while read_port_file(settings.state_dir) is None or (
            discovery and not any("discoverable over" in x or "discovery is off" in x for x in lines)
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not start: {''.join(lines)}")
            time.sleep(0.05)
        (tmp_path / "x.wav").write_bytes(b"x")  # the fake job never reads it
        with Client(locate(settings)) as client:
            got: list[float] = []
            outcome: list[BaseException] = []

            def run() -> None:
                try:
                    client.run(
                        "vary",
                        [str(tmp_path / "x.wav")],
                        {},
                        request_id="long",
                        on_progress=lambda f, s: got.append(f),
                    )
                except BaseException as exc:  # handed to the test's thread
                    outcome.append(exc)

            worker = threading.Thread(target=run)
            worker.start()
            while not got:
                assert worker.is_alive() and time.monotonic() < deadline, outcome
                time.sleep(0.01)
            proc.send_signal(sig)
            worker.join(WAIT)
        assert proc.wait(WAIT) == 0
        reader.join(WAIT)
        err = outcome[0]
        assert isinstance(err, Cancelled) and "shutting down" in str(err)
        assert read_port_file(settings.state_dir) is None
        log = "".join(lines)
        assert "INFO:bridge.server.daemon:stopped" in log
        if "discoverable over mDNS" in log:  # the advertisement is withdrawn before the daemon says stopped
            assert log.index("withdrew the mDNS advertisement") < log.index("daemon:stopped")
        assert discovery or "mDNS" not in log
        record = Journal(settings.state_dir / "journal.sqlite3").get("127.0.0.1", "long")
        assert record is not None and (record.state, record.error_code) == ("cancelled", "cancelled")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(WAIT)
