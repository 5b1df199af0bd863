"""The Max for Live device (m4l/): its JavaScript under node with a stub Live set, its patch, its build, and one
round trip through a real daemon.

The device's JavaScript runs in tests/m4l/harness.js, which stands in for Max's [js] object (outlet, post, Task,
messnamed) and for Live (LiveAPI over a JSON Live set). :class:`Device` drives it one message at a time. The
end-to-end tests put :class:`MaxUdp` (what [udpsend] and [udpreceive] do) between the device and a daemon.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from bridge.audio.bwf import read_bext
from bridge.config import Settings
from bridge.server.daemon import DaemonThread
from tests import synth
from tests.test_daemon import no_leaked_threads  # noqa: F401 - fails a test that leaks threads

ROOT = Path(__file__).resolve().parent.parent
M4L = ROOT / "m4l"
HARNESS = ROOT / "tests" / "m4l" / "harness.js"
NODE = shutil.which("node") or shutil.which("nodejs")
WAIT = 10.0  # upper bound for one reply from the daemon; nothing here asserts on timing

NO_NODE = "node is not installed (Debian package nodejs): the device's JavaScript runs under it"


# --- the harness ------------------------------------------------------------------------------------------


class Device:
    """The device's JavaScript in a node process; each call returns what it did (outlets, Live calls...)."""

    def __init__(self) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cmd(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the harness died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        answer: dict[str, Any] = json.loads(line)
        assert answer["ok"], answer.get("error")
        assert answer["errors"] == [], f"Live refused a call: {answer['errors']}"
        return answer

    def send(self, message: str, *args: Any) -> dict[str, Any]:
        return self.cmd("send", message=message, args=list(args))

    def reply(self, address: str, *args: Any) -> dict[str, Any]:
        return self.cmd("reply", address=address, args=list(args))

    def eval(self, expr: str) -> Any:
        return self.cmd("eval", expr=expr)["result"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()


def osc_out(answer: dict[str, Any]) -> list[list[Any]]:
    """The OSC messages the device sent to [udpsend] (address first)."""
    return [o[1:] for o in answer["outlets"] if o[0] == 0 and str(o[1]).startswith("/")]


def ui(answer: dict[str, Any], name: str) -> list[list[Any]]:
    """What the device sent to one UI object (through [route name])."""
    return [o[2:] for o in answer["outlets"] if o[0] == 2 and o[1] == name]


def ui_text(answer: dict[str, Any], name: str) -> str:
    """The last text set on a UI object."""
    sets = [m[1] for m in ui(answer, name) if m and m[0] == "set"]
    assert sets, f"nothing shown in {name!r}: {answer['outlets']}"
    return str(sets[-1])


def clip(path: str, start: float = 0.0, length: float = 8.0, **more: Any) -> dict[str, Any]:
    """An audio clip as LiveAPI shows it: warped, ``length`` beats from the file's start, at beat ``start``;
    no warp markers (as if Live gave none) and no sample length, unless ``more`` says otherwise."""
    info = {
        "name": Path(path).stem,
        "file_path": path,
        "is_audio_clip": 1,
        "warping": 1,
        "looping": 0,
        "start_marker": 0.0,
        "end_marker": length,
        "loop_start": 0.0,
        "loop_end": length,
        "start_time": start,
        "end_time": start + length,
        "length": length,
        "warp_markers": json.dumps({"warp_markers": []}),
        "sample_length": -1,
        "sample_rate": 44100.0,
    }
    info.update(more)
    return info


def warp_markers(*pairs: tuple[float, float]) -> str:
    """Clip.warp_markers as LiveAPI's get() gives it: a JSON dict of (file seconds, clip beat) pairs."""
    return json.dumps({"warp_markers": [{"sample_time": s, "beat_time": b} for s, b in pairs]})


def unwarped(
    path: str, start: float, length: float, file_start: float, file_end: float, **more: Any
) -> dict[str, Any]:
    """An unwarped clip ``length`` beats long at beat ``start`` that plays its file from ``file_start`` to
    ``file_end`` seconds: its loop_start / loop_end are in seconds (its start_marker, in beats by the LOM's word,
    is set to something else, so a test fails if the device reads it instead)."""
    return clip(
        path, start=start, length=length, warping=0, loop_start=file_start, loop_end=file_end,
        start_marker=99.0, end_marker=99.5, **more,
    )  # fmt: skip


def track(
    name: str, slots: int, arrangement: list[dict[str, Any]] | None = None, **more: Any
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": name,
        "is_foldable": 0,
        "has_audio_input": 1,
        "has_midi_input": 0,
        "clip_slots": [None] * slots,
        "arrangement_clips": arrangement or [],
    }
    info.update(more)
    return info


def live_set(
    tracks: list[dict[str, Any]],
    selected: str | None,
    tempo: float = 120.0,
    signature: tuple[int, int] = (4, 4),
    version: tuple[int, int, int] = (12, 1, 0),
    loop: tuple[float, float] = (0.0, 16.0),
    scenes: int = 4,
) -> dict[str, Any]:
    return {
        "app": dict(zip(("major", "minor", "bugfix"), version, strict=True)),
        "song": {
            "tempo": tempo,
            "signature_numerator": signature[0],
            "signature_denominator": signature[1],
            "loop_start": loop[0],
            "loop_length": loop[1],
        },
        "scenes": scenes,
        "tracks": tracks,
        "view": {"detail_clip": selected},
    }


@pytest.fixture()
def device() -> Iterator[Device]:
    """The device's script under node; the tests that need it skip without node, the patch and build tests run."""
    if NODE is None:
        pytest.skip(NO_NODE)
    d = Device()
    yield d
    d.close()


def start(device: Device, live: dict[str, Any], now: int = 1_000_000) -> dict[str, Any]:
    """Load the device into a Live set and let [live.thisdevice] say it is ready."""
    device.cmd("load", live=live, now=now)
    return device.send("init")


def reply_port(answer: dict[str, Any]) -> int:
    ports = [o[2] for o in answer["outlets"] if o[0] == 1 and o[1] == "port"]
    assert ports, "the device never told [udpreceive] a port"
    return int(ports[-1])


ARRANGEMENT_CLIP = "live_set tracks 1 arrangement_clips 0"
SESSION_CLIP = "live_set tracks 0 clip_slots 1 clip"


def arrangement_set(**kw: Any) -> dict[str, Any]:
    """Track 0 "Keys"; track 1 "Drums" with a 4-bar (6/8 at 96 bpm: 12 beats) clip at bar 9 (beat 24)."""
    kw.setdefault("tempo", 96.0)
    kw.setdefault("signature", (6, 8))
    loop = clip("/Users/me/Music/My Loops/drum loop.wav", start=24.0, length=12.0)
    return live_set([track("Keys", 4), track("Drums", 4, [loop])], ARRANGEMENT_CLIP, **kw)


def session_set(used: tuple[int, ...] = (1,), scenes: int = 4, **kw: Any) -> dict[str, Any]:
    """Track 0 "Loop" with clips in the slots ``used`` (the selected one in slot 1); track 1 "Pad"."""
    t = track("Loop", scenes)
    for s in used:
        t["clip_slots"][s] = clip(f"/Users/me/loop {s}.wav", length=16.0, name=f"Loop {s}")
    return live_set([t, track("Pad", scenes)], SESSION_CLIP, scenes=scenes, **kw)


# --- the pure core: timing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beats", "signature", "bars", "exact"),
    [
        (32.0, (4, 4), 8, True),
        (12.0, (6, 8), 4, True),  # a bar of 6/8 is three quarter notes
        (14.0, (7, 8), 4, True),
        (6.0, (3, 4), 2, True),
        (10.0, (4, 4), 3, False),  # 2.5 bars round to 3, and the device says it rounded
        (1.0, (4, 4), 1, False),  # never fewer than one bar
    ],
)
def test_bars_from_a_length_in_beats_and_the_signature(
    device: Device, beats: float, signature: tuple[int, int], bars: int, exact: bool
) -> None:
    device.cmd("load", live=live_set([], None))
    assert device.eval(f"core.barsOf({beats}, {signature[0]}, {signature[1]})") == {
        "bars": bars,
        "exact": exact,
    }


def test_positions_in_seconds_from_beats_and_tempo(device: Device) -> None:
    device.cmd("load", live=live_set([], None))
    assert device.eval("core.beatsToSeconds(24, 96)") == 15.0
    assert device.eval("core.beatsToSeconds(1, 120)") == 0.5
    # sent as text with microseconds: a 32-bit OSC float would be 2 samples off at 10 minutes
    assert device.eval("core.secondsText(core.beatsToSeconds(1201, 120))") == "600.500000"
    assert device.eval("core.secondsText(1/3)") == "0.333333"
    assert device.eval("core.canInsert(12, 0, 5)") is True
    assert device.eval("core.canInsert(12, 0, 4)") is False
    assert device.eval("core.canInsert(11, 3, 25)") is False
    assert device.eval("core.canInsert(13, 0, 0)") is True


# --- the pure core: which part of its file a clip plays ------------------------------------------------------


def js(value: Any) -> str:
    """A Python value as a JavaScript literal, for ``Device.eval``."""
    return json.dumps(value)


def test_warp_markers_map_clip_beats_to_file_seconds(device: Device) -> None:
    device.cmd("load", live=live_set([], None))
    raw = [warp_markers((8.1, 16.0), (0.1, 0.0), (4.1, 8.0))]  # unsorted, as one atom holding JSON
    markers = device.eval(f"core.parseWarpMarkers({js(raw)})")
    assert markers == [{"beat": 0, "seconds": 0.1}, {"beat": 8, "seconds": 4.1}, {"beat": 16, "seconds": 8.1}]

    def at(beat: float) -> float:
        return float(device.eval(f"core.warpSeconds(core.parseWarpMarkers({js(raw)}), {beat})"))

    assert at(4.0) == pytest.approx(2.1) and at(12.0) == pytest.approx(6.1)
    assert at(-2.0) == pytest.approx(-0.9) and at(20.0) == pytest.approx(10.1)  # beyond: the nearest segment
    assert device.eval('core.parseWarpMarkers(["not json"])') == []
    assert device.eval("core.parseWarpMarkers([])") == []
    assert device.eval(f"isNaN(core.warpSeconds(core.parseWarpMarkers({js([warp_markers((0.0, 0.0))])}), 1))")


BASE_CLIP = {
    "warping": True, "looping": False, "arrangement": True, "startMarker": 0.0, "endMarker": 16.0,
    "loopStart": 0.0, "loopEnd": 16.0, "lengthBeats": 16.0, "warpMarkers": [], "fileSeconds": float("nan"),
}  # fmt: skip


def markers(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"seconds": s, "beat": b} for s, b in pairs]


