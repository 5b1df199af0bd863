"""What a hostile review found in the daemon's paths, over a real daemon with the builtin engine: an ``out`` that
leads out of the render folder through a link (one that the hot folder's ``failed/`` can even hold), checked when
the request comes and again when its job starts; and FIFOs given as inputs, which must be refused, never opened.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.errors import AudioWriteError, InvalidArgument
from bridge.jobs import outdir
from bridge.jobs.runner import PipelineRunner
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from tests.fifo import make_fifo, release
from tests.test_daemon import (  # noqa: F401 - no_leaked_threads fails a test that leaks threads
    WAIT,
    OscPeer,
    no_leaked_threads,
)

BASS = ("bass", "bpm", 120, "bars", 1)  # a quick job for the builtin engine: one bar of bass


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders",
        state_dir=tmp_path / "state",
        models_dir=tmp_path / "models",
        port=0,
        cache_max_mb=16,
    )


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder outside the render folder (where /etc would be): nothing may ever be written here."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def everything_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refusal(text: str, settings: Settings) -> list[Any]:
    return [
        "invalid_argument",
        f"out must be a folder inside the render folder or an allowed root ({settings.out_dir.resolve()}), "
        f"symlinks followed, got {text!r}; add it to allowed_roots in the config file to allow it",
    ]


class HoldFirst:
    """The real pipeline, except that the first job waits for :attr:`release`: the jobs after it wait in the
    queue, as they do behind a long separation."""

    def __init__(self, settings: Settings) -> None:
        self.real = PipelineRunner(settings)
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(3 * WAIT)
        return self.real(spec, progress, on_publish)


@pytest.fixture()
def hold(settings: Settings) -> Iterator[HoldFirst]:
    runner = HoldFirst(settings)
    yield runner
    runner.release.set()


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 3 * WAIT
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


# --- out through a link ------------------------------------------------------------------------------------


def test_out_through_a_link_that_leaves_the_render_folder_is_refused(
    settings: Settings, outside: Path
) -> None:
    renders = settings.out_dir.resolve()
    renders.mkdir()
    (renders / "escape").symlink_to(outside, target_is_directory=True)
    (renders / "real").mkdir()
    (renders / "inner").symlink_to(renders / "real", target_is_directory=True)  # stays inside: fine
    outs = ["escape", "escape/deeper", str(renders / "escape"), str(renders / "escape" / "deeper")]
    with DaemonThread(settings, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            for i, out in enumerate(outs):
                peer.request(protocol.GENERATE, f"x{i}", *BASS, "out", out)
                _, args = peer.wait_for(f"x{i}", protocol.ERROR, protocol.ACCEPTED)
                assert args[1:] == refusal(out, settings)
            peer.request(protocol.GENERATE, "ok", *BASS, "out", "inner/takes")
            address, args = peer.wait_for("ok", protocol.DONE, protocol.ERROR)
        finally:
            peer.close()
    assert address == protocol.DONE, args
    take = renders / "real" / "takes" / "generated__bass__120bpm__1bars__v1"
    assert args[1:] == [
        str(take.with_suffix(".wav")),
        str(take.with_suffix(".mid")),
    ]  # the builtin's notes too
    assert sf.info(args[1]).frames == 2 * 44100  # one bar of 4/4 at 120 bpm
    assert everything_in(outside) == []


def test_a_link_dropped_into_the_hot_folder_cannot_be_used_as_out(settings: Settings, outside: Path) -> None:
    """The reviewer's repro: the hot folder inside the render folder moves a dropped link into ``failed/``, and
    a request names it as ``out``."""
    renders = settings.out_dir.resolve()
    hot = renders / "hot"
    settings = settings.with_overrides(watch_dir=hot, watch_settle_s=0.2)
    with DaemonThread(settings, discovery=False) as d:
        (hot / "separate" / "etc").symlink_to(outside, target_is_directory=True)
        failed = hot / "failed"
        # the link is moved first, then its note is written: wait for both
        wait_until(
            lambda: (failed / "etc").is_symlink() and (failed / "etc.txt").is_file(), "the link in failed/"
        )
        peer = OscPeer(d.port)
        try:
            for rid, out in (("rel", "hot/failed/etc"), ("abs", str(hot / "failed" / "etc" / "sub"))):
                peer.request(protocol.GENERATE, rid, *BASS, "out", out)
                assert peer.wait_for(rid, protocol.ERROR, protocol.ACCEPTED)[1][1:] == refusal(out, settings)
        finally:
            peer.close()
    assert everything_in(outside) == []


def test_a_link_that_appears_while_the_job_waits_is_refused_when_it_starts(
    settings: Settings, outside: Path, hold: HoldFirst
) -> None:
    renders = settings.out_dir.resolve()
    renders.mkdir()
    with DaemonThread(settings, hold, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.GENERATE, "first", *BASS)
            assert hold.started.wait(WAIT)
            peer.request(protocol.GENERATE, "later", *BASS, "out", "later/takes")
            assert peer.wait_for("later", protocol.ACCEPTED, protocol.ERROR) == (
                protocol.ACCEPTED,
                ["later", 1],
            )  # no link yet: accepted
            (renders / "later").symlink_to(outside, target_is_directory=True)
            hold.release.set()
            assert peer.wait_for("first", protocol.DONE, protocol.ERROR)[0] == protocol.DONE
            _, args = peer.wait_for("later", protocol.ERROR, protocol.DONE)
        finally:
            peer.close()
    assert args[1:] == [
        "invalid_argument",
        f"out must be a folder inside the render folder or an allowed root ({renders}), symlinks followed, "
        f"got {str(renders / 'later' / 'takes')!r}; add it to allowed_roots in the config file to allow it",
    ]
    assert everything_in(outside) == []


def test_a_jobs_folder_is_made_level_by_level_and_never_through_a_link(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = (tmp_path / "renders").resolve()
    renders.mkdir()
    roots = [renders]
    folder, made = outdir.prepare(renders / "a" / "b", roots)
    folder.close()
    real = folder.path
    assert (real, made) == (renders / "a" / "b", [renders / "a", renders / "a" / "b"]) and real.is_dir()
    (real / "take.wav").write_bytes(b"RIFF")
    outdir.remove_empty(made)  # a folder with a file in it stays, and so do the ones above it
    assert (real / "take.wav").is_file()
    (renders / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidArgument, match="symlinks followed, got '.*escape/x'"):
        outdir.prepare(renders / "escape" / "x", roots)
    (renders / "file").write_bytes(b"")
    with pytest.raises(AudioWriteError, match=re.escape(f"{renders / 'file'} exists and is not a folder")):
        outdir.prepare(renders / "file" / "x", roots)

    real_mkdir = os.mkdir

    def race(path: Any, *args: Any, **kwargs: Any) -> None:
        """Someone puts a link where the next level is about to be made."""
        if str(path) == "raced":  # made in the open folder renders/new
            os.symlink(outside, path, dir_fd=kwargs["dir_fd"])
            raise FileExistsError(path)
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", race)
    with pytest.raises(InvalidArgument, match="symlinks followed"):
        outdir.prepare(renders / "new" / "raced" / "deeper", roots)
    monkeypatch.undo()
    assert list((renders / "new").iterdir()) == [renders / "new" / "raced"]  # kept: the link is in it
    assert everything_in(outside) == []


class HoldMidJob:
    """The real pipeline, except that the job waits for :attr:`release` at ``point``: ``engine``, in its first
    progress report (its folder is made and open, nothing written yet), or ``publish``, when told its planned
    files (its temp files and claims are written, nothing is published yet)."""

    def __init__(self, settings: Settings, point: str) -> None:
        self.real = PipelineRunner(settings)
        self.point = point
        self.started = threading.Event()
        self.release = threading.Event()

    def _hold(self, point: str) -> None:
        if point == self.point and not self.started.is_set():
            self.started.set()
            assert self.release.wait(3 * WAIT)

    def __call__(self, spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook) -> Outcome:
        def held_progress(fraction: float, stage: str) -> None:
            self._hold("engine")
            progress(fraction, stage)

        def held_publish(plan: list[dict[str, Any]]) -> None:
            self._hold("publish")
            on_publish(plan)

        return self.real(spec, held_progress, held_publish)


@pytest.mark.parametrize("point", ["engine", "publish"])
def test_a_jobs_folder_swapped_for_a_link_mid_job_gets_nothing_through_the_link(
    settings: Settings, outside: Path, point: str
) -> None:
    """The reviewer's repro: the job's folder is checked and made, then while the job runs someone renames it
    and puts a link to a folder outside in its place. Nothing may be written through the link; the job fails
    naming its folder, and leaves no temp file or claim anywhere."""
    renders = settings.out_dir.resolve()
    renders.mkdir()
    runner = HoldMidJob(settings, point)
    with DaemonThread(settings, runner, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.GENERATE, "swap", *BASS, "out", "x")
            assert runner.started.wait(WAIT)
            if point == "publish":
                assert any(
                    p.name.endswith(".tmp") for p in (renders / "x").iterdir()
                )  # written, not published
            (renders / "x").rename(renders / "x.old")
            (renders / "x").symlink_to(outside, target_is_directory=True)
            runner.release.set()
            _, args = peer.wait_for("swap", protocol.ERROR, protocol.DONE)
        finally:
            runner.release.set()
            peer.close()
    assert args[1:] == [
        "write_failed",
        f"the output folder {renders / 'x'} was moved or replaced while the job ran, so its files were not "
        f"published; check the folder and send the request again",
    ]
    assert everything_in(outside) == []
    assert everything_in(renders) == ["x", "x.old"]  # the link stays, and the moved folder is empty
    assert (renders / "x").is_symlink()


# --- FIFOs as inputs ---------------------------------------------------------------------------------------


def test_fifos_in_requests_are_refused(settings: Settings, tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "in" / "pipe.wav")
    with DaemonThread(settings, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.SEPARATE, "s", str(fifo))
            assert peer.wait_for("s", protocol.ERROR, protocol.ACCEPTED)[1][1:] == [
                "unreadable_audio",
                f"{fifo} is not a regular file (it is a FIFO); give the path of an audio file",
            ]
            peer.request(protocol.GENERATE, "g", *BASS, "context", str(fifo))
            assert peer.wait_for("g", protocol.ERROR, protocol.ACCEPTED)[1][1:] == [
                "unreadable_audio",
                f"context file {fifo} is not a regular file (it is a FIFO); give the path of an audio file",
            ]
        finally:
            peer.close()
            release(fifo)
    assert everything_in(settings.out_dir) == []


@pytest.mark.parametrize("kind", ["separate", "vary", "generate"])
def test_a_file_replaced_by_a_fifo_while_its_job_waits_fails_the_job_not_the_worker(
    settings: Settings, tmp_path: Path, hold: HoldFirst, kind: str
) -> None:
    sr = 44100
    song = tmp_path / "in" / "song.wav"
    song.parent.mkdir()
    t = np.arange(sr) / sr
    sf.write(song, np.sin(2 * np.pi * 220 * t).astype(np.float32), sr, subtype="FLOAT")
    args: tuple[Any, ...] = (*BASS, "context", str(song)) if kind == "generate" else (str(song),)
    with DaemonThread(settings, hold, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            peer.request(protocol.GENERATE, "first", *BASS)
            assert hold.started.wait(WAIT)
            peer.request(f"{protocol.PREFIX}/{kind}", "swapped", *args, "out", "fresh/takes")
            assert peer.wait_for("swapped", protocol.ACCEPTED, protocol.ERROR)[0] == protocol.ACCEPTED
            song.unlink()
            make_fifo(song)
            hold.release.set()
            _, error = peer.wait_for("swapped", protocol.ERROR, protocol.DONE)
            peer.request(protocol.GENERATE, "after", *BASS)  # the worker goes on
            assert peer.wait_for("after", protocol.DONE, protocol.ERROR)[0] == protocol.DONE
        finally:
            peer.close()
            release(song)  # a regression is stuck in open(): let it go, so that the daemon can stop
    assert error[1:] == [
        "unreadable_audio",
        f"{song} is not a regular file (it is a FIFO); give the path of an audio file",
    ]
    assert not (settings.out_dir / "fresh").exists()  # the folder made for the failed job is gone again
