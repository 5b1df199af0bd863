"""``stembridge jam`` on the sound card, for real: JACK's dummy backend (no hardware), a band client, the CLI.

The fixture starts ``jackd -d dummy`` under a server name of its own; the band (tests/jack_band.py) is a
PortAudio client on it, which the jam finds as the device ``PortAudio``: PortAudio connects the jam's inputs
to the band's outputs and the jam's outputs to the band's inputs when the jam's stream starts, so nothing is
missed. JACK runs synchronously (``-S``): every client runs every period, so positions are sample-exact.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.timing import Grid
from bridge.jam.duplex import click_track

ROOT = Path(__file__).resolve().parents[1]
RATE, PERIOD = 44100, 256
JACK_REQUIRED = bool(os.environ.get("CI"))
# The JACK graph's round trip between two clients is one period: the jam's output reaches the band in the
# same period (or the next), the band's echo reaches the jam in the next (or the same).
ROUND_TRIP_MS = f"{PERIOD / RATE * 1000:.4f}"
BPM, BARS, CYCLES = 240.0, 1, 5
L = Grid(BPM, sample_rate=RATE).samples_for_bars(BARS)

pytestmark = pytest.mark.skipif(
    shutil.which("jackd") is None and not JACK_REQUIRED,
    reason="jackd is not installed (apt-get install jackd2; set CI=1 to require it)",
)


def _readline(stream: object, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return ready[0].readline() if ready else ""  # type: ignore[attr-defined,no-any-return]


@pytest.fixture()
def jack(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A JACK server on the dummy backend under its own name; yields the environment that reaches it."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is required when CI is set: apt-get install -y jackd2 libportaudio2")
    env = {
        **os.environ,
        "JACK_DEFAULT_SERVER": f"stembridge-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "JACK_NO_AUDIO_RESERVATION": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "jackd.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            ["jackd", "--no-realtime", "-S", "-d", "dummy", "-r", str(RATE), "-p", str(PERIOD)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        up = subprocess.run(["jack_wait", "-w", "-t", "15"], env=env, capture_output=True, timeout=30)
        if up.returncode != 0:
            pytest.fail(f"jackd did not come up: {log.read_text(errors='replace')[-2000:]}")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture()
def band(jack: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The band client, ready; yields it and where it leaves what it heard (after it is stopped)."""
    heard = tmp_path / "heard.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.jack_band", str(heard)],
        cwd=ROOT,
        env=jack,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if _readline(proc.stdout, 60).strip() != "ready":
            proc.kill()
            pytest.fail(f"the band did not start: {proc.communicate(timeout=10)[1][-2000:]}")
        yield proc, heard
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def jam(env: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "bridge.cli", "jam", "--stem", "bass", "--bpm", f"{BPM:g}", "--bars", str(BARS),
        "--input-device", "PortAudio", "--output-device", "PortAudio", "--latency", ROUND_TRIP_MS,
        "--out", str(out), *extra,
    ]  # fmt: skip


def stop_band(proc: subprocess.Popen[str], heard: Path) -> np.ndarray:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    return np.load(heard)


def test_the_jam_plays_the_count_in_then_each_part_from_its_bar_line_and_records_the_band_in_time(
    jack: dict[str, str], band: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    proc, heard_at = band
    out = tmp_path / "out"
    done = subprocess.run(
        jam(jack, out, "--cycles", str(CYCLES), "--json"),
        cwd=ROOT, env=jack, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    heard = stop_band(proc, heard_at)
    report = json.loads(done.stdout)
    assert [c["index"] for c in report["cycles"]] == [0, 1, 2, 3]
    assert [c["play_index"] for c in report["cycles"]] == [1, 2, 3, 4]
    (folder,) = out.iterdir()
    performance, humans = folder / "performance.wav", folder / "humans.wav"
    assert report["outputs"][-2:] == [str(performance), str(humans)]
    take, rate = sf.read(performance, dtype="float32", always_2d=True)
    assert rate == RATE and take.shape == (CYCLES * L, 2)

    # the count-in: one bar of click, sample for sample, where the jam's output begins
    click = click_track(Grid(BPM, sample_rate=RATE), 1, 2)
    start = int(np.flatnonzero(heard[:, 0])[0] - np.flatnonzero(click[:, 0])[0])
    np.testing.assert_array_equal(heard[start : start + len(click)], click)
    # then the AI: each cycle exactly the take's, from its bar line (silence in cycle 0, before any part)
    line = start + len(click)
    np.testing.assert_array_equal(heard[line : line + CYCLES * L], take)
    assert not take[:L].any()
    for c in report["cycles"]:
        if not c["late"]:
            part, _ = sf.read(folder / f"part-{c['play_index']}.wav", dtype="float32", always_2d=True)
            at = line + c["play_index"] * L
            np.testing.assert_array_equal(heard[at : at + L], part)
    assert sum(not c["late"] for c in report["cycles"]) >= 1

    # the band's recording from bar 1, the round trip taken off: its echo of the jam is the take itself
    band_take, _ = sf.read(humans, dtype="float32", always_2d=True)
    assert band_take.shape == (CYCLES * L, 2)
    np.testing.assert_array_equal(band_take[:, 1], take[:, 0])
    assert np.abs(band_take[:, 0]).max() > 0.1  # and its own playing


def test_ctrl_c_ends_the_jam_cleanly_and_writes_the_take(
    jack: dict[str, str], band: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        jam(jack, out, "--count-in", "0"), cwd=ROOT, env=jack, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = _readline(proc.stdout, 120)
        assert first.startswith("cycle 0: part 1 "), first
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    (folder,) = out.iterdir()
    assert f"performance {folder / 'performance.wav'}" in stdout
    take = sf.read(folder / "performance.wav", dtype="float32", always_2d=True)[0]
    assert len(take) % L == 0 and len(take) >= 2 * L
    recording = sf.read(folder / "humans.wav", dtype="float32", always_2d=True)[0]
    assert len(recording) >= L
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # nothing half-written


def test_list_devices_shows_the_jack_devices(jack: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "jam", "--list-devices"],
        cwd=ROOT, env=jack, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "system, JACK Audio Connection Kit (2 in, 2 out)" in done.stdout


def test_a_device_that_is_not_there_is_one_line_and_exit_2(jack: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [*jam(jack, tmp_path / "out")[:-2], "--input-device", "Nonesuch"],
        cwd=ROOT, env=jack, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("stembridge jam: error: no input device 'Nonesuch'")
    assert "--list-devices" in lines[-1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
