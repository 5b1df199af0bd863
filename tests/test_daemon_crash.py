"""Crash safety and the scripting contract, with real processes: ``kill -9`` in the middle of a separation, the
restart that reports it, and ``stembridge request``'s exit codes and result files (what the Reaper scripts poll).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge import pipeline
from bridge.audio import writer
from bridge.audio.writer import Publisher, claim_path, temp_file
from bridge.client import Client, locate
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import UnsupportedOperation
from bridge.jobs.journal import FILE_NAME as JOURNAL_FILE
from bridge.jobs.journal import Journal
from bridge.jobs.leftovers import TEMP_NAME, is_writer_claim, is_writer_temp, remove_temp_files, undo_publish
from bridge.jobs.queue import SHUTDOWN_MESSAGE
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread, read_port_file
from tests.test_daemon import ROOT, WAIT, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a child stembridge: no user config, no STEMBRIDGE_* settings from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMBRIDGE_")}
    env["STEMBRIDGE_CONFIG"] = str(tmp_path / "no-config.toml")
    return env


# --- the writer's temp files ----------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_leftover_pattern_matches_the_writers_temp_and_claim_names(tmp_path: Path) -> None:
    for name in ("My_Song__drums.wav", "x__bass__120bpm__8bars__v2.aif"):
        tmp, fd = temp_file(tmp_path, name)  # the name the writer really uses
        os.close(fd)
        assert is_writer_temp(tmp.name), tmp.name
        assert TEMP_NAME.match(tmp.name)["pid"] == str(os.getpid())  # type: ignore[index]
        assert is_writer_claim(claim_path(tmp_path / name).name)
        assert not is_writer_claim(tmp.name) and not is_writer_temp(claim_path(tmp_path / name).name)
    for other in (
        ".DS_Store",
        "song.wav",
        ".song.wav.tmp",
        ".song.wav.0badc0de.tmp",  # an older stembridge's name: no pid, so whether its writer lives is unknown
        ".song.wav.stembridge-12-0badc0de.tmp.bak",
        ".notes.txt.stembridge-12-0badc0de.tmp",
        ".notes.txt.stembridge-claim",
    ):
        assert not is_writer_temp(other) and not is_writer_claim(other), other


def test_remove_temp_files_only_dead_writers_and_only_in_the_given_folders(tmp_path: Path) -> None:
    job_out, other = tmp_path / "job", tmp_path / "other"
    (job_out / "sub").mkdir(parents=True)
    other.mkdir()
    dead, live = dead_pid(), os.getppid()  # our parent runs as long as we do
    stale = [
        job_out / f".a.wav.stembridge-{dead}-0badc0de.tmp",
        job_out / f".b.aiff.stembridge-{dead}-deadbeef.tmp",
    ]
    stale += [job_out / ".c.wav.stembridge-claim"]
    kept = [
        job_out / "a.wav",
        job_out / ".DS_Store",
        job_out / "sub" / f".c.wav.stembridge-{dead}-0badc0de.tmp",
    ]
    kept += [other / f".d.wav.stembridge-{dead}-0badc0de.tmp"]
    kept += [
        job_out / f".e.wav.stembridge-{live}-0badc0de.tmp",
        job_out / ".e.wav.stembridge-claim",
    ]  # a live CLI
    kept += [job_out / f".f.wav.stembridge-{os.getpid()}-0badc0de.tmp"]  # this process's, in flight
    kept += [job_out / ".g.wav.stembridge-claim"]  # empty: being written this very moment
    for path in stale + kept:
        path.write_bytes(b"x")
    (job_out / ".c.wav.stembridge-claim").write_text(f"{dead}\n")
    (job_out / ".e.wav.stembridge-claim").write_text(f"{live}\n")
    (job_out / ".g.wav.stembridge-claim").write_bytes(b"")
    removed = remove_temp_files([job_out, tmp_path / "missing"])
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to know when a process started")
def test_a_temp_file_with_our_own_pid_from_before_we_started_is_stale(tmp_path: Path) -> None:
    """pids repeat (a daemon in a container is pid 1 every time): our pid on a file older than us is not us."""
    old = tmp_path / f".a.wav.stembridge-{os.getpid()}-0badc0de.tmp"
    new = tmp_path / f".b.wav.stembridge-{os.getpid()}-0badc0de.tmp"
    for path in (old, new):
        path.write_bytes(b"x")
    started = time.time() - time.monotonic()  # no later than the boot, so before this process
    os.utime(old, (started - 3600, started - 3600))
    assert remove_temp_files([tmp_path]) == [old]
    assert new.exists()


def test_undo_publish_removes_only_the_jobs_own_files(tmp_path: Path) -> None:
    pub = Publisher()  # never closed: the process "dies" after publishing the first file
    for name in ("s__drums.wav", "s__bass.wav", "s__other.wav"):
        pub.add(tmp_path / name, np.zeros((1, 10), np.float32), 44100)
    plan = [staged.to_dict() for staged in pub.reserve()]
    first = pub.reserve()[0]
    assert writer._publish(first.temp, first.target, False)
    (tmp_path / "s__bass.wav").write_bytes(b"a program that ignores claims")  # not ours: another inode
    (tmp_path / "elsewhere.wav").write_bytes(b"x")
    (tmp_path / "s__other.wav").symlink_to(tmp_path / "elsewhere.wav")  # not a regular file
    decoy = tmp_path / "keep.txt"
    decoy.write_text("the user's")
    bad = [
        {"path": str(tmp_path / "x.wav")},
        {"path": str(tmp_path / "y.wav"), "temp": str(decoy), "claim": ""},
    ]
    removed = undo_publish([*plan, *bad])
    assert removed == [first.target]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["elsewhere.wav", "keep.txt", "s__bass.wav", "s__other.wav"]  # no temp file, no claim


# --- kill -9 in the middle of a job -----------------------------------------------------------------------------


def write_long_song(path: Path, seconds: float = 60.0, sr: int = 44100) -> None:
    """A long stereo song (chords, a pulse and noise), 16-bit: long enough for the separation to take a while."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(3)
    pulse = (np.sin(2 * np.pi * 2 * t) > 0.9).astype(np.float64)
    left = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.2 * pulse * rng.standard_normal(t.size)
    right = 0.2 * np.sin(2 * np.pi * 165 * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([left, right]).T, sr, subtype="PCM_16")


