"""The hot folder (``stembridge serve --watch DIR``): names and JSON, when a drop is complete, then end to end with
a real daemon and the builtin engine: separate, generate (a folder with request.json, a file named by the
convention), vary, failures, and restarts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.bwf import read_bext
from bridge.audio.timing import Grid, TimeSignature
from bridge.audio.writer import write_audio
from bridge.cli import main
from bridge.client import Client, locate
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import Busy, InvalidArgument
from bridge.jobs.journal import Journal
from bridge.jobs.queue import JobEvent, JobStatus, ReplyTo, Submission
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server.daemon import DaemonThread, read_port_file
from bridge.server.hotfolder import HotFolder
from bridge.server.hotfolder_drops import (
    Convention,
    Drop,
    audio_problem,
    ignored,
    job_for,
    list_drops,
    parse_name,
)
from tests import synth
from tests.fifo import make_fifo, without_blocking
from tests.test_daemon import ROOT, WAIT, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads
from tests.test_daemon_crash import clean_env, visible_files, write_long_song

SR = 48000  # not the pipeline's default rate, so "the source's rate" is really checked
SETTLE = 0.2


def bar_samples(bpm: float, bars: int, sr: int = SR) -> int:
    return Grid(bpm, TimeSignature(4, 4), sr).samples_for_bars(bars)


def song(bpm: float = 120.0, bars: int = 2) -> np.ndarray:
    """A stereo mix ``[2, T]`` exactly ``bars`` bars long at ``SR``."""
    audio = synth.mix(synth.song_stems(bpm, bars, SR))
    n = bar_samples(bpm, bars)
    return np.pad(audio, ((0, 0), (0, max(0, n - audio.shape[1]))))[:, :n]


def wav(path: Path, audio: np.ndarray, position: int | None = None) -> Path:
    """A 24-bit WAV at ``SR``, with a BWF time reference when ``position`` is given; written elsewhere first and
    renamed in, as a finished export would arrive."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_audio(tmp, audio, SR, position=position)
    os.replace(tmp, path)
    return path


def wav_bytes(audio: np.ndarray, tmp_path: Path) -> bytes:
    return wav(tmp_path / "bytes-source.wav", audio).read_bytes()


# --- names, JSON, and the job a drop asks for -------------------------------------------------------------


def test_names_and_ignored_files() -> None:
    assert parse_name("song__bass__120bpm__8bars__v1") == Convention("song", "bass", 120.0, 8)  # one of ours
    c = parse_name("My Song__bass__97.5bpm__4bars")
    assert (c.name, c.stem, c.bpm, c.bars) == ("My Song", "bass", 97.5, 4)
    assert parse_name("my take").stem is None and parse_name("a__b").bpm is None
    for name in (".DS_Store", "._song.wav", ".hidden.wav", "song.wav.partial", "x.tmp", "y.crdownload"):
        assert ignored(name), name
    assert not ignored("song.wav") and not ignored("Song 2.aiff")


def _drop(tmp_path: Path, kind: str, name: str, request: dict[str, Any] | str | None) -> Drop:
    inbox = tmp_path / kind
    inbox.mkdir(exist_ok=True)
    (inbox / name).write_bytes(b"")
    if request is not None:
        text = request if isinstance(request, str) else json.dumps(request)
        (inbox / f"{name}.json").write_text(text)
    [drop] = list_drops(inbox, kind)
    return drop