@pytest.mark.parametrize(
    ("clip_state", "tempo", "expected"),
    [
        # unwarped: loop_start / loop_end are seconds of the file; on the timeline it plays its length in beats
        ({"warping": False, "loopStart": 2.5, "loopEnd": 10.0, "lengthBeats": 12.0}, 96.0,
         {"exact": True, "start": 2.5, "length": 7.5, "whole": False}),
        ({"warping": False, "arrangement": False, "loopStart": 1.25, "loopEnd": 5.25}, 120.0,
         {"exact": True, "start": 1.25, "length": 4.0, "whole": False}),
        ({"warping": False, "arrangement": False, "loopStart": 0.0, "loopEnd": 4.0, "fileSeconds": 4.0}, 120.0,
         {"exact": True, "start": 0.0, "length": 4.0, "whole": True}),
        # warped at the set's tempo (0.5 s a beat at 120), the file's beat 0 0.1 s in: the markers place it
        ({"startMarker": 4.0, "lengthBeats": 8.0, "warpMarkers": markers((0.1, 0.0), (16.1, 32.0))}, 120.0,
         {"exact": True, "start": 2.1, "length": 4.0, "whole": False}),
        ({"arrangement": False, "looping": True, "loopStart": 8.0, "loopEnd": 16.0,
          "warpMarkers": markers((0.0, 0.0), (16.0, 32.0))}, 120.0,
         {"exact": True, "start": 4.0, "length": 4.0, "whole": False}),
        # warped from another tempo: the file runs at 96 bpm, stretched to 120; no part of it is the result
        ({"startMarker": 4.0, "lengthBeats": 8.0, "warpMarkers": markers((0.0, 0.0), (20.0, 32.0))}, 120.0,
         {"exact": False, "fileBpm": 96.0}),
        # at the set's tempo at both ends but not in between (a marker moved)
        ({"warpMarkers": markers((0.0, 0.0), (2.0, 4.0), (4.2, 8.0), (8.0, 16.0))}, 120.0, {"exact": False}),
        # an Arrangement clip that loops plays parts of its file more than once
        ({"looping": True, "loopEnd": 4.0, "lengthBeats": 8.0, "warpMarkers": markers((0.0, 0.0), (8.0, 16.0))},
         120.0, {"exact": False}),
        ({}, 120.0, {"exact": False}),  # no warp markers from Live
    ],
)  # fmt: skip
def test_the_part_of_its_file_a_clip_plays(
    device: Device, clip_state: dict[str, Any], tempo: float, expected: dict[str, Any]
) -> None:
    device.cmd("load", live=live_set([], None))
    state = {**BASE_CLIP, **clip_state}
    section = device.eval(f"core.fileSection({js(state)}, {tempo})")  # json.dumps writes NaN as JS does
    for key, value in expected.items():
        assert section[key] == (pytest.approx(value) if isinstance(value, float) else value), (key, section)
    if not section["exact"]:
        assert section["reason"]


# --- requests built from Live state -----------------------------------------------------------------------


def test_generate_from_an_arrangement_clip_sends_bar_exact_timing(device: Device) -> None:
    shown = start(device, arrangement_set())
    port = reply_port(shown)
    assert ui(shown, "bars") == [["set", 4]]  # the Bars box follows the selected clip
    assert "drum loop.wav: 4 bars at 96 bpm, 6/8, at 15.000000 s" == ui_text(shown, "clip")
    device.send("stem", 3)  # the menu's index: pad
    device.send("prompt", "text", "warm", "pad")
    device.send("variations", 3)
    device.send("seed", 42)
    device.send("engine", "builtin")
    sent = osc_out(device.send("generate", 1))
    assert len(sent) == 1
    address, port_sent, job_id, *rest = sent[0]
    assert (address, port_sent) == ("/stembridge/generate", port)
    assert rest == [
        "pad",
        "context", "/Users/me/Music/My Loops/drum loop.wav",
        "bpm", 96, "bars", 4, "timesig", "6/8", "seed", 42, "variations", 3,
        "prompt", "warm pad",
        "position", "15.000000",  # beat 24 at 96 bpm
        "engine", "builtin",
    ]  # fmt: skip
    assert re.fullmatch(r"m4l[0-9a-z]+-\d+", job_id)


def test_ids_differ_across_sessions_and_requests(device: Device) -> None:
    ids = []
    for now in (1_000_000, 2_000_000):
        start(device, arrangement_set(), now=now)
        ids += [m[2] for m in osc_out(device.send("vary")) + osc_out(device.send("separate"))]
    assert len(set(ids)) == 4


def test_separate_and_vary_requests(device: Device) -> None:
    start(device, session_set())
    (sep,) = osc_out(device.send("separate"))
    # a Session clip has no timeline position: its stems start at 0 s; separate takes no bpm or bars
    assert sep[0] == "/stembridge/separate" and sep[3:] == ["/Users/me/loop 1.wav", "position", "0.000000"]
    device.send("strength", 0.75)
    device.send("variations", 2)
    (var,) = osc_out(device.send("vary"))
    assert var[0] == "/stembridge/vary"
    assert var[3:] == [
        "/Users/me/loop 1.wav", "bpm", 120, "bars", 4, "timesig", "4/4", "seed", 0, "variations", 2,
        "strength", 0.75, "position", "0.000000",
    ]  # fmt: skip
    moved = device.send("daemon", "127.0.0.1", 9988)
    assert [o for o in moved["outlets"] if o[0] == 0][:2] == [[0, "host", "127.0.0.1"], [0, "port", 9988]]
    assert osc_out(moved)[0][0] == "/stembridge/ping"  # and it checks the daemon is there
    device.send("token", "s3cret")
    (again,) = osc_out(device.send("separate"))
    assert again[-2:] == ["token", "s3cret"]


def test_generate_from_the_loop_range_uses_the_clips_that_start_there(device: Device) -> None:
    song = live_set(
        [
            track("Drums", 2, [clip("/a/drums.wav", start=16.0, length=16.0)]),
            track("Synth", 2, [clip("/a/synth.mid", start=16.0)], has_audio_input=0),  # a MIDI track
            track("Group", 2, is_foldable=1),
            track("Keys", 2, [clip("/a/keys.wav", start=16.0, length=16.0), clip("/a/late.wav", start=40.0)]),
            track("Vox", 2, [clip("/a/vox.wav", start=12.0, length=8.0, name="Vox early")]),
            track("Empty", 2),
        ],
        None,
        loop=(16.0, 16.0),
    )
    start(device, song)
    device.send("source", 1)
    device.send("bars", 4)
    answer = device.send("generate")
    (gen,) = osc_out(answer)
    assert gen[3:11] == ["bass", "context", "/a/drums.wav", "context", "/a/keys.wav", "bpm", 120, "bars"]
    assert gen[11] == 4 and gen[gen.index("position") + 1] == "8.000000"
    assert "Vox early" in ui_text(answer, "status")  # left out, and the device says so
    job = gen[2]
    done = device.reply("/stembridge/done", job, "/r/drums__bass__120bpm__4bars.wav")
    assert live_calls(done) == [
        ("live_set", "create_audio_track", [4]),  # after Keys, the last track that gave context
        ("live_set tracks 4", "create_audio_clip", ["/r/drums__bass__120bpm__4bars.wav", 16.0]),
    ]


def test_no_clip_or_a_midi_clip_is_an_error_in_plain_words(device: Device) -> None:
    start(device, live_set([track("A", 2)], None))
    answer = device.send("generate")
    assert osc_out(answer) == []
    assert ui_text(answer, "error").startswith("Select an audio clip first")
    midi = live_set(
        [track("A", 2, [clip("/a.mid", is_audio_clip=0)])], "live_set tracks 0 arrangement_clips 0"
    )
    start(device, midi)
    answer = device.send("vary")
    assert osc_out(answer) == [] and "MIDI clip" in ui_text(answer, "error")


def test_selecting_another_clip_moves_the_bars_box(device: Device) -> None:
    song = arrangement_set()
    song["tracks"][0]["clip_slots"][2] = clip("/x/long.wav", length=48.0)
    start(device, song)
    moved = device.cmd("select", clip="live_set tracks 0 clip_slots 2 clip")
    assert ui(moved, "bars") == [["set", 16]]  # 48 beats of 6/8
    assert ui_text(moved, "clip").startswith("long.wav: 16 bars")


def option(message: list[Any], key: str) -> Any:
    """The value after ``key`` in a request (None when the key is not there)."""
    return message[message.index(key) + 1] if key in message else None


def test_an_unwarped_clip_that_starts_inside_its_file_sends_the_part_it_plays(device: Device) -> None:
    # 6/8 at 96 bpm; the clip is at beat 24 (15 s), 12 beats (4 bars, 7.5 s) long, and plays its file from 2.5 s
    song = arrangement_set()
    song["tracks"][1]["arrangement_clips"][0] = unwarped(
        "/Users/me/Music/My Loops/drum loop.wav", start=24.0, length=12.0, file_start=2.5, file_end=10.0
    )
    shown = start(device, song)
    assert ui_text(shown, "clip") == "drum loop.wav from 2.5 s in: 4 bars at 96 bpm, 6/8, at 15.000000 s"
    answer = device.send("separate", 1)
    (sep,) = osc_out(answer)
    assert sep[3:] == [
        "/Users/me/Music/My Loops/drum loop.wav", "start", "2.500000", "length", "7.500000", "position", "15.000000",
    ]  # fmt: skip
    assert ui_text(answer, "status") == ""  # nothing to warn about: the stems are exactly what the clip plays
    answer = device.send("vary", 1)
    (var,) = osc_out(answer)
    assert (option(var, "start"), option(var, "length"), option(var, "bars")) == ("2.500000", "7.500000", 4)
    assert "not warped" in ui_text(answer, "status")  # its music is taken to be at the set's tempo
    (gen,) = osc_out(device.send("generate", 1))
    assert gen[3:8] == ["bass", "context", "/Users/me/Music/My Loops/drum loop.wav", "context_start", "2.500000"]  # fmt: skip
    assert option(gen, "start") is None  # generate takes no section: its context says where bar 1 is


def test_an_unwarped_session_clip_is_timed_by_the_seconds_it_plays(device: Device) -> None:
    loop = track("Loop", 4)
    # 4 s of the file from 1.25 s: 8 beats (2 bars of 4/4) at 120 bpm; Clip.length is meaningless here
    loop["clip_slots"][1] = unwarped(
        "/Users/me/loop.wav", start=0.0, length=3.7, file_start=1.25, file_end=5.25
    )
    shown = start(device, live_set([loop, track("Pad", 4)], SESSION_CLIP))
    assert ui(shown, "bars") == [["set", 2]]
    (var,) = osc_out(device.send("vary", 1))
    assert (option(var, "bars"), option(var, "start"), option(var, "length")) == (2, "1.250000", "4.000000")
    # the whole file (44100 * 4 samples at 44.1 kHz, played from 0): nothing to cut, so no section is sent
    loop["clip_slots"][1] = unwarped(
        "/Users/me/loop.wav", start=0.0, length=8.0, file_start=0.0, file_end=4.0, sample_length=176400
    )
    start(device, live_set([loop, track("Pad", 4)], SESSION_CLIP))
    (sep,) = osc_out(device.send("separate", 1))
    assert sep[3:] == ["/Users/me/loop.wav", "position", "0.000000"]


