"""What a job request is checked against before it is queued: a request_id reused for another job, files checked
off the event loop (a slow disk cannot hold up ping), the allowed roots checked before any file is looked at, and
what ``stembridge request`` makes of the paths the daemon sends back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client, Endpoint, describe_output
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import InvalidArgument
from bridge.jobs.journal import Journal
from bridge.jobs.queue import JobQueue, JobStatus, ReplyTo, Submission
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.handlers import RequestHandler
from bridge.server.lograte import LogLimiter
from bridge.server.osc import encode_message
from tests.test_daemon import (  # noqa: F401 - no_leaked_threads fails a test that leaks threads
    WAIT,
    Events,
    GatedRunner,
    OscPeer,
    no_leaked_threads,
)

REUSED = "request_id 'g5' was already used for a different job; pick a new id"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )


@pytest.fixture()
def gate() -> Iterator[GatedRunner]:
    runner = GatedRunner()
    yield runner
    runner.release.set()


def audio_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF....WAVE")  # the daemon checks paths here; the fake runners never read them
    return str(path)


# --- a request_id reused for another job ------------------------------------------------------------------


def test_a_request_id_reused_for_another_job_is_refused_over_udp(settings: Settings) -> None:
    """The reviewer's repro: ``g5`` for a bass part, then ``g5`` for keys got the bass part's files."""
    with DaemonThread(settings, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.GENERATE, "g5", "bass", "bpm", 120, "bars", 2)
            assert peer.wait_for("g5", protocol.ACCEPTED, protocol.ERROR)[0] == protocol.ACCEPTED
            address, done = peer.wait_for("g5", protocol.DONE, protocol.ERROR)
            assert address == protocol.DONE and [Path(p).name for p in done[1:]] == [
                "generated__bass__120bpm__2bars__v1.wav",
                "generated__bass__120bpm__2bars__v1.mid",
            ]
            peer.request(protocol.GENERATE, "g5", "keys", "bpm", 90, "bars", 4)
            assert peer.wait_for("g5", protocol.ERROR, protocol.STATE)[1] == [
                "g5",
                "invalid_argument",
                REUSED,
            ]
            # the same job again (numbers as Pd sends them) is a repeat: the first job's state and files
            peer.request(protocol.GENERATE, "g5", "bass", "bpm", 120.0, "bars", 2.0)
            assert peer.wait_for("g5", protocol.STATE, protocol.ERROR)[1] == ["g5", "done", 1.0, *done[1:]]
        finally:
            peer.close()
    assert sorted(p.name for p in settings.out_dir.iterdir()) == [
        "generated__bass__120bpm__2bars__v1.mid",
        "generated__bass__120bpm__2bars__v1.wav",
    ]


def test_a_reused_request_id_is_refused_while_the_first_job_runs(
    settings: Settings, gate: GatedRunner, tmp_path: Path
) -> None:
    song, other = audio_file(tmp_path, "song.wav"), audio_file(tmp_path, "other.wav")
    with DaemonThread(settings, gate, discovery=False) as d:
        first, second = OscPeer(d.port), OscPeer(d.port)
        try:
            first.request(protocol.VARY, "r1", song)
            first.wait_for("r1", protocol.ACCEPTED)
            assert gate.started.wait(WAIT)
            second.request(protocol.VARY, "r1", other)  # another file: another job
            _, args = second.wait_for("r1", protocol.ERROR, protocol.STATE)
            assert args[1:] == ["invalid_argument", REUSED.replace("g5", "r1")]
            second.request(protocol.SEPARATE, "r1", song)  # another kind of job
            assert second.wait_for("r1", protocol.ERROR, protocol.STATE)[1][1] == "invalid_argument"
            gate.release.set()
            # the refused requests did not take over the running job's replies: its client gets the end
            assert first.wait_for("r1", protocol.DONE, protocol.ERROR)[0] == protocol.DONE
            assert gate.calls == ["vary"]
        finally:
            first.close()
            second.close()


def test_the_journal_tells_a_repeat_from_a_new_job_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    bass = JobSpec("generate", {"stem": "bass", "bpm": 120.0, "bars": 2, "out": "/r"})

    def runner(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        return Outcome([f"/r/generated__{spec.options['stem']}.wav"])

    done = Events()
    queue = JobQueue(runner, Journal(path), done)
    queue.start()
    assert queue.submit("h", "g5", bass, ReplyTo("h", 1)).new
    done.wait(1)
    assert queue.shutdown(5)

    events = Events()
    again = JobQueue(runner, Journal(path), events)  # a restarted daemon
    repeat = again.submit("h", "g5", JobSpec("generate", dict(bass.options)), ReplyTo("h", 2))
    assert not repeat.new and (repeat.status.state, repeat.status.paths) == (
        "done",
        ("/r/generated__bass.wav",),
    )
    keys = JobSpec("generate", {**bass.options, "stem": "keys", "bpm": 90.0, "bars": 4})
    with pytest.raises(InvalidArgument) as info:
        again.submit("h", "g5", keys, ReplyTo("h", 2))
    assert info.value.message == REUSED
    assert again.submit("10.0.0.7", "g5", keys, ReplyTo("10.0.0.7", 2)).new  # ids are per client
    assert again.shutdown(5)
    assert [e.request_id for e in events.items if e.kind == "error"] == ["g5"]  # cancelled: never started


# --- files are checked off the event loop -------------------------------------------------------------------


class SlowDisk:
    """Makes ``Path.exists`` hang for files named ``slow.wav`` until released, as a sleeping network volume
    does; every other path is answered as usual."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        real = Path.exists

        def exists(path: Path, *args: Any, **kwargs: Any) -> bool:
            if path.name == "slow.wav":
                self.calls += 1
                self.entered.set()
                self.release.wait(3 * WAIT)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(Path, "exists", exists)