@pytest.mark.parametrize(
    "kind, name, sidecar, message",
    [
        (
            "generate",
            "take.wav",
            None,
            "generate/take.wav does not say its stem, bpm and bars; name it like "
            "take__bass__120bpm__8bars.wav, or put a take.wav.json",
        ),
        (
            "generate",
            "take__bass__120bpm__8bars.wav",
            {"bpm": "fast"},
            "take__bass__120bpm__8bars.wav.json: bpm must be a number between 20 and 400, got the string 'fast'",
        ),
        ("generate", "take.wav", {"stem": "bass", "bpm": 120}, "take.wav.json does not say the bars"),
        ("generate", "take.wav", {"stem": "kazoo", "bpm": 120, "bars": 4}, "stem must be one of bass, drums"),
        (
            "generate",
            "take.wav",
            {"stem": "bass", "bpm": 120, "bars": 4, "tempo": 3},
            "take.wav.json: unknown field 'tempo' for generate; use bars, bit_depth, bpm",
        ),
        (
            "vary",
            "loop.wav",
            {"strength": 2},
            "loop.wav.json: strength must be a number between 0 and 1, got the int 2",
        ),
        ("vary", "loop.wav", {"variations": [1, 2]}, "variations must be a single value, got a list"),
        (
            "vary",
            "loop.wav",
            '{"variations": 2,}',
            "loop.wav.json is not valid JSON (Expecting property name",
        ),
        ("vary", "loop.wav", "[1, 2]", "loop.wav.json must hold one JSON object like"),
        ("separate", "song.wav", {"stems": "drums,kazoo"}, "stems must name some of drums, bass"),
    ],
)
def test_bad_names_and_json_name_the_field_and_the_fix(
    tmp_path: Path, kind: str, name: str, sidecar: Any, message: str
) -> None:
    drop = _drop(tmp_path, kind, name, sidecar)
    with pytest.raises(InvalidArgument) as err:
        job_for(drop, tmp_path / "done" / drop.name)
    assert message in str(err.value)


def test_a_drop_becomes_the_same_job_an_osc_request_would(tmp_path: Path) -> None:
    drop = _drop(tmp_path, "generate", "riff__bass__120bpm__8bars.wav", {"bars": 4, "time_signature": "6/8"})
    assert drop.name == "riff"
    spec = job_for(drop, tmp_path / "done" / "riff")
    assert spec.kind == "generate"
    assert spec.options["stem"] == "bass" and spec.options["bpm"] == 120.0 and spec.options["bars"] == 4
    assert spec.options["time_signature"] == "6/8" and spec.options["variations"] == 1
    assert spec.options["context"] == [str(drop.path)] and spec.options["out"] == str(
        tmp_path / "done" / "riff"
    )
    assert spec.options["bit_depth"] == 24 and spec.options["format"] == "wav"
    song_drop = _drop(tmp_path, "separate", "song.wav", {"stems": ["drums", "bass"]})
    assert job_for(song_drop, tmp_path / "o").options["stems"] == ["drums", "bass"]


# --- when a drop is complete (no daemon: a fake queue and a fake clock) ---------------------------------------


class FakeQueue:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, JobSpec]] = []

    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission:
        self.jobs.append((request_id, spec))
        return Submission(True, JobStatus(request_id, "queued"))


def hot(tmp_path: Path, give_up: float = 60.0) -> tuple[HotFolder, FakeQueue]:
    queue = FakeQueue()
    return HotFolder(tmp_path / "hot", queue, settle=2.0, give_up=give_up), queue


def test_a_file_growing_in_chunks_is_taken_only_once_it_settles(tmp_path: Path) -> None:
    folder, queue = hot(tmp_path)
    data = wav_bytes(song(), tmp_path)
    target = folder.root / "separate" / "song.wav"
    chunks = [data[i : i + 60000] for i in range(0, len(data), 60000)]
    now = 0.0
    with open(target, "wb") as f:
        for chunk in chunks:  # a scan every 1.5 s while it grows (slower than the 2 s settle time)
            f.write(chunk)
            f.flush()
            folder.tick(now)
            now += 1.5
            assert queue.jobs == []
    assert audio_problem(target) is None
    last_change = now - 1.5  # the scan that first saw it complete
    folder.tick(last_change + 1.9)
    assert queue.jobs == []
    folder.tick(last_change + 2.0)
    [(rid, spec)] = queue.jobs
    assert rid.startswith("hotfolder-separate-") and spec.options["path"] == str(target)
    assert spec.options["out"] == str(folder.root / "done" / "song")
    folder.tick(now + 10.0)  # taken once, not again while it runs
    assert len(queue.jobs) == 1