def test_a_warped_clip_at_the_sets_tempo_is_placed_by_its_warp_markers(device: Device) -> None:
    # the file's beat 0 is 0.1 s in and it runs at 120 bpm, as the set; the clip starts 4 beats in, 8 beats long
    song = live_set(
        [track("Drums", 2, [clip("/a/drums.wav", start=16.0, length=8.0, start_marker=4.0, end_marker=12.0,
                                  warp_markers=warp_markers((0.1, 0.0), (16.1, 32.0)))])],
        "live_set tracks 0 arrangement_clips 0",
    )  # fmt: skip
    start(device, song)
    (sep,) = osc_out(device.send("separate", 1))
    start_length_position = [option(sep, key) for key in ("start", "length", "position")]
    assert start_length_position == ["2.100000", "4.000000", "8.000000"]


def test_a_warped_clip_from_another_tempo_is_sent_whole_with_a_note(device: Device) -> None:
    # the file runs at 96 bpm (20 s for 32 beats), stretched to the set's 120: no part of it is what plays
    stretched = warp_markers((0.0, 0.0), (20.0, 32.0))
    song = live_set(
        [track("Drums", 2, [clip("/a/drums.wav", start=16.0, length=8.0, start_marker=4.0, warp_markers=stretched),
                            clip("/a/drums.wav", start=32.0, length=8.0, warp_markers=stretched)])],
        "live_set tracks 0 arrangement_clips 0",
    )  # fmt: skip
    start(device, song)
    answer = device.send("separate", 1)
    (sep,) = osc_out(answer)
    assert option(sep, "start") is None and option(sep, "length") is None
    note = ui_text(answer, "status")
    assert "96 bpm" in note and "whole file" in note and "Consolidate" in note
    # a clip from its file's start is sent as before: the whole file, and no note
    device.cmd("select", clip="live_set tracks 0 arrangement_clips 1")
    answer = device.send("separate", 1)
    assert option(osc_out(answer)[0], "start") is None and ui_text(answer, "status") == ""


def test_generate_from_the_loop_range_says_where_bar_1_is_in_each_file(device: Device) -> None:
    at_set_tempo = warp_markers((0.0, 0.0), (32.0, 64.0))  # 0.5 s a beat at 120 bpm
    stretched = warp_markers((0.0, 0.0), (40.0, 64.0))  # the file at 96 bpm
    song = live_set(
        [
            # unwarped, from 3 s into its file, starting at the range: bar 1 is 3 s in
            track("Keys", 2, [unwarped("/a/keys.wav", start=16.0, length=16.0, file_start=3.0, file_end=11.0)]),
            # warped at the set's tempo, 2 beats before the range: bar 1 is 1 s in
            track("Drums", 2, [clip("/a/drums.wav", start=14.0, length=18.0, warp_markers=at_set_tempo)]),
            # stretched, but from its file's start and at the range: bar 1 is the file's start, as before
            track("Bass", 2, [clip("/a/bass.wav", start=16.0, length=16.0, warp_markers=stretched)]),
            # stretched and from inside its file: left out
            track("Vox", 2, [clip("/a/vox.wav", start=16.0, length=8.0, start_marker=4.0, warp_markers=stretched,
                                  name="Vox inside")]),
            # starts after the range does: left out
            track("Late", 2, [unwarped("/a/late.wav", start=20.0, length=4.0, file_start=0.0, file_end=2.0,
                                       name="Late one")]),
        ],
        None,
        loop=(16.0, 16.0),
    )  # fmt: skip
    start(device, song)
    device.send("source", 1)
    answer = device.send("generate", 1)
    (gen,) = osc_out(answer)
    contexts = [gen[i + 1] for i, word in enumerate(gen) if word == "context"]
    starts = [gen[i + 1] for i, word in enumerate(gen) if word == "context_start"]
    assert contexts == ["/a/keys.wav", "/a/drums.wav", "/a/bass.wav"]
    assert starts == ["3.000000", "1.000000", "0.000000"]  # one per context, in the same order
    assert "Vox inside" in ui_text(answer, "status") and "Late one" in ui_text(answer, "status")
    assert option(gen, "position") == "8.000000"


# --- replies ------------------------------------------------------------------------------------------------


def test_every_reply_type_updates_the_device(device: Device) -> None:
    first = start(device, arrangement_set())
    (ping,) = osc_out(first)
    assert ping[0] == "/stembridge/ping"
    pong = device.reply("/stembridge/pong", ping[2], "0.1.0", "builtin", "demucs")
    assert ui_text(pong, "connection") == "Connected: stembridge 0.1.0 at 127.0.0.1:9977"
    assert ui(pong, "engines") == [["clear"], ["append", "auto"], ["append", "builtin"], ["append", "demucs"]]
    # connected and idle: it asks which engines' models exist, and how busy the daemon is
    models_request, queue_request = sorted(osc_out(pong))
    assert models_request[0] == "/stembridge/models"
    assert queue_request[0] == "/stembridge/queue" and queue_request[1] == reply_port(first)
    queue = device.reply("/stembridge/queue", queue_request[2], 1, 2, "", 0.4, "separate", 0)
    assert ui_text(queue, "queue") == "daemon busy: 1 job running, 2 waiting"
    models = device.reply(
        "/stembridge/models", models_request[2],
        "builtin", "builtin", "separate/generate/vary", 1, "",
        "htdemucs", "demucs", "separate", 0, "weights not found",
    )  # fmt: skip
    assert ui(models, "modelmenu") == [["clear"], ["append", "default"], ["append", "builtin"]]
    assert "htdemucs (demucs, separate): not installed" in ui_text(models, "models")

    (gen,) = osc_out(device.send("generate"))
    job = gen[2]
    assert ui_text(device.reply("/stembridge/accepted", job, 2), "queue") == "queued: 2 jobs ahead"
    assert ui_text(device.reply("/stembridge/accepted", job, 1), "queue") == "queued: 1 job ahead"
    progress = device.reply("/stembridge/progress", job, 0.25, "generate")
    assert ui(progress, "progress") == [["set", 0.25]] and ui_text(progress, "stage") == "generate"
    assert ui_text(progress, "queue") == "running"
    # progress never goes down on the bar, even if packets arrive out of order
    assert ui(device.reply("/stembridge/progress", job, 0.1, "generate"), "progress") == [["set", 0.25]]
    assert ui_text(device.reply("/stembridge/state", job, "running", 0.3), "queue") == "running"
    assert ui(device.reply("/stembridge/progress", "someone-else", 0.9, "x"), "progress") == []
    made = device.reply("/stembridge/made", job, "builtin", "builtin")
    assert made["outlets"] == []  # kept for the status line when the files come
    done = device.reply("/stembridge/done", job, "/r/drum_loop__pad__96bpm__4bars.wav")
    assert ui(done, "progress") == [["set", 1]] and ui_text(done, "stage") == "done"
    assert ui_text(done, "status") == "done: bass by builtin (builtin)."
    assert ui_text(done, "files") == "Folder: /r  Files: drum_loop__pad__96bpm__4bars.wav"
    assert [c["fn"] for c in done["calls"] if not c["fn"].startswith("get_")] == [
        "create_audio_track",
        "create_audio_clip",
    ]
    # a late duplicate changes nothing
    assert device.reply("/stembridge/done", job, "/r/other.wav")["calls"] == []
    # foreign messages are ignored
    assert device.reply("/other/thing", 1, 2)["outlets"] == []


def test_made_names_the_engine_and_model_and_its_notes_come_last(device: Device) -> None:
    start(device, arrangement_set())
    (sep,) = osc_out(device.send("separate", 1))
    note = "not isolated: the vocals bleed into other"
    device.reply("/stembridge/made", sep[2], "demucs", "htdemucs", note)
    paths = [f"/r/drum_loop__{s}.wav" for s in ("drums", "bass", "vocals", "other")]
    done = device.reply("/stembridge/done", sep[2], *paths)
    statuses = [m[1] for m in ui(done, "status") if m[0] == "set"]
    assert statuses == [f"done: 4 stems by demucs (htdemucs). Note: {note}"]
    assert f"stembridge: note: {note}\n" in done["posts"]
    # another job's `made` is not this one's
    device.send("variations", 2)
    (var,) = osc_out(device.send("vary", 1))
    device.reply("/stembridge/made", "someone-else", "musicgen", "musicgen-small")
    device.reply("/stembridge/made", var[2], "builtin", "builtin")
    done = device.reply("/stembridge/done", var[2], "/r/a__var__v1.wav", "/r/a__var__v2.wav")
    assert ui_text(done, "status") == "done: 2 variations by builtin (builtin)."
    device.send("stem", "keys")
    (gen,) = osc_out(device.send("generate", 1))
    device.reply("/stembridge/made", gen[2], "musicgen", "musicgen-small")
    done = device.reply("/stembridge/done", gen[2], "/r/a__keys__v1.wav", "/r/a__keys__v2.wav")
    assert ui_text(done, "status") == "done: 2 takes of keys by musicgen (musicgen-small)."


def test_the_queue_line_shows_how_busy_the_daemon_is_before_a_job(device: Device) -> None:
    first = start(device, arrangement_set())
    (ping,) = osc_out(first)

    def queue_request(answer: dict[str, Any], port: int) -> list[Any]:
        (request,) = [m for m in osc_out(answer) if m[0] == "/stembridge/queue"]
        assert request[1:] == [port, request[2]]  # no arguments but the envelope
        return request

    asked = queue_request(device.reply("/stembridge/pong", ping[2], "0.1.0", "builtin"), reply_port(first))
    idle = device.reply("/stembridge/queue", asked[2], 0, 0, "", 0.0, "", 0)
    assert ui_text(idle, "queue") == "daemon idle"
    # the next ping's pong asks again, so the line stays current while the device is idle
    device.cmd("time", now=1_006_000)
    (ping2,) = [m for m in osc_out(device.cmd("tick")) if m[0] == "/stembridge/ping"]
    asked2 = queue_request(device.reply("/stembridge/pong", ping2[2], "0.1.0", "builtin"), reply_port(first))
    late = device.reply("/stembridge/queue", asked[2], 0, 0, "", 0.0, "", 0)
    assert ui(late, "queue") == []  # the answer to an earlier ask changes nothing
    mine = device.reply("/stembridge/queue", asked2[2], 1, 2, "job-from-reaper", 0.37, "separate", 1)
    assert ui_text(mine, "queue") == "daemon busy: 1 job running (yours, 37%), 2 waiting (1 yours)"
    # Reconnect asks again from its new port; Max may drop the empty job symbol: one value fewer, read the same
    again = device.send("reconnect", 1)
    (ping3,) = osc_out(again)
    asked3 = queue_request(device.reply("/stembridge/pong", ping3[2], "0.1.0", "builtin"), reply_port(again))
    short = device.reply("/stembridge/queue", asked3[2], 1, 3, 0.5, "generate", 0)
    assert ui_text(short, "queue") == "daemon busy: 1 job running, 3 waiting"
    # while its own job runs, the line is the job's: no asking, and a stray answer changes nothing
    (gen,) = osc_out(device.send("generate", 1))
    device.reply("/stembridge/accepted", gen[2], 1)
    device.cmd("time", now=1_012_000)
    (ping4,) = [m for m in osc_out(device.cmd("tick")) if m[0] == "/stembridge/ping"]
    pong = device.reply("/stembridge/pong", ping4[2], "0.1.0", "builtin")
    assert [m for m in osc_out(pong) if m[0] == "/stembridge/queue"] == []
    assert ui(device.reply("/stembridge/queue", asked3[2], 0, 0, "", 0.0, "", 0), "queue") == []


