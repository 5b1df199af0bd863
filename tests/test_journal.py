"""The job journal: what it records, what a restart makes of cut-off jobs, and repeated request ids."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridge.engines.base import ProgressCallback
from bridge.errors import ConfigError, InvalidArgument
from bridge.jobs.journal import INTERRUPTED, SCHEMA_VERSION, Journal
from bridge.jobs.queue import JobEvent, JobQueue, ReplyTo
from bridge.jobs.spec import JobSpec, Outcome, PublishHook, fingerprint
from tests.test_daemon import no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads

SPEC = JobSpec("separate", {"path": "/music/song.wav", "out": "/renders", "stems": ["drums", "bass"]})
REPLY = ReplyTo("127.0.0.1", 9001)


class CountingRunner:
    """Counts runs and returns one made-up output per job."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def __call__(
        self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None
    ) -> Outcome:
        self.runs.append(spec.options["path"])
        progress(1.0, "done")
        return Outcome([f"/renders/{len(self.runs)}.wav"], {"engine": "fake"})


class Events:
    def __init__(self) -> None:
        self.items: list[JobEvent] = []
        self.ended = threading.Condition()

    def __call__(self, event: JobEvent) -> None:
        with self.ended:
            self.items.append(event)
            self.ended.notify_all()

    def wait_end(self, request_id: str, count: int = 1, timeout: float = 10.0) -> list[JobEvent]:
        """Wait for ``count`` jobs named ``request_id`` to end; their done/error events in order."""
        with self.ended:
            assert self.ended.wait_for(lambda: len(self._ends(request_id)) >= count, timeout)
            return self._ends(request_id)

    def _ends(self, request_id: str) -> list[JobEvent]:
        return [e for e in self.items if e.request_id == request_id and e.kind in ("done", "error")]


def test_records_a_job_from_queued_to_done(tmp_path: Path) -> None:
    clock = iter(range(100, 200))
    journal = Journal(tmp_path / "state" / "journal.sqlite3", clock=lambda: float(next(clock)))
    journal.add("127.0.0.1", "j1", SPEC.kind, SPEC.options, "127.0.0.1", 9001)
    rec = journal.get("127.0.0.1", "j1")
    assert rec is not None
    assert (rec.state, rec.kind, rec.options, rec.reply_port) == ("queued", "separate", SPEC.options, 9001)
    assert rec.created == 100.0
    journal.update("127.0.0.1", "j1", "running")
    outputs = ["/r/a.wav", "/r/b.wav"]
    journal.update("127.0.0.1", "j1", "done", fraction=1.0, outputs=outputs, detail={"engine": "x"})
    rec = journal.get("127.0.0.1", "j1")
    assert rec is not None
    assert (rec.state, rec.fraction, list(rec.outputs), rec.detail) == ("done", 1.0, outputs, {"engine": "x"})
    assert rec.updated > rec.created
    assert journal.get("127.0.0.1", "other") is None and journal.get("10.0.0.2", "j1") is None
    journal.close()
    journal.close()  # twice is fine


def test_restart_reports_cut_off_jobs_failed_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = Journal(path)
    for rid, state in (("q", "queued"), ("r", "running"), ("d", "done"), ("c", "cancelled")):
        first.add("127.0.0.1", rid, SPEC.kind, SPEC.options, "127.0.0.1", 9001)
        if state != "queued":
            first.update("127.0.0.1", rid, state)
    del first  # no close(): as if the process died

    second = Journal(path)
    cut = second.recover()
    assert sorted(r.request_id for r in cut) == ["q", "r"]
    assert {r.error_code for r in cut} == {INTERRUPTED}
    running = second.get("127.0.0.1", "r")
    assert running is not None and running.state == "failed" and running.error_code == "interrupted"
    assert "the daemon stopped while this job was running; send the request again" == running.error_message
    assert second.get("127.0.0.1", "d").state == "done"  # type: ignore[union-attr]
    assert second.recover() == []  # nothing left to recover