def test_a_half_copied_file_is_not_taken_and_fails_when_it_never_completes(tmp_path: Path) -> None:
    folder, queue = hot(tmp_path, give_up=30.0)
    data = wav_bytes(song(), tmp_path)
    (folder.root / "separate" / "header.wav").write_bytes(data[:30])  # cut inside the header
    (folder.root / "vary" / "half.wav").write_bytes(data[: len(data) // 2])  # header says twice as long
    assert "shorter than its header says" in (audio_problem(folder.root / "vary" / "half.wav") or "")
    for now in (0.0, 5.0, 10.0, 29.0):
        folder.tick(now)
    assert queue.jobs == [] and not list((folder.root / "failed").iterdir())
    folder.tick(31.0)
    assert queue.jobs == []
    failed = folder.root / "failed"
    assert sorted(p.name for p in failed.iterdir()) == ["half.txt", "half.wav", "header.txt", "header.wav"]
    assert "shorter than its header says" in (failed / "half.txt").read_text()
    assert "header.wav: it is shorter than its header says (30 of" in (failed / "header.txt").read_text()
    (tmp_path / "stub.wav").write_bytes(data[:6])  # not even the size field
    assert "header cannot be read" in (audio_problem(tmp_path / "stub.wav") or "")
    assert not list((folder.root / "separate").iterdir()) and not list((folder.root / "vary").iterdir())


def test_a_half_copied_flac_or_mp3_is_not_taken(tmp_path: Path) -> None:
    audio = song().T
    for fmt in ("FLAC", "MP3"):
        whole = tmp_path / f"whole.{fmt.lower()}"
        sf.write(whole, audio, SR, format=fmt)
        cut = tmp_path / f"cut.{fmt.lower()}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
        assert audio_problem(whole) is None
        assert "ends before its header says" in (audio_problem(cut) or ""), fmt


def test_links_are_refused_and_their_targets_left_alone(tmp_path: Path) -> None:
    folder, queue = hot(tmp_path, give_up=5.0)
    project = tmp_path / "MyProject"
    project.mkdir()
    wav(project / "mix.wav", song())
    (folder.root / "generate" / "proj__bass__120bpm__2bars").symlink_to(project, target_is_directory=True)
    (folder.root / "separate" / "song.wav").symlink_to(project / "mix.wav")
    for now in (0.0, 3.0, 6.0):
        folder.tick(now)
    assert queue.jobs == []
    assert sorted(p.name for p in project.iterdir()) == ["mix.wav"]  # nothing moved out of the user's folder
    notes = sorted((folder.root / "failed").glob("*.txt"))
    assert notes and all("links are not taken" in n.read_text() for n in notes)


def test_fifos_are_refused_and_the_watcher_goes_on_taking_drops(tmp_path: Path) -> None:
    folder, queue = hot(tmp_path)
    root = folder.root
    pipes = [
        make_fifo(root / "separate" / "pipe.wav"),  # a FIFO as the drop itself
        make_fifo(root / "vary" / "loop.wav.json"),  # as the sidecar of a good file
        make_fifo(root / "generate" / "verse" / "request.json"),  # as a generate folder's request
    ]
    wav(root / "vary" / "loop.wav", song(120, 1))
    wav(root / "generate" / "verse" / "drums.wav", song(120, 1))
    wav(root / "separate" / "a.wav", song(120, 1))
    without_blocking(pipes, lambda: folder.tick(0.0))
    without_blocking(pipes, lambda: folder.tick(2.0))
    assert [Path(spec.options["path"]).name for _, spec in queue.jobs] == ["a.wav"]  # the good drop is taken
    failed = root / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "loop.txt",
        "loop.wav",
        "loop.wav.json",
        "pipe.wav",
        "pipe.wav.txt",  # named like a refused non-audio file's note: it explains pipe.wav
        "verse",
        "verse.txt",
    ]
    assert (
        (failed / "pipe.wav.txt")
        .read_text()
        .startswith("pipe.wav is not a regular file (it is a FIFO); drop audio files\n")
    )
    assert (
        (failed / "loop.txt")
        .read_text()
        .startswith("loop.wav.json is not a regular file (it is a FIFO); write the JSON into a plain file\n")
    )
    assert (
        (failed / "verse.txt")
        .read_text()
        .startswith("request.json is not a regular file (it is a FIFO); write the JSON into a plain file\n")
    )
    assert (failed / "pipe.wav").is_fifo() and (failed / "verse" / "request.json").is_fifo()
    wav(root / "separate" / "b.wav", song(120, 1))  # and it goes on taking drops
    without_blocking(pipes, lambda: folder.tick(3.0))
    without_blocking(pipes, lambda: folder.tick(5.0))
    assert [Path(spec.options["path"]).name for _, spec in queue.jobs] == ["a.wav", "b.wav"]


def test_a_bare_name_sidecar_is_only_used_when_one_file_has_that_name(tmp_path: Path) -> None:
    inbox = tmp_path / "vary"
    inbox.mkdir()
    for name in ("song.wav", "song.aiff", "solo.wav"):
        (inbox / name).write_bytes(b"")
    (inbox / "song.json").write_text('{"variations": 2}')
    (inbox / "solo.json").write_text('{"variations": 4}')
    sidecars = {d.path.name: d.request for d in list_drops(inbox, "vary")}
    assert sidecars == {"solo.wav": inbox / "solo.json", "song.aiff": None, "song.wav": None}


def test_sidecar_errors_use_the_json_field_names(tmp_path: Path) -> None:
    drop = _drop(tmp_path, "separate", "song.wav", {"bit_depth": 12})
    with pytest.raises(
        InvalidArgument, match=r"song.wav.json: bit_depth must be a whole number between 16 and 32"
    ):
        job_for(drop, tmp_path / "o")


def test_a_generate_folder_waits_for_its_request_and_hidden_and_temp_files_are_ignored(
    tmp_path: Path,
) -> None:
    folder, queue = hot(tmp_path)
    request = folder.root / "generate" / "verse"
    request.mkdir()
    wav(request / "drums.wav", song())
    wav(request / "keys.wav", song())
    for name in (".DS_Store", "._drums.wav"):
        (request / name).write_bytes(b"\0\5\0\0junk")
    (folder.root / "separate" / ".secret.wav").write_bytes(b"x")
    (folder.root / "separate" / "song.wav.partial").write_bytes(b"x")
    for now in (0.0, 5.0, 10.0):
        folder.tick(now)
    assert queue.jobs == []  # no request.json yet, and the folder's name says nothing
    (request / "request.json").write_text(json.dumps({"stem": "pad", "bpm": 90, "bars": 2, "prompt": "dark"}))
    folder.tick(11.0)
    assert queue.jobs == []
    folder.tick(13.0)
    [(_, spec)] = queue.jobs
    assert spec.options["context"] == [str(request / "drums.wav"), str(request / "keys.wav")]
    assert (spec.options["stem"], spec.options["bpm"], spec.options["prompt"]) == ("pad", 90.0, "dark")


def test_a_folder_that_never_gets_its_request_fails_with_the_fix(tmp_path: Path) -> None:
    folder, queue = hot(tmp_path, give_up=20.0)
    (folder.root / "generate" / "chorus").mkdir()
    wav(folder.root / "generate" / "chorus" / "drums.wav", song())
    folder.tick(0.0)
    folder.tick(21.0)
    assert queue.jobs == []
    text = (folder.root / "failed" / "chorus.txt").read_text()
    assert "got no request.json within 20 s" in text and "chorus__bass__120bpm__8bars" in text
    assert (folder.root / "failed" / "chorus" / "drums.wav").is_file()


class BusyOnce(FakeQueue):
    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission:
        if not hasattr(self, "refused"):
            self.refused = True
            raise Busy(
                "the queue is full (16 jobs waiting); try again when a job has finished, or cancel one"
            )
        return super().submit(client, request_id, spec, reply)


def test_job_ends_move_the_source_and_a_full_queue_is_tried_again(tmp_path: Path) -> None:
    queue = BusyOnce()
    folder = HotFolder(tmp_path / "hot", queue, settle=2.0)
    for name in ("a.wav", "b.wav", "c.wav"):
        wav(folder.root / "separate" / name, song(120, 1))
    folder.tick(0.0)
    folder.tick(2.0)  # a.wav is refused as busy and stays; b and c are queued
    folder.tick(2.5)
    assert [spec.options["path"] for _, spec in queue.jobs] == [
        str(folder.root / "separate" / n) for n in ("b.wav", "c.wav", "a.wav")
    ]
    b, c, a = (rid for rid, _ in queue.jobs)
    out_b = folder.root / "done" / "b"
    out_b.mkdir()
    (out_b / "b__drums.wav").write_bytes(b"RIFF")  # what the job published
    reply = ReplyTo("127.0.0.1", 0)
    folder.on_job_event(JobEvent("progress", b, reply, 0.5, "working"))
    folder.on_job_event(JobEvent("done", b, reply, 1.0, paths=(str(out_b / "b__drums.wav"),)))
    folder.on_job_event(JobEvent("error", c, reply, code="cancelled", message="cancelled by request"))
    folder.tick(3.0)
    assert sorted(p.name for p in out_b.iterdir()) == ["b.wav", "b__drums.wav"]
    note = (folder.root / "failed" / "c.txt").read_text()
    assert (
        note.startswith("cancelled by request\n")
        and c in note
        and (folder.root / "failed" / "c.wav").is_file()
    )
    folder.stop_scanning()  # the daemon is stopping: a job cancelled now leaves its source for the next start
    folder.on_job_event(JobEvent("error", a, reply, code="cancelled", message="the daemon is shutting down"))
    folder.close()
    assert [p.name for p in (folder.root / "separate").iterdir()] == ["a.wav"]
    assert not (folder.root / "failed" / "a.txt").exists()


# --- end to end, with a daemon and the builtin engine ----------------------------------------------------


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders",
        state_dir=tmp_path / "state",
        models_dir=tmp_path / "models",
        port=0,
        cache_max_mb=0,
        watch_dir=tmp_path / "hot",
        watch_settle_s=SETTLE,
    )