@pytest.fixture()
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDisk]:
    disk = SlowDisk(monkeypatch)
    yield disk
    disk.release.set()


def test_ping_status_and_cancel_answer_while_a_file_check_hangs(
    settings: Settings, gate: GatedRunner, slow_disk: SlowDisk, tmp_path: Path
) -> None:
    slow = audio_file(tmp_path, "slow.wav")
    with DaemonThread(settings, gate, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.VARY, "v1", slow)
            assert slow_disk.entered.wait(WAIT)  # its file check now hangs in a worker thread
            peer.request(protocol.PING, "p1")
            peer.wait_for("p1", protocol.PONG)  # answered while the stat still hangs (released only below)
            peer.request(protocol.STATUS, "s1", "v1")
            assert peer.wait_for("v1", protocol.STATE)[1] == ["v1", "queued", 0.0]
            assert not [a for _, a in peer.received if a[0] == "v1" and len(a) == 2]  # no accepted yet
            slow_disk.release.set()
            assert peer.wait_for("v1", protocol.ACCEPTED, protocol.ERROR) == (protocol.ACCEPTED, ["v1", 0])
            gate.release.set()
            assert peer.wait_for("v1", protocol.DONE, protocol.ERROR)[0] == protocol.DONE

            slow_disk.release.clear()
            slow_disk.entered.clear()
            peer.request(protocol.VARY, "v2", slow)
            assert slow_disk.entered.wait(WAIT)
            peer.request(protocol.CANCEL, "c2", "v2")
            assert peer.wait_for("v2", protocol.STATE)[1][:2] == ["v2", "cancelled"]
            slow_disk.release.set()
            _, args = peer.wait_for("v2", protocol.ERROR, protocol.ACCEPTED)
            assert args[1] == "cancelled"  # dropped once its check ended: never queued, never run
            peer.request(protocol.STATUS, "s2", "v2")
            assert peer.wait_for("v2", protocol.STATE)[1] == ["v2", "unknown"]
            assert gate.calls == ["vary"]
        finally:
            peer.close()


class Recorder:
    """Stands in for the replier and the queue."""

    def __init__(self) -> None:
        self.sent: list[tuple[ReplyTo, tuple[str, list[Any]]]] = []
        self.submitted: list[str] = []

    def send(self, to: ReplyTo, reply: tuple[str, list[Any]]) -> None:
        self.sent.append((to, reply))

    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission:
        self.submitted.append(request_id)
        return Submission(True, JobStatus(request_id, "queued"))


