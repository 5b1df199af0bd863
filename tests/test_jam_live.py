"""The live jam without a sound card: the stream callback (bridge.jam.duplex) driven block by block, and the
session thread (bridge.jam.live) on a fake stream that keeps sounddevice's callback contract and loops its
output back to its input after the latency it reports. Also the sound card's errors when sounddevice or
PortAudio is missing. The real thing, on JACK, is tests/test_jam_soundcard.py."""

from __future__ import annotations

import builtins
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.timing import Grid
from bridge.cli import main
from bridge.engines.builtin import BuiltinEngine
from bridge.jam import JamOptions, JamSession
from bridge.jam.duplex import Duplex, click_track
from bridge.jam.live import LiveJam, LiveOptions

ROOT = Path(__file__).resolve().parents[1]
SR = 44100


def duplex(count_in: int = 100, cycle: int = 1000, repeat: bool = True) -> Duplex:
    click = np.full((count_in, 2), 0.25, dtype=np.float32)
    return Duplex(
        cycle=cycle, count_in=click, channels=(1,), out_channels=2, slots=4, capture_frames=4096,
        cycles=4, repeat=repeat,
    )  # fmt: skip


def drive(d: Duplex, frames: int, block: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Call ``d`` like a stream for ``frames`` frames in ``block``-frame blocks; input channel 1 counts frames
    from ``offset``. Returns (output ``[frames, 2]``, input ``[frames, 2]``)."""
    out = np.zeros((frames, 2), dtype=np.float32)
    given = np.zeros((frames, 2), dtype=np.float32)
    given[:, 1] = np.arange(offset, offset + frames, dtype=np.float32)
    for at in range(0, frames, block):
        n = min(block, frames - at)
        d(given[at : at + n], out[at : at + n], n, None, None)
    return out, given


def part(value: float, cycle: int = 1000) -> np.ndarray:
    return np.stack([np.full(cycle, value), np.full(cycle, -value)]).astype(np.float32)


def test_the_callback_plays_the_click_then_each_part_from_its_line_across_odd_blocks() -> None:
    d = duplex()
    d.hand_over(0, part(0.5))
    d.hand_over(1, part(0.25))
    out, given = drive(d, 100 + 4 * 1000 + 50, block=333)
    assert np.all(out[:100] == 0.25)
    np.testing.assert_array_equal(out[100:1100], part(0.5).T)
    np.testing.assert_array_equal(out[1100:2100], part(0.25).T)
    np.testing.assert_array_equal(out[2100:4100], np.tile(part(0.25).T, (2, 1)))  # no part: repeat
    assert not out[4100:].any() and d.finished  # after the last cycle: silence
    np.testing.assert_array_equal(d.captured(3000, 4000)[0], given[3000:4000, 1])  # the band's channel 2


def test_a_part_handed_over_after_its_line_is_never_played() -> None:
    d = duplex(repeat=False)
    d.hand_over(0, part(0.5))
    out, _ = drive(d, 1100 + 10, block=10)  # the callback is 10 frames into cycle 1
    slot = d.hand_over(1, part(0.25))
    out2, _ = drive(d, 1000, block=10)
    assert d.was_played(0, 0) is True
    assert d.was_played(1, slot) is False
    assert not out[1100:].any() and not out2[:990].any()  # rest, not the late part
    assert d.was_played(2, slot) is False  # its slot is free again: cycle 2 rests too


class LoopbackStream:
    """A fake duplex stream in sounddevice's contract: calls back in real time in 256-frame blocks from
    start() to stop(), and feeds its output back to its input ``round_trip`` frames later (a cable from
    output 1 to input 2; input 1 carries a steady tone, the band)."""

    def __init__(self, callback: Duplex, latency: tuple[float, float]) -> None:
        self.callback, self.latency = callback, latency
        self.round_trip = int(round(sum(latency) * SR)) if max(latency) < 2 else 300  # at least a block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        block, done, begun = 256, 0, time.perf_counter()
        cable = np.zeros(self.round_trip, dtype=np.float32)  # output frame n comes in as frame n + round_trip
        tone = (0.3 * np.sin(2 * np.pi * 220.0 * np.arange(SR) / SR)).astype(np.float32)
        out = np.zeros((block, 2), dtype=np.float32)
        while not self._stop.is_set():
            given = np.zeros((block, 2), dtype=np.float32)
            given[:, 0] = tone[(done + np.arange(block)) % SR]
            given[:, 1] = cable[:block]
            self.callback(given, out, block, None, None)
            cable = np.concatenate([cable[block:], out[:, 0]])
            done += block
            wait = begun + done / SR - time.perf_counter()
            if wait > 0:
                time.sleep(wait)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("latency", [(0.004, 0.007), (0.0, 97391.5)])
def test_the_band_is_recorded_in_time_using_the_latency_the_stream_reports(
    tmp_path: Path, latency: tuple[float, float]
) -> None:
    options = JamOptions(stem="bass", bars=1, bpm=240.0, sample_rate=SR)
    session = JamSession(options, BuiltinEngine(), tmp_path, "live")
    notes: list[str] = []
    streams: list[LoopbackStream] = []

    def open_stream(callback: Duplex) -> LoopbackStream:
        streams.append(LoopbackStream(callback, latency))
        return streams[-1]

    run = LiveJam(session, LiveOptions((0, 1), 2, 1, cycles=4), open_stream, on_note=notes.append).run()
    length = Grid(240.0, sample_rate=SR).samples_for_bars(1)
    take = sf.read(run.performance, dtype="float32", always_2d=True)[0]
    band = sf.read(run.recording, dtype="float32", always_2d=True)[0]
    assert take.shape == band.shape == (4 * length, 2)
    if max(latency) < 2:  # believed: the cable's echo lines up with the take to the sample
        assert notes == []
        np.testing.assert_array_equal(band[:, 1], take[:, 0])
    else:  # not believed: uncompensated (the echo comes the cable's 300 frames late), and the user is told
        assert notes and "give the round trip with --latency MS" in notes[0]
        shift = streams[0].round_trip
        np.testing.assert_array_equal(band[shift:, 1], take[:-shift, 0])
    assert [p.play_index for p in run.parts] == [1, 2, 3]


def test_the_click_accents_each_bar() -> None:
    grid = Grid(120.0, sample_rate=SR)
    click = click_track(grid, 2, 1)[:, 0]
    assert click.shape == (grid.samples_for_bars(2),)
    beat = int(grid.samples_per_quarter)
    spectrum = [np.abs(np.fft.rfft(click[b * beat : b * beat + 1000])).argmax() for b in range(8)]
    assert spectrum[0] == spectrum[4] > spectrum[1] == spectrum[2] == spectrum[3] == spectrum[5]


def test_without_sounddevice_the_jam_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import sounddevice -> ImportError
    code = main(["jam", "--stem", "bass", "--bpm", "120", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "stembridge jam: error: the sound card needs the sounddevice package: pip install 'stembridge[jam]' "
        "(or play a file with --input FILE)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_without_portaudio_the_jam_says_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = builtins.__import__

    def without_portaudio(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what sounddevice raises then
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_portaudio)
    code = main(["jam", "--list-devices"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(
        "stembridge jam: error: PortAudio is not installed: install libportaudio2 / PortAudio"
    )


def test_the_cli_starts_without_importing_sounddevice() -> None:
    code = (
        "import sys\n"
        "from bridge.cli import build_parser\n"
        "build_parser().parse_args(['jam', '--stem', 'bass', '--bpm', '120'])\n"
        "assert 'sounddevice' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bpm", "120"], "stembridge jam needs --stem and --bpm, e.g. --stem bass --bpm 120 (see --help)"),
        (
            ["--stem", "bass", "--bpm", "120", "--channels", "0,1"],
            "channels must be input channel numbers from 1, like 1,2 or 3-4, got '0,1'",
        ),
    ],
)
def test_bad_sound_card_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code = main(["jam", *argv, "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"stembridge jam: error: {message}"]
    assert list(tmp_path.iterdir()) == []