@pytest.fixture()
def daemon(settings: Settings) -> Iterator[DaemonThread]:
    with DaemonThread(settings, discovery=False) as d:
        yield d


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def done_files(folder: Path, *sources: str, timeout: float = 20.0) -> list[Path]:
    """Wait until every source has been moved into ``folder``; then its files, in name order."""
    wait_until(lambda: all((folder / s).is_file() for s in sources), f"{sources} in {folder}", timeout)
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def check_render(path: Path, samples: int, time_reference: int) -> None:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.frames) == ("WAV", "PCM_24", SR, samples), path
    bext = read_bext(path)
    assert bext is not None and bext["time_reference"] == time_reference, path


def test_separate_end_to_end(daemon: DaemonThread, settings: Settings) -> None:
    root = settings.watch_dir
    assert root is not None
    audio = song()
    wav(root / "separate" / "Song A.wav", audio, position=4 * SR)  # exported from bar 3 at 120 bpm
    files = done_files(root / "done" / "Song A", "Song A.wav")
    assert [p.name for p in files] == [
        "Song A.wav",
        "Song_A__bass.wav",
        "Song_A__drums.wav",
        "Song_A__other.wav",
        "Song_A__vocals.wav",
    ]
    for stem in files[1:]:
        check_render(stem, audio.shape[1], 4 * SR)
    assert not list((root / "separate").iterdir()) and not list((root / "failed").iterdir())