@pytest.mark.parametrize(
    ("code", "message", "shown"),
    [
        (
            "unreadable_audio",
            "file not found: /a.wav; check the path",
            "Could not read the audio: file not found",
        ),
        ("busy", "queue full", "The daemon is busy; try again in a moment."),
        (
            "model_not_found",
            "no weights",
            "That engine or model cannot do this here: no weights (run `stembridge",
        ),
        ("cancelled", "cancelled by request", "Cancelled."),
        ("interrupted", "stopped", "The daemon stopped during the job; press the button again."),
        ("invalid_argument", "bars must be a whole number", "The daemon refused the request: bars must be"),
    ],
)
def test_errors_are_shown_in_plain_words(device: Device, code: str, message: str, shown: str) -> None:
    start(device, arrangement_set())
    (gen,) = osc_out(device.send("generate"))
    answer = device.reply("/stembridge/error", gen[2], code, message)
    assert ui_text(answer, "error").startswith(shown)
    assert ui_text(answer, "stage") == ("cancelled" if code == "cancelled" else "failed")
    assert not [c for c in answer["calls"] if c["fn"] == "create_audio_clip"]


def test_cancel_cancels_the_current_job(device: Device) -> None:
    start(device, arrangement_set())
    (gen,) = osc_out(device.send("generate"))
    device.reply("/stembridge/accepted", gen[2], 0)
    answer = device.send("cancel", 1)
    (cancel,) = osc_out(answer)
    assert cancel[0] == "/stembridge/cancel" and cancel[3] == gen[2] and cancel[2] != gen[2]
    assert ui_text(answer, "stage") == "cancelling"
    assert ui_text(device.reply("/stembridge/state", gen[2], "cancelled", 0.4), "stage") == "cancelled"
    assert (
        ui_text(device.reply("/stembridge/error", gen[2], "cancelled", "cancelled"), "error") == "Cancelled."
    )
    assert ui_text(device.send("cancel", 1), "status") == "Nothing to cancel."
    assert device.send("cancel", 0)["outlets"] == []  # the button's release does nothing


def test_lost_packets_resend_and_poll_status(device: Device) -> None:
    now = 1_000_000
    start(device, arrangement_set(), now=now)
    (gen,) = osc_out(device.send("generate"))
    device.cmd("time", now=now + 2500)
    resent = osc_out(device.cmd("tick"))
    assert gen in resent  # the same request, the same id: the daemon never runs it twice
    device.reply("/stembridge/accepted", gen[2], 0)
    device.cmd("time", now=now + 9000)
    polled = [m for m in osc_out(device.cmd("tick")) if m[0] == "/stembridge/status"]
    assert polled and polled[0][3] == gen[2]
    # the `done` was lost; the status answer carries the files and the device inserts them
    answer = device.reply("/stembridge/state", gen[2], "done", 1.0, "/r/x__pad__96bpm__4bars.wav")
    assert any(c["fn"] == "create_audio_clip" for c in answer["calls"])


def test_connection_state_follows_pings(device: Device) -> None:
    now = 1_000_000
    first = start(device, arrangement_set(), now=now)
    (ping,) = osc_out(first)
    device.cmd("time", now=now + 3000)
    assert ui_text(device.cmd("tick"), "connection").startswith("No answer from stembridge at 127.0.0.1:9977")
    device.cmd("time", now=now + 6000)
    (ping2,) = [m for m in osc_out(device.cmd("tick")) if m[0] == "/stembridge/ping"]
    assert ui_text(device.reply("/stembridge/pong", ping2[2], "0.1.0", "builtin"), "connection").startswith(
        "Connected"
    )
    # Reconnect listens on a new port (the old one may be taken) and pings from it
    answer = device.send("reconnect", 1)
    (ping3,) = osc_out(answer)
    assert ping3[1] == reply_port(answer)


def pings(answer: dict[str, Any]) -> list[list[Any]]:
    return [m for m in osc_out(answer) if m[0] == "/stembridge/ping"]


def test_live_thisdevice_banging_again_starts_nothing_twice(device: Device) -> None:
    """[live.thisdevice] bangs again whenever Live loads a preset into the device or the device is saved."""
    now = 1_000_000
    first = start(device, arrangement_set(), now=now)
    assert len(pings(first)) == 1
    (gen,) = osc_out(device.send("generate"))
    again = device.send("init")
    assert osc_out(again) == []  # no second ping
    assert [o for o in again["outlets"] if o[0] == 1] == []  # the same reply port: the job's replies land
    assert ui_text(again, "clip").startswith("drum loop.wav: 4 bars")  # the clip line is refreshed
    assert [t["running"] for t in device.cmd("tasks")["result"]] == [True]  # one clock
    device.cmd("time", now=now + 2500)
    assert osc_out(device.cmd("tick")) == [gen]  # one resend, with the job's own id
    device.cmd("time", now=now + 5000)
    assert len(pings(device.cmd("tick"))) == 1
    # one selection watcher: a new selection is shown once
    assert len(ui(device.cmd("select", clip="live_set tracks 1 arrangement_clips 0"), "clip")) == 1
    answer = device.reply("/stembridge/done", gen[2], "/r/drum_loop__bass__96bpm__4bars.wav")
    assert any(c["fn"] == "create_audio_clip" for c in answer["calls"])  # the job kept its id


def test_a_preset_that_recalls_the_same_port_sends_no_ping(device: Device) -> None:
    """Loading a preset sends every stored parameter again, the Port box's too: an unchanged port changes
    nothing; a new one is pinged at once."""
    start(device, arrangement_set())
    assert osc_out(device.send("daemonport", 9977)) == []
    moved = device.send("daemonport", 9978)
    assert [o for o in moved["outlets"] if o[0] == 0][:2] == [[0, "host", "127.0.0.1"], [0, "port", 9978]]
    assert len(pings(moved)) == 1


# --- insertion ----------------------------------------------------------------------------------------------


def live_calls(answer: dict[str, Any]) -> list[tuple[str, str, list[Any]]]:
    """The calls that change the Live set, in order."""
    return [(c["path"], c["fn"], c["args"]) for c in answer["calls"] if not c["fn"].startswith("get_")]


def test_separate_in_arrangement_makes_one_track_per_stem_at_the_clip(device: Device) -> None:
    start(device, arrangement_set())
    (sep,) = osc_out(device.send("separate"))
    stems = ["drums", "bass", "vocals", "other"]
    paths = [f"/r/drum_loop__{s}.wav" for s in stems]
    answer = device.reply("/stembridge/done", sep[2], *paths)
    expected = []
    for i, path in enumerate(paths):
        expected += [
            ("live_set", "create_audio_track", [2 + i]),  # right after the source track (1)
            (f"live_set tracks {2 + i}", "create_audio_clip", [path, 24.0]),
        ]
    assert live_calls(answer) == expected
    assert [s["value"] for s in answer["sets"] if s["prop"] == "name"] == stems
    tracks = device.cmd("live")["result"]["tracks"]
    assert [t["name"] for t in tracks] == ["Keys", "Drums", *stems]
    assert ui_text(answer, "status") == "done: 4 stems."  # no `made` reply came (lost, or an older daemon)


def test_separate_in_session_fills_the_clips_scene_on_new_tracks(device: Device) -> None:
    start(device, session_set())
    (sep,) = osc_out(device.send("separate"))
    answer = device.reply("/stembridge/done", sep[2], "/r/l__drums.wav", "/r/l__bass.wav")
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [1]),
        ("live_set tracks 1 clip_slots 1", "create_audio_clip", ["/r/l__drums.wav"]),
        ("live_set", "create_audio_track", [2]),
        ("live_set tracks 2 clip_slots 1", "create_audio_clip", ["/r/l__bass.wav"]),
    ]


def test_vary_in_session_uses_the_next_empty_slots_and_adds_scenes(device: Device) -> None:
    start(device, session_set(used=(1, 2), scenes=4))
    device.send("variations", 3)
    (var,) = osc_out(device.send("vary"))
    paths = [f"/r/loop_1__var__120bpm__4bars__v{k}.wav" for k in (1, 2, 3)]
    answer = device.reply("/stembridge/done", var[2], *paths)
    assert live_calls(answer) == [
        ("live_set tracks 0 clip_slots 3", "create_audio_clip", [paths[0]]),  # slot 2 is taken
        ("live_set", "create_scene", [-1]),
        ("live_set tracks 0 clip_slots 4", "create_audio_clip", [paths[1]]),
        ("live_set", "create_scene", [-1]),
        ("live_set tracks 0 clip_slots 5", "create_audio_clip", [paths[2]]),
    ]


def test_vary_in_arrangement_makes_new_tracks_at_the_clip(device: Device) -> None:
    start(device, arrangement_set())
    (var,) = osc_out(device.send("vary"))
    paths = ["/r/a__var__96bpm__4bars__v1.wav", "/r/a__var__96bpm__4bars__v2.wav"]
    answer = device.reply("/stembridge/done", var[2], *paths)
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [2]),
        ("live_set tracks 2", "create_audio_clip", [paths[0], 24.0]),
        ("live_set", "create_audio_track", [3]),
        ("live_set tracks 3", "create_audio_clip", [paths[1], 24.0]),
    ]
    assert [s["value"] for s in answer["sets"]] == ["drum loop v1", "drum loop v2"]


def test_generate_in_session_puts_variations_down_one_new_track(device: Device) -> None:
    start(device, session_set(scenes=2))
    device.send("stem", "keys")
    (gen,) = osc_out(device.send("generate"))
    paths = ["/r/x__keys__120bpm__4bars__v1.wav", "/r/x__keys__120bpm__4bars__v2.wav"]
    answer = device.reply("/stembridge/done", gen[2], *paths)
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [1]),
        ("live_set tracks 1 clip_slots 1", "create_audio_clip", [paths[0]]),
        ("live_set", "create_scene", [-1]),
        ("live_set tracks 1 clip_slots 2", "create_audio_clip", [paths[1]]),
    ]


def test_results_follow_the_source_clip_when_tracks_move_during_the_job(device: Device) -> None:
    start(device, session_set(used=(1, 2)))
    (var,) = osc_out(device.send("vary"))
    device.cmd("add_track", index=0, name="Added while rendering")
    answer = device.reply("/stembridge/done", var[2], "/r/loop_1__var__v1.wav")
    assert live_calls(answer) == [
        ("live_set tracks 1 clip_slots 3", "create_audio_clip", ["/r/loop_1__var__v1.wav"])
    ]