def feed(handler: RequestHandler, *packets: tuple[bytes, str]) -> None:
    """``(packet, sender IP)`` pairs handled on an event loop, each answered before the next."""

    async def run() -> None:
        for data, host in packets:
            handler.on_packet(data, host, 5000, None)
            await handler.drain()

    asyncio.run(run())


def make_handler(settings: Settings, rec: Recorder, **kwargs: Any) -> RequestHandler:
    logs = LogLimiter(logging.getLogger("test.requests"))
    return RequestHandler(settings, rec, rec, logs, **kwargs)  # type: ignore[arg-type]


def test_a_file_check_that_hangs_times_out_with_an_error(
    settings: Settings, slow_disk: SlowDisk, tmp_path: Path
) -> None:
    rec = Recorder()
    handler = make_handler(settings, rec, file_check_timeout=0.2)
    feed(handler, (encode_message(protocol.SEPARATE, [9001, "t1", audio_file(tmp_path, "slow.wav")]), "::1"))
    slow_disk.release.set()  # let the stuck thread go
    ((to, (address, args)),) = rec.sent
    assert (to.port, address, args[:2]) == (9001, protocol.ERROR, ["t1", "unreadable_audio"])
    assert args[2].startswith("checking the input files took longer than 0.2 s") and not rec.submitted


def test_parsing_without_the_disk_touches_no_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    song = audio_file(tmp_path, "in/song.wav")
    touched: list[str] = []

    def spy(name: str) -> Any:
        real = getattr(Path, name)

        def call(path: Path, *args: Any, **kwargs: Any) -> Any:
            touched.append(f"{name} {path}")
            return real(path, *args, **kwargs)

        return call

    args = [9001, "g", "bass", "bpm", 120, "bars", 4, "context", f"Macintosh HD:{song}", "out", "/abs/x"]
    for name in ("exists", "is_file", "resolve", "stat", "lstat"):
        monkeypatch.setattr(Path, name, spy(name))
    request = protocol.parse_request(
        protocol.GENERATE, args, settings, remote=True, disk=False, roots=[tmp_path]
    )
    monkeypatch.undo()
    assert touched == []
    assert request.job is None and request.pending is not None
    assert [p.text for p in request.pending.inputs] == [f"Macintosh HD:{song}"]
    assert request.pending.out == "/abs/x" and request.pending.remote
    with pytest.raises(InvalidArgument, match="out must be a folder inside the render folder"):
        request.finished(settings)  # the disk step checks the rest


# --- remote requests: the roots before the disk -----------------------------------------------------------


