"""SIGTERM and SIGHUP while the CLI writes its files: it removes its temp files, publishes nothing, and exits
with 128 plus the signal's number, as a shell expects of a process a signal ended.

The real command runs in a subprocess on a minute of audio made here. The moment is made deterministic from the
outside: the test waits until a temp file appears in the output folder, stops the process there (SIGSTOP),
checks that a temp file is still there (so the writing is not over), queues the signal and lets it go on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio import writer
from bridge.termination import Terminated, termination_raises

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 60  # four stems of this at 32 bits take long enough to write that the test sees them being written
DEADLINE = 120.0  # for the command to reach its write phase, and for it to end after the signal


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp")) if folder.is_dir() else []


def stopped(pid: int) -> bool:
    """Whether the process is stopped (by SIGSTOP): its state in /proc is ``T``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def stop_while_writing(proc: subprocess.Popen[str], out: Path) -> list[str]:
    """Stop ``proc`` at a moment when its temp files are in ``out``; return their names."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before its write phase was caught: {proc.communicate()}")
        if not temp_files(out):
            time.sleep(0.001)
            continue
        proc.send_signal(signal.SIGSTOP)
        while not stopped(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        seen = temp_files(out)
        if seen:
            return seen
        proc.send_signal(signal.SIGCONT)  # caught between two files: try again
    raise AssertionError(f"no temp file appeared in {out} within {DEADLINE:g} s")


@pytest.fixture()
def long_song(tmp_path: Path) -> Path:
    sr = 44100
    t = np.arange(SECONDS * sr) / sr
    pulse = np.sin(2 * np.pi * 2 * t) > 0
    audio = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.2 * np.sin(2 * np.pi * 220 * t) * pulse])
    path = tmp_path / "in" / "long song.wav"
    path.parent.mkdir()
    sf.write(path, audio.T.astype(np.float32), sr, subtype="FLOAT")
    return path


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_writing_leaves_no_files(tmp_path: Path, long_song: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bridge.cli", "separate", str(long_song), "--out", str(out)]
    proc = subprocess.Popen(
        [*command, "--bit-depth", "32", "-q"],
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert stop_while_writing(proc, out)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.communicate()
    assert [p.name for p in out.rglob("*")] == []  # no temp file, no claim, no output
    assert proc.returncode == 128 + sig
    assert err == f"stembridge separate: terminated ({sig.name}); files being written were discarded\n"


def test_an_ignored_signal_stays_ignored_and_handlers_come_back() -> None:
    """Under ``nohup`` SIGHUP is ignored, and must stay so; the handlers before the block come back after it."""
    before_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    before_term = signal.getsignal(signal.SIGTERM)
    try:
        with termination_raises():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (before_term, signal.SIG_IGN)
            with pytest.raises(Terminated) as caught:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)  # the handler runs at the next bytecode; the sleep is only a bound
            assert (caught.value.exit_code, caught.value.name) == (143, "SIGTERM")
            # a second signal cannot cut the cleanup short
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is before_term
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before_hup)


def test_a_signal_as_a_temp_file_is_made_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal's exception can come as ``os.open`` returns, before the writer has the file in hand: the file
    it made must go too (the moment the subprocess test above stops the command at, most of the time)."""
    real_open = os.open

    def open_then_terminated(path: str, flags: int, mode: int = 0o777) -> int:
        os.close(real_open(path, flags, mode))
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(writer.os, "open", open_then_terminated)
    with pytest.raises(Terminated):
        writer.write_audio(tmp_path / "out" / "part.wav", np.zeros((2, 4410), np.float32), 44100)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