def test_a_sidecar_asking_for_midi_gets_a_mid_beside_each_wav(
    daemon: DaemonThread, settings: Settings
) -> None:
    root = settings.watch_dir
    assert root is not None
    (root / "separate" / "Take.wav.json").write_text(json.dumps({"stems": "drums,bass", "midi": True}))
    wav(root / "separate" / "Take.wav", song(120, 2))
    files = done_files(root / "done" / "Take", "Take.wav", "Take.wav.json")
    assert [p.name for p in files] == [
        "Take.wav",
        "Take.wav.json",
        "Take__bass.mid",
        "Take__bass.wav",
        "Take__drums.mid",
        "Take__drums.wav",
    ]


def test_generate_from_a_folder_and_from_a_named_file(daemon: DaemonThread, settings: Settings) -> None:
    root = settings.watch_dir
    assert root is not None
    staging = root / "generate" / ".verse"  # a hidden folder is ignored until it is renamed
    staging.mkdir()
    wav(staging / "drums.wav", song(100, 2))
    wav(staging / "keys.wav", song(100, 2))
    request = {"stem": "bass", "bpm": 100, "bars": 2, "variations": 2, "seed": 1, "position": 2.0}
    (staging / "request.json").write_text(json.dumps(request))
    staging.rename(root / "generate" / "verse")
    wav(root / "generate" / "riff__lead__120bpm__2bars.wav", song(120, 2), position=SR)

    files = done_files(root / "done" / "verse", "drums.wav", "keys.wav", "request.json")
    takes = [p for p in files if p.name.startswith("drums__bass__")]
    assert [p.name for p in takes] == [  # the built-in engine's notes beside each take
        "drums__bass__100bpm__2bars__v1.mid",
        "drums__bass__100bpm__2bars__v1.wav",
        "drums__bass__100bpm__2bars__v2.mid",
        "drums__bass__100bpm__2bars__v2.wav",
    ]
    takes = [p for p in takes if p.suffix == ".wav"]
    for take in takes:
        check_render(take, bar_samples(100, 2), 2 * SR)
    assert not (root / "generate" / "verse").exists()

    files = done_files(root / "done" / "riff", "riff__lead__120bpm__2bars.wav")
    assert [p.name for p in files] == [
        "riff__lead__120bpm__2bars.wav",
        "riff__lead__120bpm__2bars__v1.mid",
        "riff__lead__120bpm__2bars__v1.wav",
    ]
    check_render(files[2], bar_samples(120, 2), SR)