def test_a_remote_client_cannot_probe_for_files_outside_the_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = tmp_path / "shared"
    (tmp_path / "elsewhere").mkdir()
    audio_file(tmp_path, "elsewhere/secret.wav")
    inside.mkdir()
    (inside / "link").symlink_to(tmp_path / "elsewhere" / "deeper", target_is_directory=True)
    (tmp_path / "elsewhere" / "deeper").mkdir()
    settings = Settings(out_dir=tmp_path / "renders", allowed_roots=(inside,))
    looked_at: list[str] = []
    real_exists, real_is_file = Path.exists, Path.is_file

    def exists(path: Path, *args: Any, **kwargs: Any) -> bool:
        looked_at.append(str(path))
        return real_exists(path, *args, **kwargs)

    def is_file(path: Path, *args: Any, **kwargs: Any) -> bool:
        looked_at.append(str(path))
        return real_is_file(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setattr(Path, "is_file", is_file)
    probes = {
        "there": str(tmp_path / "elsewhere" / "secret.wav"),
        "missing": str(tmp_path / "elsewhere" / "nothing.wav"),
        # inside the root as written, but on the disk link/.. is elsewhere/, where secret.wav is
        "climb-there": str(inside / "link" / ".." / "secret.wav"),
        "climb-missing": str(inside / "link" / ".." / "nothing.wav"),
    }
    rec = Recorder()
    handler = make_handler(settings, rec)
    feed(
        handler,
        *[(encode_message(protocol.SEPARATE, [9001, rid, p]), "10.0.0.7") for rid, p in probes.items()],
    )
    replies = {args[0]: args[1:] for _, (_, args) in rec.sent}
    for rid, path in probes.items():
        code, message = replies[rid]
        assert code == "invalid_argument" and message.startswith("path must lie inside the render folder")
        assert message.endswith(f"got {path!r}; add its folder to allowed_roots in the daemon's config file")
    assert not [p for p in looked_at if "secret" in p or "nothing" in p]  # no file outside was looked at
    assert not rec.submitted


# --- what the client reads from the names of the files -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "stem", "variation"),
    [
        ("/r/My_Song__drums.wav", "drums", None),
        ("/r/My_Song__drums-2.wav", "drums", None),  # the name was taken
        ("/r/generated__bass__120bpm__2bars__v1.wav", "bass", 1),
        ("/r/song__keys__123.46bpm__8bars__v12-3.aiff", "keys", 12),
        ("/r/song__bass-var__120bpm__4bars__v2.wav", "bass-var", 2),  # a variation of a separated bass
        ("/r/take__var__98bpm__4bars__v1.wav", "var", 1),
        ("/r/a__b__drums.wav", "drums", None),  # a source name holding __
        ("/r/v1__drums.wav", "drums", None),
        ("/r/x__120bpm__drums.wav", "drums", None),
        ("C:\\Renders\\song__bass__v3.wav", "bass", 3),  # a daemon on Windows
        ("/r/not ours.wav", None, None),
    ],
)
def test_the_stem_and_variation_are_read_from_the_file_name(
    path: str, stem: str | None, variation: int | None
) -> None:
    assert describe_output(path) == {"stem": stem, "path": path, "variation": variation}


def test_the_names_read_back_agree_with_what_the_pipeline_reported(
    settings: Settings, tmp_path: Path
) -> None:
    """For real separations, generations and variations through the daemon, the stem and variation the client
    reads from each name are those the pipeline recorded for the file (the journal keeps its report)."""
    sr, t = 44100, np.arange(2 * 44100) / 44100
    mix = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 440 * t) * (
        np.sin(2 * np.pi * 2 * t) > 0
    )
    song = tmp_path / "in" / "My Song.wav"
    song.parent.mkdir()
    sf.write(song, np.stack([mix, 0.8 * mix]).T.astype(np.float32), sr, subtype="FLOAT")
    with DaemonThread(settings, discovery=False) as d:
        with Client(Endpoint("127.0.0.1", d.port), answer_timeout=WAIT) as client:
            client.run("separate", [str(song)], {"stems": "drums,bass"}, request_id="s")
            bass = settings.out_dir.resolve() / "My_Song__bass.wav"
            client.run("separate", [str(song)], {"stems": "bass"}, request_id="s2")  # taken: -2
            context = {"context": [str(bass)], "bpm": 120, "bars": 1, "variations": 2}
            client.run("generate", ["keys"], context, request_id="g")
            client.run("vary", [str(bass)], {"variations": 2, "bpm": 120, "bars": 1}, request_id="v")
    journal = Journal(settings.state_dir / "journal.sqlite3")
    reported = []
    for rid in ("s", "s2", "g", "v"):
        record = journal.get("127.0.0.1", rid)
        assert record is not None and record.detail is not None, rid
        reported += [{k: o[k] for k in ("stem", "path", "variation")} for o in record.detail["outputs"]]
    journal.close()
    assert [describe_output(o["path"]) for o in reported] == reported
    assert [(Path(o["path"]).name, o["stem"], o["variation"]) for o in reported] == [
        ("My_Song__drums.wav", "drums", None),
        ("My_Song__bass.wav", "bass", None),
        ("My_Song__bass-2.wav", "bass", None),
        ("My_Song__keys__120bpm__1bars__v1.wav", "keys", 1),
        ("My_Song__keys__120bpm__1bars__v2.wav", "keys", 2),
        ("My_Song__bass-var__120bpm__1bars__v1.wav", "bass-var", 1),
        ("My_Song__bass-var__120bpm__1bars__v2.wav", "bass-var", 2),
    ]