def test_a_killed_process_loses_no_committed_job(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    script = (
        "import os, signal\n"
        "from bridge.jobs.journal import Journal\n"
        f"j = Journal({str(path)!r})\n"
        "j.add('127.0.0.1', 'k1', 'vary', {'path': '/a.wav'}, '127.0.0.1', 9001)\n"
        "j.update('127.0.0.1', 'k1', 'running')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent, check=False)
    assert proc.returncode == -9
    cut = Journal(path).recover()
    assert [(r.request_id, r.state, r.error_code, r.options) for r in cut] == [
        ("k1", "failed", "interrupted", {"path": "/a.wav"})
    ]


def test_status_after_restart_and_no_second_run(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    runner, events = CountingRunner(), Events()
    queue = JobQueue(runner, Journal(path), events)
    queue.start()
    assert queue.submit("127.0.0.1", "j1", SPEC, REPLY).new
    assert [e.kind for e in events.wait_end("j1")] == ["done"]
    assert queue.shutdown(5.0)

    runner2, events2 = CountingRunner(), Events()
    queue2 = JobQueue(runner2, Journal(path), events2)  # a restarted daemon
    queue2.start()
    status = queue2.status("127.0.0.1", "j1")
    assert (status.state, status.fraction, status.paths) == ("done", 1.0, ("/renders/1.wav",))
    again = queue2.submit("127.0.0.1", "j1", SPEC, REPLY)
    assert not again.new and again.status.state == "done" and again.status.paths == ("/renders/1.wav",)
    assert queue2.status("127.0.0.1", "never").state == "unknown"
    assert queue2.shutdown(5.0)
    assert runner2.runs == [] and events2.items == []


def test_repeated_request_id_from_the_same_client_runs_once(tmp_path: Path) -> None:
    release = threading.Event()

    def slow(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
        release.wait(10)
        return Outcome(["/renders/x.wav"])

    events = Events()
    journal = Journal(tmp_path / "journal.sqlite3")
    calls: list[str] = []
    queue = JobQueue(lambda s, p, h: (calls.append(s.kind), slow(s, p))[1], journal, events)
    queue.start()
    first = queue.submit("127.0.0.1", "same", SPEC, REPLY)
    repeat = queue.submit("127.0.0.1", "same", SPEC, ReplyTo("127.0.0.1", 9555))
    other_client = queue.submit("192.168.1.20", "same", SPEC, REPLY)
    assert first.new and not repeat.new and other_client.new
    assert repeat.status.state in ("queued", "running")
    release.set()
    ends = events.wait_end("same", count=2)
    assert queue.shutdown(5.0)
    assert calls == ["separate", "separate"]  # the first client's job and the other client's job; no third
    assert [(e.kind, e.reply.host, e.reply.port) for e in ends] == [
        ("done", "127.0.0.1", 9555),  # the repeat moved the first job's replies to its new port
        ("done", "127.0.0.1", 9001),
    ]
    assert len([e for e in events.items if e.kind in ("done", "error")]) == 2


def test_prune_forgets_old_finished_jobs_only(tmp_path: Path) -> None:
    now = [1000.0]
    journal = Journal(":memory:", clock=lambda: now[0])
    journal.add("h", "old", "vary", {}, "h", 1)
    journal.update("h", "old", "done")
    journal.add("h", "old-running", "vary", {}, "h", 1)
    now[0] = 1000.0 + 40 * 86400
    journal.add("h", "new", "vary", {}, "h", 1)
    journal.update("h", "new", "done")
    assert journal.prune(30 * 86400) == 1
    assert journal.get("h", "old") is None
    assert journal.get("h", "old-running") is not None and journal.get("h", "new") is not None


def test_unusable_journals_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(
        ConfigError, match="cannot open the job journal .*; move the file away or pass another --state-dir"
    ):
        Journal(bad)
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigError, match=r"written by a newer stembridge \(schema 99\)"):
        Journal(newer)


def test_a_publish_plan_is_recorded_and_marks_the_cut_off_job(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = Journal(path)
    plan = [{"path": "/r/s__drums.wav", "temp": "/r/.s__drums.wav.stembridge-7-0badc0de.tmp", "inode": 5}]
    for rid in ("publishing", "computing"):
        first.add("127.0.0.1", rid, SPEC.kind, SPEC.options, "127.0.0.1", 9001)
        first.update("127.0.0.1", rid, "running")
    first.update("127.0.0.1", "publishing", "running", plan=plan)
    del first  # as if the process died

    cut = {rec.request_id: rec for rec in Journal(path).recover()}
    assert cut["publishing"].plan == tuple(plan) and cut["computing"].plan == ()
    assert cut["publishing"].error_message == (
        "the daemon stopped while this job was writing its files (the files it had written were removed); "
        "send the request again"
    )
    assert cut["computing"].error_message.startswith("the daemon stopped while this job was running;")


def test_a_schema_1_journal_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # what stembridge 0.1 wrote
        db.executescript(
            "CREATE TABLE jobs (client TEXT NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "options TEXT NOT NULL, state TEXT NOT NULL, fraction REAL NOT NULL DEFAULT 0, "
            "outputs TEXT NOT NULL DEFAULT '[]', detail TEXT NOT NULL DEFAULT '{}', "
            "error_code TEXT NOT NULL DEFAULT '', error_message TEXT NOT NULL DEFAULT '', "
            "reply_host TEXT NOT NULL DEFAULT '', reply_port INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, "
            "updated REAL NOT NULL, PRIMARY KEY (client, request_id));"
            "INSERT INTO jobs VALUES ('h', 'old', 'vary', '{}', 'done', 1, '[\"/r/a.wav\"]', '{}', '', '', "
            "'h', 1, 1.0, 2.0);"
            "INSERT INTO jobs VALUES ('h', 'cut', 'vary', '{}', 'running', 0.5, '[]', '{}', '', '', 'h', 1, 1.0, 2.0);"
            "PRAGMA user_version=1;"
        )
    journal = Journal(path)
    old = journal.get("h", "old")
    assert old is not None and (old.state, old.outputs, old.plan) == ("done", ("/r/a.wav",), ())
    assert old.fingerprint == fingerprint("vary", {}) == JobSpec("vary").fingerprint
    assert [(r.request_id, r.plan) for r in journal.recover()] == [("cut", ())]
    journal.update("h", "old", "done", plan=[{"path": "/r/a.wav"}])
    journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_a_schema_2_journal_gets_fingerprints_so_repeats_still_match(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    options = json.dumps(SPEC.options, sort_keys=True)
    with sqlite3.connect(path) as db:  # what stembridge wrote before fingerprints
        db.executescript(
            "CREATE TABLE jobs (client TEXT NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "options TEXT NOT NULL, state TEXT NOT NULL, fraction REAL NOT NULL DEFAULT 0, "
            "outputs TEXT NOT NULL DEFAULT '[]', detail TEXT NOT NULL DEFAULT '{}', "
            "error_code TEXT NOT NULL DEFAULT '', error_message TEXT NOT NULL DEFAULT '', "
            "reply_host TEXT NOT NULL DEFAULT '', reply_port INTEGER NOT NULL DEFAULT 0, "
            "plan TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL, updated REAL NOT NULL, "
            "PRIMARY KEY (client, request_id)); PRAGMA user_version=2;"
        )
        insert = "INSERT INTO jobs (client, request_id, kind, options, state, outputs, created, updated) "
        db.execute(insert + "VALUES ('h', 'sep', 'separate', ?, 'done', '[\"/r/a.wav\"]', 1, 2)", (options,))
        db.execute(insert + "VALUES ('h', 'garbled', 'vary', '{not json', 'done', '[]', 1, 2)")
    journal = Journal(path)
    sep = journal.get("h", "sep")
    assert sep is not None and sep.fingerprint == SPEC.fingerprint and sep.outputs == ("/r/a.wav",)
    with sqlite3.connect(path) as db:  # a row whose options cannot be read keeps an empty fingerprint...
        assert db.execute("SELECT fingerprint FROM jobs WHERE request_id = 'garbled'").fetchone() == ("",)
        db.execute("DELETE FROM jobs WHERE request_id = 'garbled'")
        db.execute(insert + "VALUES ('h', 'blank', 'vary', '{}', 'done', '[]', 1, 2)")  # ...as this one has
    queue = JobQueue(CountingRunner(), journal, Events())
    repeat = queue.submit("h", "sep", JobSpec("separate", dict(SPEC.options)), REPLY)
    assert not repeat.new and repeat.status.paths == ("/r/a.wav",)  # an identical repeat: as before
    other = JobSpec("separate", {**SPEC.options, "stems": ["vocals"]})
    with pytest.raises(InvalidArgument, match="request_id 'sep' was already used for a different job"):
        queue.submit("h", "sep", other, REPLY)
    with pytest.raises(InvalidArgument, match="request_id 'blank' was already used for a different job"):
        queue.submit("h", "blank", JobSpec("vary", {}), REPLY)  # no fingerprint: never taken for a repeat
    assert queue.shutdown(5.0)
    journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_the_fingerprint_is_the_kind_and_the_options_in_any_key_order() -> None:
    a = JobSpec("generate", {"stem": "bass", "bpm": 120.0, "context": ["/a.wav", "/b.wav"]})
    b = JobSpec("generate", {"context": ("/a.wav", "/b.wav"), "bpm": 120.0, "stem": "bass"})
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert JobSpec("vary", dict(a.options)).fingerprint != a.fingerprint
    assert JobSpec("generate", {**a.options, "context": ["/b.wav", "/a.wav"]}).fingerprint != a.fingerprint


def test_the_publish_hook_journals_the_plan_and_honours_a_late_cancel(tmp_path: Path) -> None:
    journal, events = Journal(":memory:"), Events()
    cancel_now = threading.Event()
    seen: list[list[str]] = []

    def publishing_runner(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        if spec.options["path"] == "/late-cancel.wav":
            cancel_now.set()  # the test cancels the job now, after its last chunk but before its files appear
            assert queue_cancelled.wait(10)
        on_publish([{"path": "/r/a.wav", "inode": 1}])
        rec = journal.get("h", "plain")
        seen.append([item["path"] for item in rec.plan] if rec else [])
        return Outcome(["/r/a.wav"])

    queue_cancelled = threading.Event()
    queue = JobQueue(publishing_runner, journal, events)
    queue.start()
    queue.submit("h", "plain", JobSpec("separate", {"path": "/a.wav", "out": "/r"}), REPLY)
    assert [e.kind for e in events.wait_end("plain")] == ["done"]
    assert seen == [["/r/a.wav"]]  # journaled before the runner went on to publish
    queue.submit("h", "late", JobSpec("separate", {"path": "/late-cancel.wav", "out": "/r"}), REPLY)
    assert cancel_now.wait(10)
    assert queue.cancel("h", "late").state == "running"
    queue_cancelled.set()
    assert [(e.kind, e.code) for e in events.wait_end("late")] == [("error", "cancelled")]
    assert queue.shutdown(5.0)
    assert seen == [["/r/a.wav"]]  # the hook raised: the cancelled job never went on to publish


def test_a_journal_that_cannot_record_the_plan_fails_the_job(tmp_path: Path) -> None:
    journal, events = Journal(":memory:"), Events()
    published: list[str] = []

    def runner(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        journal.close()  # the disk went away: the plan cannot be recorded
        on_publish([{"path": "/r/a.wav"}])
        published.append("/r/a.wav")
        return Outcome(["/r/a.wav"])

    queue = JobQueue(runner, journal, events)
    queue.start()
    queue.submit("h", "j", SPEC, REPLY)
    (end,) = events.wait_end("j")
    assert queue.shutdown(5.0)
    assert (end.kind, end.code) == ("error", "error") and "job journal" in end.message and published == []