def test_vary_with_a_sidecar_and_failures(daemon: DaemonThread, settings: Settings) -> None:
    root = settings.watch_dir
    assert root is not None
    (root / "vary" / "loop.json").write_text(
        json.dumps({"variations": 2, "strength": 0.4, "bpm": 120, "bars": 1})
    )
    wav(root / "vary" / "loop.wav", song(120, 1), position=SR // 2)
    (root / "vary" / "bad.wav.json").write_text(json.dumps({"strength": 2}))
    wav(root / "vary" / "bad.wav", song(120, 1))
    (root / "separate" / "notes.txt").write_text("not audio")
    huge = root / "generate" / "huge"
    huge.mkdir()  # valid on its own, refused by the pipeline (too much audio): the job's error is the reason
    (huge / "request.json").write_text(json.dumps({"stem": "bass", "bpm": 20, "bars": 256, "variations": 16}))

    files = done_files(root / "done" / "loop", "loop.wav", "loop.json")
    takes = [p for p in files if "__v" in p.name]
    assert [p.name for p in takes] == ["loop__var__120bpm__1bars__v1.wav", "loop__var__120bpm__1bars__v2.wav"]
    for take in takes:
        check_render(take, bar_samples(120, 1), SR // 2)

    failed = root / "failed"
    wait_until(
        lambda: {"bad.txt", "notes.txt.txt", "huge.txt"} <= {p.name for p in failed.iterdir()}, "failures"
    )
    assert "strength must be a number between 0 and 1, got the int 2" in (failed / "bad.txt").read_text()
    assert (failed / "bad.wav").is_file() and (failed / "bad.wav.json").is_file()
    assert "notes.txt is not an audio file" in (failed / "notes.txt.txt").read_text()
    assert "more than the 20:00 one request may make" in (failed / "huge.txt").read_text()
    assert (failed / "huge" / "request.json").is_file()
    assert not list((root / "vary").iterdir()) and not list((root / "generate").iterdir())
    assert sorted(p.name for p in (root / "done").iterdir()) == ["loop"]


class Gate:
    """A job that runs until the daemon stops it."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        self.started.set()
        while True:
            progress(0.1, "working")  # raises Cancelled when the daemon shuts down
            time.sleep(0.005)


def test_restarts_take_interrupted_drops_again_and_never_redo_finished_ones(
    settings: Settings, tmp_path: Path
) -> None:
    root = settings.watch_dir
    assert root is not None
    gate = Gate()
    with DaemonThread(settings, gate, discovery=False, shutdown_timeout=5.0):
        wav(root / "separate" / "one.wav", song(120, 1))
        assert gate.started.wait(WAIT)
    # a graceful stop cancelled the job: the source stays for the next start, and nothing failed
    assert (root / "separate" / "one.wav").is_file() and not list((root / "failed").iterdir())

    # as a killed daemon leaves things: a job the journal says is running, and its empty results folder with
    # a dead writer's temp file in it
    journal = Journal(settings.state_dir / "journal.sqlite3")
    options = {"path": str(root / "separate" / "one.wav"), "out": str(root / "done" / "one")}
    journal.add("127.0.0.1", "hotfolder-separate-dead", "separate", options, "127.0.0.1", 0)
    journal.update("127.0.0.1", "hotfolder-separate-dead", "running")
    journal.close()
    (root / "done" / "one").mkdir()
    (root / "done" / "one" / ".one__bass.wav.stembridge-999999-0000abcd.tmp").write_bytes(b"RIFF")

    with DaemonThread(settings, discovery=False) as d:
        files = done_files(root / "done" / "one", "one.wav")  # the same folder, used again
        assert [p.name for p in files][:2] == ["one.wav", "one__bass.wav"]
        assert not [p for p in (root / "done" / "one").iterdir() if p.name.endswith(".tmp")]
        state = d.daemon._queue.status("127.0.0.1", "hotfolder-separate-dead")  # type: ignore[union-attr]
        assert (state.state, state.code) == ("failed", "interrupted")

    with DaemonThread(settings, discovery=False):  # nothing left to do: nothing is done again
        time.sleep(10 * SETTLE)
    assert sorted(p.name for p in (root / "done").iterdir()) == ["one"]
    assert len(list((root / "done" / "one").iterdir())) == 5


def test_a_drop_whose_daemon_was_killed_mid_job_is_taken_again_on_restart(
    settings: Settings, tmp_path: Path
) -> None:
    root = settings.watch_dir
    assert root is not None
    cmd = [sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--no-discovery", "--watch", str(root)]
    cmd += ["--state-dir", str(settings.state_dir), "--out", str(settings.out_dir)]
    env = {**clean_env(tmp_path), "STEMBRIDGE_WATCH_SETTLE_S": str(SETTLE)}
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=err)
    try:
        wait_until(lambda: (read_port_file(settings.state_dir) or {}).get("pid") == proc.pid, "the daemon")
        write_long_song(tmp_path / "Long Song.wav", seconds=60.0)
        os.replace(tmp_path / "Long Song.wav", root / "separate" / "Long Song.wav")
        found = wait_until(
            lambda: re.search(r"queued as job '(hotfolder-separate-\w+)'", log.read_text()), "a job"
        )
        with Client(locate(settings)) as client:  # kill it while the engine works, before anything is written
            wait_until(lambda: client.status(found.group(1)).fraction > 0.05, "the job to run")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (root / "separate" / "Long Song.wav").is_file() and visible_files(root / "done") == []

    with DaemonThread(settings, discovery=False) as d:
        files = done_files(root / "done" / "Long Song", "Long Song.wav", timeout=60.0)
        assert len(files) == 5 and not list((root / "failed").iterdir())
        state = d.daemon._queue.status("127.0.0.1", found.group(1))  # type: ignore[union-attr]
        assert (state.state, state.code) == ("failed", "interrupted")


def test_serve_refuses_a_hot_folder_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["serve", "--port", "0", "--no-discovery", "--state-dir", str(tmp_path / "state")]
    assert main([*argv, "--watch", str(blocker / "hot")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the hot folder" in err[0] and "pass --watch" in err[0], err