class Serve:
    """``stembridge serve`` in a process of its own."""

    def __init__(self, tmp_path: Path, settings: Settings, script: str | None = None) -> None:
        """``script``: Python code to run instead of the command (it must serve ``settings``)."""
        self.settings = settings
        cmd = [sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--no-discovery"]
        cmd += ["--state-dir", str(settings.state_dir), "--out", str(settings.out_dir)]
        cmd += ["--models-dir", str(settings.models_dir)]
        if script is not None:
            cmd = [sys.executable, "-c", script]
        self.log = tmp_path / f"serve-{time.monotonic_ns()}.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(tmp_path), stderr=err)
        deadline = time.monotonic() + 30
        while (read_port_file(settings.state_dir) or {}).get("pid") != self.proc.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"stembridge serve did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_kill_9_mid_job_leaves_no_partial_file_and_the_restart_reports_it(tmp_path: Path) -> None:
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    song = tmp_path / "in" / "Long Song.wav"
    write_long_song(song)
    first = Serve(tmp_path, settings)
    try:
        with Client(locate(settings)) as client:
            client.send(protocol.SEPARATE, [client.reply_port, "kill1", str(song)])
            seen: list[tuple[str, list[Any]]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # kill it while the engine works, before anything is written
                reply = client.receive(deadline - time.monotonic())
                assert reply is not None and reply[0] != protocol.ERROR, (reply, seen)
                seen.append(reply)
                if reply[0] == protocol.PROGRESS and 0.05 < float(reply[1][1]) < 0.9:
                    break
            os.kill(first.proc.pid, signal.SIGKILL)
            assert first.proc.wait(WAIT) == -signal.SIGKILL
            assert [a for a, _ in seen][:2] == [protocol.ACCEPTED, protocol.PROGRESS]

            assert not settings.out_dir.exists() or visible_files(settings.out_dir) == []
            # what a kill during a write leaves: the writer's hidden temp file, never a partial visible file
            settings.out_dir.mkdir(parents=True, exist_ok=True)
            stale = settings.out_dir / f".Long_Song__drums.wav.stembridge-{first.proc.pid}-0badc0de.tmp"
            stale.write_bytes(b"RIFF\x00\x00")
            (settings.out_dir / "notes.txt").write_text("the user's own file")

            second = Serve(tmp_path, settings)  # the restart
            try:
                reply = client.receive(WAIT)  # the restarted daemon tells the client what became of its job
                assert (
                    reply is not None
                    and reply[0] == protocol.ERROR
                    and reply[1][:2] == ["kill1", "interrupted"]
                )
                with Client(locate(settings)) as again:
                    state = again.status("kill1")
                assert (state.state, state.code) == ("failed", "interrupted")
                assert "send the request again" in state.message
            finally:
                assert second.stop() == 0
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    assert not stale.exists()
    assert sorted(p.name for p in settings.out_dir.iterdir()) == ["notes.txt"]  # no temp file, visible or not
    assert "removed 1 temp file(s) left by the interrupted job(s)" in second.log.read_text()


def temp_files(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp")) if folder.is_dir() else []


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this OS")
def test_sighup_mid_job_stops_the_daemon_gracefully_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """Closing the terminal of ``stembridge serve`` sends SIGHUP: the daemon stops as on SIGTERM, and the job it
    was writing ends cancelled, its full-size temp files removed."""
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    song = tmp_path / "in" / "Long Song.wav"
    # longer than STREAM_ABOVE_SECONDS: separated block by block, its stems' temp files there while it runs
    write_long_song(song, seconds=pipeline.STREAM_ABOVE_SECONDS + 30, sr=22050)
    serving = Serve(tmp_path, settings)
    replies: list[tuple[str, list[Any]]] = []
    try:
        with Client(locate(settings)) as client:
            client.send(protocol.SEPARATE, [client.reply_port, "hup1", str(song)])
            deadline = time.monotonic() + 60
            while not temp_files(settings.out_dir):
                assert serving.proc.poll() is None, serving.log.read_text()
                assert time.monotonic() < deadline, "no temp file appeared"
                time.sleep(0.005)
            serving.proc.send_signal(signal.SIGHUP)
            assert serving.proc.wait(3 * WAIT) == 0, serving.log.read_text()
            while (reply := client.receive(WAIT)) is not None:
                replies.append(reply)
                if reply[0] in (protocol.ERROR, protocol.DONE):
                    break
    finally:
        if serving.proc.poll() is None:
            serving.proc.kill()
            serving.proc.wait()
    assert replies[-1] == (protocol.ERROR, ["hup1", "cancelled", SHUTDOWN_MESSAGE])
    assert not settings.out_dir.exists()  # made for the job, removed again: no temp file, claim or stem in it
    journal = Journal(settings.state_dir / JOURNAL_FILE)
    try:
        record = journal.get("127.0.0.1", "hup1")
    finally:
        journal.close()
    assert record is not None
    assert (record.state, record.error_code) == ("cancelled", "cancelled")
    assert record.error_message == SHUTDOWN_MESSAGE


# A daemon that dies (os._exit, as abruptly as kill -9) right after the second of a job's files is published.
DIE_MID_PUBLISH = """
import os
from pathlib import Path
from bridge.audio import writer
from bridge.config import Settings
from bridge.server.daemon import serve

real_publish, published = writer._publish, []

def publish_then_die(tmp, target, overwrite, held=None):
    done = real_publish(tmp, target, overwrite, held)
    published.append(target)
    if len(published) == 2:
        os._exit(37)
    return done

writer._publish = publish_then_die
settings = Settings(out_dir=Path({out!r}), state_dir=Path({state!r}), models_dir=Path({models!r}), port=0)
raise SystemExit(serve(settings, discovery=False))
"""


def test_a_job_killed_while_publishing_leaves_none_of_its_files(tmp_path: Path) -> None:
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    song = tmp_path / "in" / "My Song.wav"
    write_long_song(song, seconds=2.0)
    out = settings.out_dir
    out.mkdir(parents=True)
    users = out / "My_Song__drums.wav"  # the user's own file, with the name the job wants first
    users.write_bytes(b"the user's take")
    live_cli_temp = out / f".My_Song__bass.wav.stembridge-{os.getppid()}-0badc0de.tmp"  # a live writer's
    live_cli_temp.write_bytes(b"RIFF")
    script = DIE_MID_PUBLISH.format(
        out=str(out), state=str(settings.state_dir), models=str(settings.models_dir)
    )
    dying = Serve(tmp_path, settings, script)
    try:
        with Client(locate(settings)) as client:
            client.send(protocol.SEPARATE, [client.reply_port, "pub1", str(song)])
            assert dying.proc.wait(60) == 37  # it got as far as publishing two of the four stems
            visible = visible_files(out)
            assert len(visible) == 3 and users.name in visible, visible  # half a job: what this test is about
            with DaemonThread(settings, discovery=False):  # the restart
                seen = []  # the replies the first daemon sent before it died, then the restart's error
                while (reply := client.receive(WAIT)) is not None and reply[0] != protocol.ERROR:
                    seen.append(reply[0])
                assert reply is not None and reply[1][:2] == ["pub1", "interrupted"], (reply, seen)
                assert seen[0] == protocol.ACCEPTED and protocol.DONE not in seen
                with Client(locate(settings)) as again:
                    state = again.status("pub1")
    finally:
        if dying.proc.poll() is None:
            dying.proc.kill()
            dying.proc.wait()
    assert (state.state, state.code) == ("failed", "interrupted")
    assert (
        "writing its files (the files it had written were removed); send the request again" in state.message
    )
    assert visible_files(out) == [users.name] and users.read_bytes() == b"the user's take"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [live_cli_temp.name]


# --- `stembridge request`: exit codes and result files -----------------------------------------------------------


def scripted_runner(
    spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None
) -> Outcome:
    """Fails for files named ``bad*``; else reports progress and writes one small file."""
    name = Path(spec.options["path"]).stem
    if name.startswith("bad"):
        raise UnsupportedOperation(f"the test engine cannot vary {name!r}")
    progress(0.5, "half")
    out = Path(spec.options["out"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}__v1.wav"
    path.write_bytes(b"RIFF")
    progress(1.0, "done")
    return Outcome([str(path)])


@pytest.fixture()
def scripted(tmp_path: Path) -> Iterator[DaemonThread]:
    settings = Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0)
    with DaemonThread(settings, scripted_runner, discovery=False) as d:
        yield d


def request(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bridge.cli", "request", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)


def test_request_exit_codes_and_result_files(scripted: DaemonThread, tmp_path: Path) -> None:
    port = str(scripted.port)
    for name in ("loop.wav", "bad.wav"):
        (tmp_path / name).write_bytes(b"x")  # the test runner never reads them
    result = tmp_path / "out" / "result.json"
    result.parent.mkdir()
    result.write_text("stale")  # left by an earlier request: removed when the next one starts
    (tmp_path / "out" / "result.json.progress").write_text("0.900 stale\n")

    done = request(tmp_path, "vary", str(tmp_path / "loop.wav"), "--port", port, "--request-id", "ok1",
                   "--result-file", str(result), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(result.read_text())
    path = payload["paths"][0]
    assert Path(path).name == "loop__v1.wav" and Path(path).is_file()
    outputs = [{"stem": "v1", "path": path, "variation": None}]  # the test runner's name has no stem part
    assert payload == {"request_id": "ok1", "status": "done", "outputs": outputs, "paths": [path]}
    progress = (tmp_path / "out" / "result.json.progress").read_text().splitlines()
    assert progress == ["0.000 queued 0", "0.000 started", "0.500 half", "1.000 done"]
    assert sorted(p.name for p in result.parent.iterdir()) == ["result.json", "result.json.progress"]

    failed = request(tmp_path, "vary", str(tmp_path / "bad.wav"), "--port", port, "--request-id", "bad1",
                     "--result-file", str(result), "--json")  # fmt: skip
    assert failed.returncode == 2
    error = {"code": "unsupported", "message": "the test engine cannot vary 'bad'"}
    assert json.loads(result.read_text()) == {"request_id": "bad1", "status": "error", "error": error}
    assert json.loads(failed.stdout) == {"error": error}
    assert "stembridge request: error: the test engine cannot vary 'bad'" in failed.stderr

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        gone = request(tmp_path, "ping", "--port", str(silent.getsockname()[1]), "--timeout", "0.3",
                       "--request-id", "p1", "--result-file", str(result))  # fmt: skip
    assert gone.returncode == 2
    unreachable = json.loads(result.read_text())
    assert (unreachable["status"], unreachable["error"]["code"]) == ("error", "unreachable")
    assert (tmp_path / "out" / "result.json.progress").read_text() == ""  # emptied when the request started