@pytest.mark.parametrize("version", [(11, 3, 25), (12, 0, 4)])
def test_before_live_12_0_5_the_device_lists_the_files_instead(
    device: Device, version: tuple[int, int, int]
) -> None:
    start(device, arrangement_set(version=version))
    (gen,) = osc_out(device.send("generate"))
    answer = device.reply("/stembridge/done", gen[2], "/Users/me/Music/Stembridge/x__bass.wav")
    assert live_calls(answer) == []
    assert ui_text(answer, "files") == "Folder: /Users/me/Music/Stembridge  Files: x__bass.wav"
    assert "12.0.5" in ui_text(answer, "status")
    assert device.send("showfolder", 1)["messnamed"] == [
        ["max", "launchbrowser", "file:///Users/me/Music/Stembridge"]
    ]


# --- MIDI: the Standard MIDI File reader and MIDI clips -----------------------------------------------------------


def write_mid(
    path: Path,
    notes: list[tuple[int, float, float, int]],
    *,
    bpm: float = 120.0,
    ppq: int = 480,
    signature: tuple[int, int] = (4, 4),
    file_format: int = 1,
    length_beats: float | None = None,
    zero_velocity_off: bool = False,
    tempo_changes: tuple[tuple[float, float], ...] = (),
) -> Path:
    """A Standard MIDI File written by mido: ``notes`` as (pitch, start beat, length in beats, velocity), tempo and
    time signature at tick 0 (and ``tempo_changes`` as (beat, bpm)), ending at ``length_beats``. Format 1 puts
    the tempo map in a track of its own; ``zero_velocity_off`` writes note-offs as note-ons of velocity 0 (and
    so, as mido writes them, with running status)."""
    mido = pytest.importorskip("mido", reason="mido writes the test's MIDI files (pip install mido)")
    end = round((length_beats if length_beats is not None else max(s + d for _, s, d, _ in notes)) * ppq)
    meta = [(0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))]
    meta.append((0, 0, mido.MetaMessage("time_signature", numerator=signature[0], denominator=signature[1])))
    meta += [
        (round(b * ppq), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(t))) for b, t in tempo_changes
    ]
    events = []
    for pitch, start, length, velocity in notes:
        on, off = round(start * ppq), round((start + length) * ppq)
        events.append((on, 1, mido.Message("note_on", note=pitch, velocity=velocity)))
        off_msg = (mido.Message("note_on", note=pitch, velocity=0) if zero_velocity_off
                   else mido.Message("note_off", note=pitch, velocity=64))  # fmt: skip
        events.append((off, 0, off_msg))  # at the same tick, offs before ons

    def track(items: list[tuple[int, int, Any]]) -> Any:
        t, now = mido.MidiTrack(), 0
        for tick, _, msg in sorted(items, key=lambda e: (e[0], e[1])):
            t.append(msg.copy(time=tick - now))
            now = tick
        t.append(mido.MetaMessage("end_of_track", time=end - now))
        return t

    mid = mido.MidiFile(type=file_format, ticks_per_beat=ppq)
    mid.tracks += [track(meta + events)] if file_format == 0 else [track(meta), track(events)]
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


