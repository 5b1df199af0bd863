"""What a hostile review found in the daemon's paths, over a real daemon with the builtin engine: FIFOs given as
inputs, which must be refused, never opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
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


def everything_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


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
            peer.request(f"{protocol.PREFIX}/{kind}", "swapped", *args)
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