def parse_smf(path: Path) -> dict[str, Any]:
    """m4l/stembridge_midi.js's parseSmf on a file's bytes, under node."""
    script = (
        "const m = require(process.argv[1]); const bytes = Array.from(require('fs').readFileSync(process.argv[2]));"
        "let out; try { out = m.parseSmf(bytes); } catch (err) { out = {error: err.message}; }"
        "process.stdout.write(JSON.stringify(out));"
    )
    assert NODE is not None
    done = subprocess.run([NODE, "-e", script, str(M4L / "stembridge_midi.js"), str(path)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


CHORD = [
    (60, 0.0, 1.0, 100),
    (64, 0.0, 1.0, 90),
    (67, 0.0, 1.0, 80),
    (62, 1.5, 0.5, 70),
    (36, 3.75, 0.25, 127),
]


@pytest.mark.parametrize(
    ("file_format", "ppq", "bpm", "signature", "zero_velocity_off"),
    [
        (0, 480, 120.0, (4, 4), False),
        (1, 96, 96.0, (6, 8), True),  # note-on velocity 0 as note-off, running status
        (1, 960, 137.5, (3, 4), False),
        (0, 24, 72.0, (7, 8), True),
    ],
)
def test_the_midi_reader_reads_what_mido_writes(
    tmp_path: Path,
    file_format: int,
    ppq: int,
    bpm: float,
    signature: tuple[int, int],
    zero_velocity_off: bool,
) -> None:
    if NODE is None:
        pytest.skip(NO_NODE)
    # the same pitch twice in a row: the first note-off ends the first note, not the second
    notes = [*CHORD, (62, 2.0, 1.0, 60), (62, 3.0, 0.5, 50)]
    path = write_mid(tmp_path / "part.mid", notes, bpm=bpm, ppq=ppq, signature=signature,
                     file_format=file_format, length_beats=4.5, zero_velocity_off=zero_velocity_off)  # fmt: skip
    data = path.read_bytes()
    if zero_velocity_off:  # the file really uses running status: fewer 0x90 status bytes than note events
        assert data.count(bytes([0x90])) < 2 * len(notes)
    smf = parse_smf(path)
    assert (smf["format"], smf["ppq"]) == (file_format, ppq)
    us = round(60e6 / bpm)  # what the file holds: microseconds per quarter note
    assert [(t["tick"], t["usPerQuarter"]) for t in smf["tempos"]] == [(0, us)]
    assert smf["tempos"][0]["bpm"] == pytest.approx(bpm, rel=1e-5)
    assert [(t["numerator"], t["denominator"]) for t in smf["timeSignatures"]] == [signature]
    assert (smf["lengthTicks"], smf["lengthBeats"]) == (round(4.5 * ppq), 4.5)
    expected = sorted(
        (p, round(s * ppq), round((s + d) * ppq), v) for p, s, d, v in notes
    )  # fmt: skip
    got = sorted((n["pitch"], n["startTick"], n["endTick"], n["velocity"]) for n in smf["notes"])
    assert got == expected
    by_tick = {(n["pitch"], n["startTick"]): n for n in smf["notes"]}
    for p, s, d, _ in notes:
        n = by_tick[(p, round(s * ppq))]
        assert (n["start"], n["duration"]) == (
            round(s * ppq) / ppq,
            (round((s + d) * ppq) - round(s * ppq)) / ppq,
        )
        assert n["startSeconds"] == pytest.approx(n["start"] * us / 1e6, abs=1e-9)
        assert n["durationSeconds"] == pytest.approx(n["duration"] * us / 1e6, abs=1e-9)


def test_the_midi_reader_follows_tempo_changes_and_refuses_what_is_not_midi(tmp_path: Path) -> None:
    if NODE is None:
        pytest.skip(NO_NODE)
    path = write_mid(tmp_path / "change.mid", [(60, 5.0, 1.0, 100)], bpm=120.0, tempo_changes=((4.0, 60.0),))
    (note,) = parse_smf(path)["notes"]
    assert note["start"] == 5.0
    assert note["startSeconds"] == pytest.approx(4 * 0.5 + 1 * 1.0)  # four beats at 120, one at 60
    assert note["durationSeconds"] == pytest.approx(1.0)
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(100, dtype=np.float32), 44100)
    assert parse_smf(wav) == {"error": "not a Standard MIDI File (no MThd header)"}
    cut = tmp_path / "cut.mid"
    cut.write_bytes(path.read_bytes()[:-6])
    assert "ends first" in parse_smf(cut)["error"]


def midi_notes(answer: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The notes of each add_new_notes call, in order."""
    return [c["args"][0]["notes"] for c in answer["calls"] if c["fn"] == "add_new_notes"]


def live_notes(notes: list[tuple[int, float, float, int]]) -> list[dict[str, Any]]:
    """Notes as Clip.add_new_notes takes them, sorted as the device sends them (by start, then pitch)."""
    return [
        {"pitch": p, "start_time": s, "duration": d, "velocity": v, "mute": 0}
        for p, s, d, v in sorted(notes, key=lambda n: (n[1], n[0]))
    ]


def test_the_midi_toggle_asks_for_midi_with_each_job(device: Device) -> None:
    start(device, arrangement_set())
    for action in ("separate", "generate", "vary"):
        (request,) = osc_out(device.send(action, 1))
        assert "midi" not in request[3:]
    device.send("midi", 1)
    for action in ("separate", "generate", "vary"):
        (request,) = osc_out(device.send(action, 1))
        assert option(request, "midi") == 1, request
    device.send("midi", 0)
    (request,) = osc_out(device.send("generate", 1))
    assert "midi" not in request[3:]


def test_generate_in_arrangement_puts_the_midi_in_a_midi_clip_beside_the_audio(
    device: Device, tmp_path: Path
) -> None:
    start(device, arrangement_set())  # 6/8 at 96 bpm, the clip at beat 24 on track 1
    device.send("midi", 1)
    device.send("bars", 2)
    (gen,) = osc_out(device.send("generate", 1))
    wav = str(tmp_path / "drum_loop__bass__96bpm__2bars.wav")
    mid = write_mid(tmp_path / "drum_loop__bass__96bpm__2bars.mid", CHORD, bpm=96.0, ppq=480,
                    signature=(6, 8), length_beats=6.0)  # fmt: skip
    answer = device.reply("/stembridge/done", gen[2], wav, str(mid))
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [2]),
        ("live_set tracks 2", "create_audio_clip", [wav, 24.0]),
        ("live_set", "create_midi_track", [3]),  # right after the audio's track
        ("live_set tracks 3", "create_midi_clip", [24.0, 6.0]),  # 2 bars of 6/8: 6 quarter notes
        ("live_set tracks 3 arrangement_clips 0", "add_new_notes", [{"notes": live_notes(CHORD)}]),
    ]
    tracks = device.cmd("live")["result"]["tracks"]
    assert [t["name"] for t in tracks] == ["Keys", "Drums", "bass", "bass MIDI"]
    (clip_made,) = tracks[3]["arrangement_clips"]
    assert (clip_made["name"], clip_made["start_time"], clip_made["length"]) == (mid.stem, 24.0, 6.0)
    assert ui_text(answer, "status") == "done: bass with MIDI."
    assert ui_text(answer, "files").endswith(f"{Path(wav).name}, {mid.name}")


def test_separate_in_session_puts_each_stems_midi_on_a_midi_track_after_it(
    device: Device, tmp_path: Path
) -> None:
    start(device, session_set())  # the clip: 16 beats in slot 1 of track 0, 4/4 at 120
    device.send("midi", 1)
    (sep,) = osc_out(device.send("separate", 1))
    wavs = [str(tmp_path / f"l__{s}.wav") for s in ("drums", "bass")]
    bass = [(40, 0.0, 2.0, 100), (43, 2.0, 2.0, 100), (45, 15.5, 1.0, 90)]  # the last one ends past the clip
    mids = [str(write_mid(tmp_path / "l__drums.mid", CHORD, length_beats=16.0)),
            str(write_mid(tmp_path / "l__bass-2.MID", bass, length_beats=16.5))]  # fmt: skip
    # out of order, and bass's .mid named -2 (its name was taken): paired by name all the same
    answer = device.reply("/stembridge/done", sep[2], *wavs, mids[1], mids[0])
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [1]),
        ("live_set tracks 1 clip_slots 1", "create_audio_clip", [wavs[0]]),
        ("live_set", "create_midi_track", [2]),
        ("live_set tracks 2 clip_slots 1", "create_clip", [16.0]),
        ("live_set tracks 2 clip_slots 1 clip", "add_new_notes", [{"notes": live_notes(CHORD)}]),
        ("live_set", "create_audio_track", [3]),
        ("live_set tracks 3 clip_slots 1", "create_audio_clip", [wavs[1]]),
        ("live_set", "create_midi_track", [4]),
        ("live_set tracks 4 clip_slots 1", "create_clip", [16.0]),
        ("live_set tracks 4 clip_slots 1 clip", "add_new_notes",
         [{"notes": live_notes([*bass[:2], (45, 15.5, 0.5, 90)])}]),  # ends with the clip
    ]  # fmt: skip
    names = [t["name"] for t in device.cmd("live")["result"]["tracks"]]
    assert names == ["Loop", "drums", "drums MIDI", "bass", "bass MIDI", "Pad"]
    assert ui_text(answer, "status") == "done: 2 stems with MIDI."


def test_a_midi_file_at_another_tempo_is_placed_where_its_notes_sound(device: Device, tmp_path: Path) -> None:
    """A Separate request carries no tempo, so the daemon may write the .mid at another tempo than the set's: its
    notes land where they sound in the audio (at 100 bpm, beat 1 of the file is 0.6 s: beat 1.2 at 120)."""
    start(device, session_set())
    device.send("midi", 1)
    (sep,) = osc_out(device.send("separate", 1))
    mid = write_mid(tmp_path / "l__bass.mid", [(40, 1.0, 0.5, 100)], bpm=100.0, length_beats=8.0)
    answer = device.reply("/stembridge/done", sep[2], str(tmp_path / "l__bass.wav"), str(mid))
    assert midi_notes(answer) == [
        [{"pitch": 40, "start_time": 1.2, "duration": 0.6, "velocity": 100, "mute": 0}]
    ]


def test_generate_in_session_puts_the_midi_takes_on_one_midi_track(device: Device, tmp_path: Path) -> None:
    start(device, session_set(scenes=2))
    device.send("midi", 1)
    device.send("stem", "keys")
    device.send("bars", 1)
    (gen,) = osc_out(device.send("generate", 1))
    wavs = [str(tmp_path / f"x__keys__120bpm__1bars__v{k}.wav") for k in (1, 2)]
    mids = [str(write_mid(Path(w).with_suffix(".mid"), [(60 + k, 0.0, 1.0, 100)], length_beats=4.0))
            for k, w in enumerate(wavs)]  # fmt: skip
    answer = device.reply("/stembridge/done", gen[2], *wavs, *mids)
    assert live_calls(answer) == [
        ("live_set", "create_audio_track", [1]),
        ("live_set", "create_midi_track", [2]),
        ("live_set tracks 1 clip_slots 1", "create_audio_clip", [wavs[0]]),
        ("live_set tracks 2 clip_slots 1", "create_clip", [4.0]),
        (
            "live_set tracks 2 clip_slots 1 clip",
            "add_new_notes",
            [{"notes": live_notes([(60, 0.0, 1.0, 100)])}],
        ),
        ("live_set", "create_scene", [-1]),
        ("live_set tracks 1 clip_slots 2", "create_audio_clip", [wavs[1]]),
        ("live_set tracks 2 clip_slots 2", "create_clip", [4.0]),
        (
            "live_set tracks 2 clip_slots 2 clip",
            "add_new_notes",
            [{"notes": live_notes([(61, 0.0, 1.0, 100)])}],
        ),
    ]


@pytest.mark.parametrize("taken", [False, True])
def test_vary_in_session_uses_the_midi_track_after_the_clips_track(
    device: Device, tmp_path: Path, taken: bool
) -> None:
    """The track after the clip's track is a MIDI track: the variations' MIDI goes there, in their scenes; when a
    slot it needs is taken, a new MIDI track comes between them instead."""
    live = session_set(used=(1, 2), scenes=4)
    synth_track = track("Synth", 4, has_audio_input=0, has_midi_input=1)
    if taken:
        synth_track["clip_slots"][3] = {"name": "mine", "is_audio_clip": 0, "is_midi_clip": 1}
    live["tracks"].insert(1, synth_track)
    start(device, live)
    device.send("midi", 1)
    device.send("variations", 2)
    device.send("bars", 2)
    (var,) = osc_out(device.send("vary", 1))
    wavs = [str(tmp_path / f"loop_1__var__120bpm__4bars__v{k}.wav") for k in (1, 2)]
    mids = [str(write_mid(Path(w).with_suffix(".mid"), [(50 + k, 1.0, 1.0, 80)], length_beats=16.0))
            for k, w in enumerate(wavs)]  # fmt: skip
    answer = device.reply("/stembridge/done", var[2], *wavs, *mids)
    calls = [c for c in live_calls(answer) if c[1] != "add_new_notes"]
    made = [("live_set", "create_midi_track", [1])] if taken else []
    assert calls == [
        *made,
        ("live_set tracks 0 clip_slots 3", "create_audio_clip", [wavs[0]]),  # slot 2 is taken
        ("live_set tracks 1 clip_slots 3", "create_clip", [16.0]),  # 4 bars (the clip's) of 4/4
        ("live_set", "create_scene", [-1]),
        ("live_set tracks 0 clip_slots 4", "create_audio_clip", [wavs[1]]),
        ("live_set tracks 1 clip_slots 4", "create_clip", [16.0]),
    ]
    names = [t["name"] for t in device.cmd("live")["result"]["tracks"]]
    assert names == (["Loop", "Loop 1 MIDI", "Synth", "Pad"] if taken else ["Loop", "Synth", "Pad"])


def test_an_unreadable_midi_file_leaves_its_clip_out_and_says_so(device: Device, tmp_path: Path) -> None:
    start(device, arrangement_set())
    device.send("midi", 1)
    (gen,) = osc_out(device.send("generate", 1))
    broken = tmp_path / "x__bass.mid"
    broken.write_bytes(b"RIFF....not midi")
    answer = device.reply("/stembridge/done", gen[2], str(tmp_path / "x__bass.wav"), str(broken),
                          str(tmp_path / "missing.mid"))  # fmt: skip
    assert [c[1] for c in live_calls(answer)] == ["create_audio_track", "create_audio_clip"]
    assert ui_text(answer, "error") == (
        "Could not read x__bass.mid (not a Standard MIDI File (no MThd header)); missing.mid (cannot open it): "
        "its clip was left out (the audio is in)."
    )


# --- the JavaScript is Max's ES5 ------------------------------------------------------------------------------


def code_only(source: str) -> str:
    """JavaScript without its comments and strings (scanned left to right, so `//` in a string stays)."""
    token = re.compile(r"""/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""", re.S)
    return token.sub(lambda m: '""' if m.group(0)[0] in "\"'" else " ", source)


@pytest.mark.parametrize("script", ["stembridge.js", "stembridge_core.js", "stembridge_midi.js"])
def test_the_device_scripts_are_es5_for_max_classic_js(script: str) -> None:
    code = code_only((M4L / script).read_text())
    for pattern, what in [
        (r"\blet\s", "let"),
        (r"\bconst\s", "const"),
        (r"=>", "an arrow function"),
        (r"`", "a template string"),
        (r"\bclass\s", "a class"),
        (r"\.\.\.", "spread"),
    ]:
        assert not re.search(pattern, code), f"m4l/{script} uses {what}, which Max's classic js lacks"


# --- the patch ------------------------------------------------------------------------------------------------

STANDARD_OBJECTS = {
    "plugin~",
    "plugout~",
    "live.thisdevice",
    "js",
    "udpsend",
    "udpreceive",
    "route",
    "prepend",
    # the jam device's (StembridgeJam.maxpat)
    "plugsync~", "dspstate~", "record~", "buffer~", "play~", "phasor~", "delta~", "edge~", "gate", "t",
    "change", "speedlim", "*~", "-~", "<~", ">=~",
}  # fmt: skip
STANDARD_CLASSES = {
    "newobj", "message", "comment", "live.text", "live.menu", "live.numbox", "live.dial", "textedit", "umenu",
    "multislider", "live.toggle",
}  # fmt: skip


# (inlets, outlets) of each Max object the patch uses, as Max creates them: the boxes Max saves for them in
# Ableton's maxdevtools (maxdiff/known_objects.py, and the patch of its CPU Reporter device). [udpsend] has
# one inlet once it has a host and port (known_objects lists it without, with none). [route a b c], [t a b],
# [js file], [record~ buf n] and [play~ buf n] depend on their arguments: see io_of.
MAX_IO = {
    "plugin~": (2, 2),
    "plugout~": (2, 2),
    "live.thisdevice": (1, 3),
    "udpsend": (1, 0),
    "udpreceive": (1, 1),
    "prepend": (1, 1),
    "message": (2, 1),
    "comment": (1, 0),
    "live.text": (1, 2),
    "live.menu": (1, 3),
    "live.numbox": (1, 2),
    "live.dial": (1, 2),
    "textedit": (1, 4),
    "umenu": (1, 3),
    "multislider": (1, 2),
    "live.toggle": (1, 1),
    # the jam device's, as known_objects.py lists them (the one-channel record~ and play~)
    "plugsync~": (1, 9),
    "dspstate~": (1, 4),
    "record~": (3, 1),
    "buffer~": (1, 2),
    "play~": (1, 2),
    "phasor~": (2, 1),
    "delta~": (1, 1),
    "edge~": (1, 2),
    "gate": (2, 1),
    "change": (1, 3),
    "speedlim": (2, 1),
    "*~": (2, 1),
    "-~": (2, 1),
    "<~": (2, 1),
    ">=~": (2, 1),
}
AMXD_AUDIO_EFFECT = int.from_bytes(b"aaaa", "big")  # project.amxdtype: the ampf device type as a number


def io_of(box: dict[str, Any]) -> tuple[int, int]:
    """The inlets and outlets Max gives this box."""
    if box["maxclass"] != "newobj":
        return MAX_IO[box["maxclass"]]
    name, *args = box["text"].split()
    if name == "route":
        return 2, max(1, len(args)) + 1  # an outlet per selector, and one for what matches none
    if name == "t" and args:
        return 1, len(args)  # an outlet per argument (known_objects lists [t] as [t b b])
    channels = int(args[1]) if len(args) > 1 and args[1].isdigit() else 1
    if name == "record~":
        return channels + 2, 1  # a signal inlet per channel, then the start and end points
    if name == "play~":
        return 1, channels + 1  # a signal outlet per channel, then the bang at the end
    if name == "js":
        counts = re.search(r"^inlets = (\d+);\noutlets = (\d+);", (M4L / args[0]).read_text(), re.M)
        assert counts, f"{args[0]} declares no inlets and outlets"
        return int(counts.group(1)), int(counts.group(2))
    return MAX_IO[name]


DEVICES = ["Stembridge", "StembridgeJam"]  # every device in m4l/: the jobs device and the live jam device


def load_patch(name: str) -> dict[str, Any]:
    data = json.loads((M4L / f"{name}.maxpat").read_text(encoding="utf-8"))
    patcher: dict[str, Any] = data["patcher"]
    return patcher


@pytest.fixture(scope="module")
def patch() -> dict[str, Any]:
    return load_patch("Stembridge")


@pytest.fixture(scope="module", params=DEVICES)
def any_patch(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each device's patch, for the checks every device passes."""
    return load_patch(request.param)


def boxes_of(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["box"]["id"]: b["box"] for b in patch["boxes"]}


def test_every_patchcord_joins_an_existing_outlet_and_inlet(any_patch: dict[str, Any]) -> None:
    patch = any_patch
    boxes = boxes_of(patch)
    assert len(boxes) == len(patch["boxes"]), "two boxes share an id"
    assert patch["lines"]
    for line in patch["lines"]:
        (src, outlet), (dst, inlet) = line["patchline"]["source"], line["patchline"]["destination"]
        assert src in boxes and dst in boxes, f"a patchcord joins a missing box: {line}"
        assert 0 <= outlet < boxes[src]["numoutlets"], f"{boxes[src].get('text')} has no outlet {outlet}"
        assert 0 <= inlet < boxes[dst]["numinlets"], f"{boxes[dst].get('text')} has no inlet {inlet}"
        assert len(boxes[src].get("outlettype", [])) == boxes[src]["numoutlets"]


def test_every_object_has_the_inlets_and_outlets_max_gives_it(any_patch: dict[str, Any]) -> None:
    patch = any_patch
    for box in patch["boxes"]:
        b = box["box"]
        what = f"[{b.get('text') or b['maxclass']}] ({b['id']})"
        expected = io_of(b)
        assert (b["numinlets"], b["numoutlets"]) == expected, f"{what}: Max gives it {expected} (in, out)"


def test_the_patch_carries_the_project_and_parameters_blocks_of_a_device(any_patch: dict[str, Any]) -> None:
    """Max saves a device with a `project` block (its type in `amxdtype`) and a `parameters` block that lists
    every parameter by box id with its long and short name."""
    patch = any_patch
    project = patch["project"]
    assert project["amxdtype"] == AMXD_AUDIO_EFFECT
    assert project["contents"] == {"patchers": {}}  # the scripts are beside the device (dependency_cache)
    parameters = patch["parameters"]
    listed = {k: v for k, v in parameters.items() if k.startswith("obj-")}
    boxes = boxes_of(patch)
    expected: dict[str, list[Any]] = {}
    for i, b in boxes.items():
        if b.get("parameter_enable") == 1:
            valueof = b["saved_attribute_attributes"]["valueof"]
            expected[i] = [valueof["parameter_longname"], valueof["parameter_shortname"], 0]
    assert listed == expected
    assert parameters["inherited_shortname"] == 1


def test_every_object_is_standard_max_or_in_the_repo(any_patch: dict[str, Any]) -> None:
    patch = any_patch
    for box in patch["boxes"]:
        b = box["box"]
        assert b["maxclass"] in STANDARD_CLASSES, f"{b['maxclass']} is not a standard Max object"
        if b["maxclass"] != "newobj":
            continue
        name, *args = b["text"].split()
        in_repo = (M4L / name).exists() or (M4L / f"{name}.maxpat").exists()
        assert name in STANDARD_OBJECTS or in_repo, f"[{b['text']}] is neither a standard object nor in m4l/"
        if name == "js":
            assert (M4L / args[0]).is_file(), f"[{b['text']}] names a script that is not in m4l/"
            for module in re.findall(r'require\("([\w.]+)"\)', (M4L / args[0]).read_text()):
                assert (M4L / f"{module}.js").is_file(), f"{args[0]} requires {module}, which is not in m4l/"
    for dep in patch["dependency_cache"]:
        assert (M4L / dep["name"]).is_file()


def test_the_patch_and_the_script_agree(patch: dict[str, Any], device: Device) -> None:
    boxes = boxes_of(patch)
    source = (M4L / "stembridge.js").read_text()
    (js,) = [b for b in boxes.values() if b.get("text", "").startswith("js ")]
    assert f"outlets = {js['numoutlets']};" in source and f"inlets = {js['numinlets']};" in source
    (route,) = [b for b in boxes.values() if b.get("text", "").startswith("route ")]
    selectors = route["text"].split()[1:]
    assert set(re.findall(r'\bui\("(\w+)"', source)) == set(selectors), "the script and [route] disagree"
    device.cmd("load", live=live_set([], None))
    words = [b["text"].split()[1] for b in boxes.values() if b.get("text", "").startswith("prepend ")]
    assert "separate" in words and "generate" in words and "vary" in words and "cancel" in words
    for word in words:
        assert device.eval(f"typeof {word}") == "function", (
            f"[prepend {word}] reaches no function in the script"
        )
        assert device.eval(f"{word}.local") is None, f"{word} is local: Max would refuse the message"
    assert device.eval("finish.local") == 1  # what is not a message cannot be called from the patch
    for b in boxes.values():
        if b["maxclass"] == "message":
            assert device.eval(f"typeof {b['text']}") == "function"
    # the wiring: [udpreceive] into the script, the script into [udpsend], [udpreceive] and [route]
    wires = {(ln["patchline"]["source"][0], ln["patchline"]["source"][1], ln["patchline"]["destination"][0])
             for ln in patch["lines"]}  # fmt: skip
    by_name = {b["text"].split()[0]: i for i, b in boxes.items() if b["maxclass"] == "newobj"}
    assert (by_name["js"], 0, by_name["udpsend"]) in wires
    assert (by_name["js"], 1, by_name["udpreceive"]) in wires
    assert (by_name["js"], 2, by_name["route"]) in wires
    assert (by_name["udpreceive"], 0, by_name["js"]) in wires
    assert (by_name["plugin~"], 0, by_name["plugout~"]) in wires  # audio passes through the effect


def test_parameters_the_patch_moves_are_hidden_from_automation_and_undo(patch: dict[str, Any]) -> None:
    boxes = boxes_of(patch)
    (route,) = [i for i, b in boxes.items() if b.get("text", "").startswith("route ")]
    moved = {
        ln["patchline"]["destination"][0] for ln in patch["lines"] if ln["patchline"]["source"][0] == route
    }
    params = {i: b for i, b in boxes.items() if b.get("parameter_enable") == 1}
    assert params
    for i, b in params.items():
        valueof = b["saved_attribute_attributes"]["valueof"]
        invisible = valueof.get("parameter_invisible", 0)
        name = valueof["parameter_longname"]
        assert invisible in (1, 2), f"{name} is automatable: nothing in this device should be"
        if i in moved or b["maxclass"] == "live.text":
            assert invisible == 2, f"{name} is moved by the patch or is a button: it must be hidden (no undo)"
    assert any(b["maxclass"] == "live.numbox" and i in moved for i, b in params.items()), "Bars is not moved"


def test_the_midi_toggle_is_a_parameter_saved_with_the_set_that_reaches_the_script(
    patch: dict[str, Any],
) -> None:
    boxes = boxes_of(patch)
    (toggle,) = [i for i, b in boxes.items() if b["maxclass"] == "live.toggle"]
    valueof = boxes[toggle]["saved_attribute_attributes"]["valueof"]
    assert (valueof["parameter_longname"], valueof["parameter_enum"]) == ("MIDI", ["off", "on"])
    assert valueof["parameter_invisible"] == 1  # Stored Only: saved with the set, not automatable
    assert patch["parameters"][toggle] == ["MIDI", "MIDI", 0]
    wires = {(ln["patchline"]["source"][0], ln["patchline"]["destination"][0]) for ln in patch["lines"]}
    (prepend,) = [i for i, b in boxes.items() if b.get("text") == "prepend midi"]
    (js,) = [i for i, b in boxes.items() if b.get("text", "").startswith("js ")]
    assert {(toggle, prepend), (prepend, js)} <= wires
    assert {"name": "stembridge_midi.js", "patcherrelativepath": ".", "type": "TEXT", "implicit": 1} in patch[
        "dependency_cache"
    ]


def test_the_device_view_fits_live_and_nothing_overlaps(patch: dict[str, Any]) -> None:
    shown = [b["box"] for b in patch["boxes"] if b["box"].get("presentation")]
    assert patch["openinpresentation"] == 1 and len(shown) > 20
    for b in shown:
        x, y, w, h = b["presentation_rect"]
        assert x >= 0 and y >= 0 and y + h <= 169, f"{b['id']} is outside the 169-pixel device view"
    for i, a in enumerate(shown):
        ax, ay, aw, ah = a["presentation_rect"]
        for b in shown[i + 1 :]:
            bx, by, bw, bh = b["presentation_rect"]
            overlap = ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
            assert not overlap, f"{a['id']} and {b['id']} overlap in the device view"


# --- the build --------------------------------------------------------------------------------------------------


def load_build() -> Any:
    spec = importlib.util.spec_from_file_location("m4l_build", M4L / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", DEVICES)
def test_the_committed_amxd_is_a_fresh_build(name: str) -> None:
    build = load_build()
    # the build knows every device, each an audio effect
    assert build.DEVICES == dict.fromkeys(DEVICES, "audio")
    source = (M4L / f"{name}.maxpat").read_bytes()
    fresh = build.build_amxd(source)
    assert (M4L / f"{name}.amxd").read_bytes() == fresh, "run: python m4l/build.py"
    assert build.build_amxd(source) == fresh  # deterministic
    chunks = build.read_chunks(fresh)
    assert [tag for tag, _ in chunks] == ["ampf", "meta", "ptch"]
    assert chunks[0][1] == b"aaaa"  # an audio effect
    ptch = chunks[2][1]
    assert ptch.endswith(b"\x00") and ptch.count(b"\x00") == 1
    assert json.loads(ptch[:-1]) == json.loads(source)
    result = subprocess.run(
        [sys.executable, str(M4L / "build.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_build_check_names_each_stale_device(tmp_path: Path) -> None:
    """--check looks at every device: a copy of m4l/ with one stale .amxd fails, naming that one only."""
    copy_dir = tmp_path / "m4l"
    shutil.copytree(M4L, copy_dir)
    (copy_dir / "StembridgeJam.amxd").write_bytes(b"stale")
    result = subprocess.run(
        [sys.executable, str(copy_dir / "build.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "StembridgeJam.amxd is out of date with StembridgeJam.maxpat; run: python m4l/build.py"
    )


def test_the_build_check_fails_on_a_stale_device(tmp_path: Path) -> None:
    build = load_build()
    patch = json.loads((M4L / "Stembridge.maxpat").read_text())
    changed = copy.deepcopy(patch)
    changed["patcher"]["description"] = "changed"
    assert build.build_amxd(json.dumps(changed).encode()) != build.build_amxd(json.dumps(patch).encode())
    with pytest.raises(ValueError, match="ends first"):
        build.read_chunks(build.build_amxd(json.dumps(patch).encode())[:-10])
    with pytest.raises(ValueError, match="no top-level 'patcher'"):
        build.build_amxd(b"{}")


def test_the_build_refuses_a_patch_whose_project_block_says_another_device_type() -> None:
    build = load_build()
    patch = json.loads((M4L / "Stembridge.maxpat").read_text())
    midi = copy.deepcopy(patch)
    midi["patcher"]["project"]["amxdtype"] = int.from_bytes(b"mmmm", "big")
    refused = r"project\.amxdtype is 1835887981 \(mmmm\), not 1633771873 \(aaaa\)"
    with pytest.raises(ValueError, match=refused):
        build.build_amxd(json.dumps(midi).encode())
    assert build.build_amxd(json.dumps(midi).encode(), device="midi")[8:12] == b"mmmm"
    del midi["patcher"]["project"]
    with pytest.raises(ValueError, match="no project block"):
        build.build_amxd(json.dumps(midi).encode())


def test_amxd_is_marked_binary_for_git() -> None:
    assert "*.amxd binary" in (ROOT / ".gitattributes").read_text().splitlines()


# --- end to end: the device's own messages through a real daemon -----------------------------------------------


class MaxUdp:
    """What [udpsend] and [udpreceive] do around the device: the OSC messages its script outlets go to the
    daemon as they are (python-osc types them as Max does: int, 32-bit float, string); what arrives on the port
    the script gave [udpreceive] goes back into the script as a message named by its address."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.target = ("127.0.0.1", 9977)
        self.sock: socket.socket | None = None
        self.sent: list[list[Any]] = []
        self.answers: list[dict[str, Any]] = []

    def take(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Carry out what the script sent to [udpsend] and [udpreceive]."""
        self.answers.append(answer)
        for outlet, *atoms in answer["outlets"]:
            if outlet == 1 and atoms[0] == "port":
                self.listen(int(atoms[1]))
            elif outlet == 0 and atoms[0] == "host":
                self.target = (str(atoms[1]), self.target[1])
            elif outlet == 0 and atoms[0] == "port":
                self.target = (self.target[0], int(atoms[1]))
            elif outlet == 0:
                self.sent.append(atoms)
                client = SimpleUDPClient(*self.target)
                client.send_message(atoms[0], atoms[1:])
                client._sock.close()
        return answer

    def listen(self, port: int) -> None:
        if self.sock:
            self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", port))
        except OSError:  # taken: as in Max, the device hears nothing until Reconnect picks another port
            self.sock.close()
            self.sock = None

    def pump(self, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Feed replies into the script until one of its answers satisfies ``until``."""
        assert self.sock is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            msg = OscMessage(data)
            answer = self.take(self.device.reply(msg.address, *msg.params))
            if until(answer):
                return answer
        raise AssertionError(f"the device never got there; it sent {self.sent}, last {self.answers[-3:]}")

    def close(self) -> None:
        if self.sock:
            self.sock.close()


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonThread, Settings]]:
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    with DaemonThread(settings, discovery=False) as d:
        yield d, settings


@pytest.fixture()
def max_udp(device: Device) -> Iterator[MaxUdp]:
    udp = MaxUdp(device)
    yield udp
    udp.close()


def connect(udp: MaxUdp, live: dict[str, Any], port: int) -> None:
    """Load the device, point it at the daemon and wait for the pong."""
    udp.device.cmd("load", live=live, now=int(time.time() * 1000))
    udp.take(udp.device.send("init"))
    for _ in range(5):
        if udp.sock is not None:
            break
        udp.take(udp.device.send("reconnect", 1))
    udp.take(udp.device.send("daemonport", port))
    udp.pump(lambda a: any(o[1] == "connection" and str(o[3]).startswith("Connected") for o in a["outlets"]))


def inserted(answer: dict[str, Any]) -> bool:
    """The device inserted files, or showed an error."""
    failed = any(m[0] == "set" and m[1] for m in ui(answer, "error"))
    return failed or any(c["fn"] == "create_audio_clip" for c in answer["calls"])


def test_end_to_end_generate_lands_in_a_new_track_at_the_clip(
    daemon: tuple[DaemonThread, Settings], max_udp: MaxUdp, tmp_path: Path
) -> None:
    d, settings = daemon
    drums, _ = synth.drum_loop(120.0, 3)
    loop = tmp_path / "in" / "Drum Loop.wav"
    loop.parent.mkdir()
    sf.write(loop, drums, synth.SR, subtype="FLOAT")
    # two bars (8 beats) of 4/4 at 120 bpm, at bar 3 (beat 8 = 4 s) on track 0, unwarped, playing the file from
    # its second bar (2 s in): the daemon is told where bar 1 is in the file
    song = live_set(
        [track("Drums", 2, [unwarped(str(loop), start=8.0, length=8.0, file_start=2.0, file_end=6.0)])],
        "live_set tracks 0 arrangement_clips 0",
    )
    connect(max_udp, song, d.port)
    max_udp.take(max_udp.device.send("engine", "builtin"))
    max_udp.take(max_udp.device.send("seed", 7))
    max_udp.take(max_udp.device.send("generate", 1))
    (request,) = [m for m in max_udp.sent if m[0] == "/stembridge/generate"]
    answer = max_udp.pump(inserted)
    assert not any(m[1] for m in ui(answer, "error")), ui_text(answer, "error")

    seen = [a for ans in max_udp.answers for a in ui(ans, "queue") + ui(ans, "progress")]
    assert ["set", "running"] in seen or ["set", "queued: 0 jobs ahead"] in seen
    calls = live_calls(answer)
    assert calls[0] == ("live_set", "create_audio_track", [1])
    (path_in_live, position) = calls[1][2]
    assert calls[1][:2] == ("live_set tracks 1", "create_audio_clip") and position == 8.0
    out = Path(path_in_live)
    assert out.parent == settings.out_dir.resolve() and out.name.startswith("Drum_Loop__bass__120bpm__2bars")
    assert request[request.index("position") + 1] == "4.000000"
    assert option(request, "context_start") == "2.000000"
    info = sf.info(out)
    assert info.samplerate == synth.SR and info.frames == 2 * 4 * synth.SR // 2  # two bars of 4/4 at 120 bpm
    bext = read_bext(out)
    assert bext is not None and bext["time_reference"] == 4 * synth.SR  # bar 3 of the set, in samples
    audio, _ = sf.read(out, dtype="float32", always_2d=True)
    assert float(np.max(np.abs(audio))) > 0.01  # a bass line, not silence
    tracks = max_udp.device.cmd("live")["result"]["tracks"]
    assert [t["name"] for t in tracks] == ["Drums", "bass"]
    assert tracks[1]["arrangement_clips"][0]["file_path"] == str(out)


def test_end_to_end_separate_in_session_view(
    daemon: tuple[DaemonThread, Settings], max_udp: MaxUdp, tmp_path: Path
) -> None:
    d, settings = daemon
    mix = synth.mix(synth.song_stems(120.0, 2))
    song_file = tmp_path / "song.wav"
    sf.write(song_file, mix.T, synth.SR, subtype="FLOAT")
    t = track("Song", 3)
    t["clip_slots"][2] = clip(str(song_file), length=16.0)
    connect(max_udp, live_set([t], "live_set tracks 0 clip_slots 2 clip", scenes=3), d.port)
    max_udp.take(max_udp.device.send("separate", 1))
    answer = max_udp.pump(inserted)
    calls = live_calls(answer)
    stems = ["drums", "bass", "vocals", "other"]
    assert [c[:2] for c in calls] == [
        x for i in range(4) for x in (("live_set", "create_audio_track"), (f"live_set tracks {1 + i} clip_slots 2", "create_audio_clip"))
    ]  # fmt: skip
    paths = [Path(c[2][0]) for c in calls if c[1] == "create_audio_clip"]
    assert [p.name for p in paths] == [f"song__{s}.wav" for s in stems]
    total = sum(sf.read(p, dtype="float32", always_2d=True)[0] for p in paths)
    assert np.max(np.abs(total - mix.T)) < 1e-3  # the stems in the new tracks add back up to the clip
    names = [s["value"] for ans in max_udp.answers for s in ans["sets"] if s["prop"] == "name"]
    assert names == stems


def test_end_to_end_separate_of_the_part_of_its_file_a_clip_plays(
    daemon: tuple[DaemonThread, Settings], max_udp: MaxUdp, tmp_path: Path
) -> None:
    d, settings = daemon
    mix = synth.mix(synth.song_stems(120.0, 2))  # [C, T]: 4 s
    song_file = tmp_path / "song.wav"
    sf.write(song_file, mix.T, synth.SR, subtype="FLOAT")
    # unwarped at beat 8 (4 s), one bar (4 beats = 2 s) long, playing the file from 1 s to 3 s
    song = live_set(
        [track("Song", 2, [unwarped(str(song_file), start=8.0, length=4.0, file_start=1.0, file_end=3.0)])],
        "live_set tracks 0 arrangement_clips 0",
    )
    connect(max_udp, song, d.port)
    idle = max_udp.pump(lambda a: bool(ui(a, "queue")))  # the daemon's answer to the device's `queue`
    assert ui_text(idle, "queue") == "daemon idle"
    max_udp.take(max_udp.device.send("separate", 1))
    (request,) = [m for m in max_udp.sent if m[0] == "/stembridge/separate"]
    assert (option(request, "start"), option(request, "length")) == ("1.000000", "2.000000")
    answer = max_udp.pump(inserted)
    assert not any(m[1] for m in ui(answer, "error")), ui_text(answer, "error")
    calls = live_calls(answer)
    clips = [c for c in calls if c[1] == "create_audio_clip"]
    assert [c[0] for c in clips] == [f"live_set tracks {i}" for i in (1, 2, 3, 4)]
    assert all(c[2][1] == 8.0 for c in clips)  # at the clip's place
    paths = [Path(c[2][0]) for c in clips]
    first, count = 1 * synth.SR, 2 * synth.SR
    for p in paths:
        assert sf.info(p).frames == count, p  # exactly the part the clip plays
        bext = read_bext(p)
        assert bext is not None and bext["time_reference"] == 4 * synth.SR  # beat 8 of the set
    total = sum(sf.read(p, dtype="float32", always_2d=True)[0] for p in paths)
    # and it is that part of the song, not its start
    assert np.max(np.abs(total - mix.T[first : first + count])) < 1e-3
    assert np.max(np.abs(total - mix.T[:count])) > 0.05
    assert re.fullmatch(r"done: 4 stems by \w+ \(.+\)\.( Note: .*)?", ui_text(answer, "status"))
