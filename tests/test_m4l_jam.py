"""The StembridgeJam Max for Live device (m4l/StembridgeJam.maxpat): its scheduling logic under a simulated Live
transport, its Max glue with stub Max objects and a stub Live set, and its patch.

The scheduling logic (m4l/stembridge_jam_core.js) runs in tests/m4l/jam_harness.js, which moves a simulated
transport (beats, tempo, play/stop) and ticks the logic every few milliseconds; each action it asks for comes back
with the song position at which it asked. The glue (m4l/stembridge_jam.js) runs in tests/m4l/harness.js, as the
Stembridge device's script does. The daemon's replies are stubbed: the contract is docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.audio.timing import Grid, TimeSignature
from tests.test_m4l_device import Device, code_only, live_set, track

ROOT = Path(__file__).resolve().parent.parent
M4L = ROOT / "m4l"
JAM_HARNESS = ROOT / "tests" / "m4l" / "jam_harness.js"
NODE = shutil.which("node") or shutil.which("nodejs")
STEP_BEATS = 10 / 60000 * 120  # how far the playhead moves between two ticks at 120 bpm (10 ms)


class Transport:
    """The jam's scheduling logic in node, behind a simulated transport."""

    def __init__(self) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(JAM_HARNESS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def cmd(self, op: str, **fields: Any) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["ok"], answer.get("error")
        self.result = answer["result"]
        actions: list[dict[str, Any]] = answer["actions"]
        return actions

    def until(self, beats: float, bpm: float = 120.0) -> list[dict[str, Any]]:
        """Run the transport until the playhead is at ``beats`` (at ``bpm``), ticking every 10 ms."""
        ms = (beats - self.beats()) * 60000 / bpm
        return self.cmd("advance", ms=ms, step=10)

    def beats(self) -> float:
        self.cmd("eval", expr="transport.beats")
        return float(self.result)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture()
def transport() -> Iterator[Transport]:
    if NODE is None:
        pytest.skip("node is not installed (Debian package nodejs): the device's JavaScript runs under it")
    t = Transport()
    yield t
    t.close()


def of(actions: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for a in actions if a["type"] == kind]


def jam(t: Transport, **options: Any) -> list[dict[str, Any]]:
    """A new jam, armed, its session started, the transport playing from bar 1."""
    t.cmd("new", options=options, bpm=options.pop("bpm", 120))
    t.cmd("arm")
    t.cmd("started")
    return t.cmd("play")


def cycle_samples(bars: int, bpm: float, lead: float = 0.0, sr: int = 44100) -> int:
    grid = Grid(bpm, TimeSignature(4, 4), sr)
    return grid.samples_for_bars(bars) - round(lead * 60 / bpm * sr)


# --- the scheduling logic -----------------------------------------------------------------------------------


def test_the_jam_starts_at_the_next_cycle_line_and_records_from_there(transport: Transport) -> None:
    started = jam(transport, bars=4)
    (start,) = of(started, "start")
    assert (start["grid"], start["lineBeats"], start["cycleTicks"]) == (
        1,
        16,
        16 * 480,
    )  # bar 5; 4 bars of 4/4
    assert of(started, "record") == [{"type": "record", "open": True, "beats": 0, "ms": 0}]
    (capture,) = of(started, "capture")
    assert capture["samples"] == cycle_samples(4, 120, lead=1.0) == 330750  # up to a beat before the line
    assert [a["slot"] for a in of(started, "clear")] == [0, 1]  # nothing plays before the first part
    assert "bar 5" in of(started, "status")[-1]["text"]
    assert of(transport.until(30.9), "cycle") == []  # the count-in cycle is not sent


def test_each_cycle_is_sent_lead_quarter_notes_before_its_line(transport: Transport) -> None:
    jam(transport, bars=2, lead=1.5)
    sent = of(transport.until(8 + 8 * 3), "cycle")  # the jam starts at beat 8 (2 bars); three cycles
    assert [c["index"] for c in sent] == [0, 1, 2]
    for c in sent:
        line = 8 + 8 * (c["index"] + 1)
        assert line - 1.5 - 1e-9 <= c["beats"] < line - 1.5 + STEP_BEATS + 1e-9, c  # the first tick at lead
        assert (c["bpm"], c["samples"]) == (120, cycle_samples(2, 120, lead=1.5))


def test_a_tempo_change_is_sent_with_the_next_cycle_and_sets_what_is_recorded(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(20)  # inside cycle 0 (beats 16 to 32)
    transport.cmd("tempo", bpm=90)
    changed = transport.cmd("advance", ms=10, step=10)
    (capture,) = of(changed, "capture")
    assert capture["samples"] == cycle_samples(4, 90, lead=1.0)
    (cycle,) = of(transport.until(31.5, bpm=90), "cycle")
    assert cycle["index"] == 0 and cycle["bpm"] == 90 and cycle["samples"] == cycle_samples(4, 90, lead=1.0)
    assert 31 - 1e-9 <= cycle["beats"] < 31 + 10 / 60000 * 90 + 1e-9  # still one quarter note before the line
    loaded = transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    (load,) = of(loaded, "load")
    # the part is a cycle at the tempo its cycle was sent at: the player stretches it to the cycle
    assert load["partMs"] == pytest.approx(cycle_samples(4, 90) / 44100 * 1000)


def test_a_part_on_time_is_loaded_and_plays_from_its_line_with_its_margin(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(31.2)
    shown = transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    (margin,) = of(shown, "show")
    at = transport.beats()
    assert margin["marginMs"] == pytest.approx((32 - at) * 500) and not margin["late"]
    assert margin["text"] == f"cycle 1: part ready {round((32 - at) * 500)} ms early"
    assert of(shown, "load") == [
        {"type": "load", "slot": 0, "path": "/r/part-1.wav", "playIndex": 1,
         "partMs": pytest.approx(8000.0), "beats": at, "ms": pytest.approx(at * 500)},
    ]  # fmt: skip
    after = transport.until(32.5)
    # at the line the other player (which played nothing) gets what plays if part 2 never comes: part 1 again
    (repeat,) = of(after, "load")
    assert (repeat["slot"], repeat["path"], repeat["playIndex"]) == (1, "/r/part-1.wav", 1)
    transport.cmd("eval", expr="jam.history")
    assert transport.result[-1] == {"playIndex": 1, "plays": 1, "late": False}


def test_a_part_after_its_line_is_not_played_and_the_previous_part_repeats(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(31.5)
    transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    transport.until(48.05)  # line 2 passed with no part 2
    late = transport.cmd("part", playIndex=2, path="/r/part-2.wav")
    assert of(late, "load") == []
    (shown,) = of(late, "show")
    assert shown["late"] and shown["marginMs"] < 0
    assert shown["text"] == f"cycle 2: part {round(-shown['marginMs'])} ms late: not played"
    transport.cmd("eval", expr="jam.history")
    assert transport.result[-1] == {"playIndex": 2, "plays": 1, "late": True}  # part 1 plays again


def test_a_late_part_rests_when_on_late_is_rest(transport: Transport) -> None:
    jam(transport, bars=4, onLate="rest")
    transport.until(31.5)
    transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    at_line_1 = transport.until(32.5)
    assert of(at_line_1, "load") == [] and [a["slot"] for a in of(at_line_1, "clear")] == [1]
    at_line_2 = transport.until(48.5)
    (shown,) = of(at_line_2, "show")
    assert shown["text"] == "cycle 2: no part (reply lost?): rest"
    transport.cmd("eval", expr="jam.history")
    assert transport.result[-1] == {"playIndex": 2, "plays": None, "late": True}


def test_a_part_too_close_to_its_line_to_load_counts_as_late(transport: Transport) -> None:
    jam(transport, bars=4, guardMs=30)
    transport.until(32 - 0.04)  # 20 ms before the line
    (shown,) = of(transport.cmd("part", playIndex=1, path="/r/part-1.wav"), "show")
    assert (
        shown["late"]
        and shown["text"].startswith("cycle 1: part only ")
        and shown["text"].endswith(" ms early: not played")
    )


def test_the_daemons_late_reply_and_a_dropped_reply_are_shown_at_the_line(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(31.5)
    transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    transport.until(47.5)
    (said,) = of(transport.cmd("late", playIndex=2, ms=120), "show")
    assert said["marginMs"] == -120 and said["text"] == "cycle 2: the engine was 120 ms late"
    (at_line,) = of(transport.until(48.5), "show")
    assert at_line["text"] == "cycle 2: late by 120 ms: cycle 1's part again"
    # no reply at all for cycle 3 (a lost packet): it says so at the line, and part 1 goes on
    (dropped,) = of(transport.until(64.5), "show")
    assert dropped["text"] == "cycle 3: no part (reply lost?): cycle 1's part again"
    assert dropped["marginMs"] is None


def test_with_lag_1_an_early_part_waits_for_its_player(transport: Transport) -> None:
    jam(transport, bars=4, lag=1)
    transport.until(31.5)  # cycle 0 sent; its answer plays in cycle 2
    early = transport.cmd("part", playIndex=2, path="/r/part-2.wav")
    assert of(early, "load") == []  # its player (grid parity 1) is still playing cycle 0
    assert of(early, "show")[0]["marginMs"] == pytest.approx((48 - transport.beats()) * 500)
    (load,) = of(transport.until(32.5), "load")  # at line 1 that player is free
    assert (load["slot"], load["path"], load["playIndex"]) == (1, "/r/part-2.wav", 2)
    shown = of(transport.until(48.5), "show")
    assert shown == []  # cycle 1 expects no part with lag 1: nothing to report
    transport.cmd("eval", expr="jam.history")
    assert transport.result[-1] == {"playIndex": 2, "plays": 2, "late": False}


def test_stop_and_start_of_the_transport(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(31.5)
    transport.cmd("part", playIndex=1, path="/r/part-1.wav")
    transport.until(36)  # inside cycle 1
    halted = transport.cmd("halt")
    assert {"type": "record", "open": False} in [
        {k: a[k] for k in ("type", "open")} for a in of(halted, "record")
    ]
    assert [a["slot"] for a in of(halted, "clear")] == [0, 1]
    assert of(transport.cmd("advance", ms=5000), "cycle") == []  # stopped: nothing is sent
    assert transport.cmd("part", playIndex=2, path="/r/part-2.wav") == []  # answers cycle 1, cut short
    transport.cmd("locate", beats=70)  # play again from bar 18
    again = transport.cmd("play")
    (start,) = of(again, "start")
    assert start["grid"] == 5 and start["lineBeats"] == 80  # the next line; index 4 (grid 5 - grid 1)
    assert of(again, "status")[-1]["text"] == "jam goes on at bar 21 (cycle 4)"
    sent = of(transport.until(96), "cycle")
    assert [c["index"] for c in sent] == [4]  # the index follows the song; the cycle cut short is not sent
    assert transport.cmd("part", playIndex=5, path="/r/part-5.wav") != []
    # back before the last cycle sent: the jam waits, and says what to do
    transport.cmd("halt")
    transport.cmd("locate", beats=0)
    (note,) = of(transport.cmd("play"), "status")
    assert note["text"] == (
        "the song is before the jam's cycle 4: play from later, or disarm and arm again for a new take"
    )
    assert of(transport.until(40), "cycle") == []


def test_stop_silences_the_players_and_stops_recording(transport: Transport) -> None:
    jam(transport, bars=4)
    transport.until(20)
    stopped = transport.cmd("stop")
    assert [a["type"] for a in stopped] == ["record", "clear", "clear", "status"]
    assert of(transport.until(40), "cycle") == []
    transport.cmd("eval", expr="jam.startBeats()")
    assert transport.result == 16  # where the take goes in the song


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bars": 0}, "bars must be a whole number from 1 to 16, got 0"),
        ({"lag": 3}, "lag must be 0, 1 or 2, got 3"),
        ({"onLate": "loop"}, "on_late must be repeat or rest, got loop"),
        ({"bars": 1, "lead": 4}, "lead must be more than 0 and less than the cycle (4 quarter notes), got 4"),
    ],
)
def test_bad_options_are_refused_with_the_fix(
    transport: Transport, options: dict[str, Any], message: str
) -> None:
    transport.proc.stdin.write(json.dumps({"op": "new", "options": options}) + "\n")  # type: ignore[union-attr]
    transport.proc.stdin.flush()  # type: ignore[union-attr]
    answer = json.loads(transport.proc.stdout.readline())  # type: ignore[union-attr]
    assert not answer["ok"] and message in answer["error"]


def test_sample_counts_match_the_daemons_grid(transport: Transport) -> None:
    for bars, bpm, sr in [(4, 120.0, 44100), (3, 97.0, 48000), (1, 133.0, 44100), (16, 61.5, 22050)]:
        transport.cmd("eval", expr=f"core.cycleSamples({bars}, 4, 4, {bpm}, {sr})")
        assert transport.result == Grid(bpm, TimeSignature(4, 4), sr).samples_for_bars(bars)
    transport.cmd("eval", expr="[core.roundHalfEven(2.5), core.roundHalfEven(3.5), core.roundHalfEven(-0.5)]")
    assert transport.result == [2, 4, 0]


# --- the Max glue (m4l/stembridge_jam.js) with stub Max objects and a stub Live set ------------------------------


@pytest.fixture()
def device() -> Iterator[Device]:
    if NODE is None:
        pytest.skip("node is not installed (Debian package nodejs): the device's JavaScript runs under it")
    d = Device()
    yield d
    d.close()


def to(answer: dict[str, Any], name: str) -> list[list[Any]]:
    """What the script sent through [route] to one object of the patch (the UI lines, the buffers...)."""
    return [o[2:] for o in answer["outlets"] if o[0] == 2 and o[1] == name]


def osc(answer: dict[str, Any]) -> list[list[Any]]:
    return [o[1:] for o in answer["outlets"] if o[0] == 0 and str(o[1]).startswith("/")]


def merged(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "outlets": [o for a in answers for o in a["outlets"]],
        "calls": [c for a in answers for c in a["calls"]],
    }


def play_to(d: Device, start: float, end: float, step: float = 0.25) -> dict[str, Any]:
    """[plugsync~]'s beats from ``start`` to ``end`` (what [speedlim 10] lets through, coarser)."""
    answers = []
    b = start
    while b <= end + 1e-9:
        answers.append(d.send("beats", b))
        b += step
    return merged(answers)


def loaded(d: Device, version: tuple[int, int, int] = (12, 1, 0)) -> dict[str, Any]:
    """The jam device on track 0 of a two-track set, Live's transport stopped at bar 1, 120 bpm, 44.1 kHz."""
    d.cmd(
        "load",
        script="stembridge_jam.js",
        live={**live_set([track("Band", 4), track("Keys", 4)], None, version=version), "device_track": 0},
        now=1_000_000,
    )
    shown = d.send("init")
    transport: list[tuple[str, list[Any]]] = [
        ("folder", ["/tmp/jam"]),
        ("timesig", [4, 4]),
        ("samplerate", [44100.0]),
        ("spb", [22050.0]),
        ("playing", [0]),
        ("beats", [0.0]),
    ]
    for message, args in transport:
        d.send(message, *args)
    return shown


def armed(d: Device) -> tuple[str, dict[str, Any]]:
    """Arm, and let the daemon answer `started` for session s1; returns the start request's id and the answer."""
    (start,) = osc(d.send("arm", 1))
    answer = d.reply("/stembridge/jam/started", start[2], "s1", 0.12)
    return str(start[2]), answer


def test_arming_asks_the_daemon_for_a_session_with_the_devices_settings(device: Device) -> None:
    shown = loaded(device)
    listen = [o for o in shown["outlets"] if o[0] == 1]
    assert len(listen) == 1 and listen[0][1] == "port"
    settings: list[tuple[str, list[Any]]] = [
        ("stem", [1]),
        ("bars", [2]),
        ("lag", [1]),
        ("prompt", ["text", "tight", "groove"]),
    ]
    for message, args in settings:
        device.send(message, *args)
    (start,) = osc(device.send("arm", 1))
    assert start[0] == "/stembridge/jam/start" and start[1] == listen[0][2]
    assert start[3:] == [
        "drums", "bars", 2, "bpm", 120, "timesig", "4/4", "lag", 1, "lead", 1, "samplerate", 44100,
        "prompt", "tight groove",
    ]  # fmt: skip
    answer = device.reply("/stembridge/jam/started", start[2], "s1", 0.12)
    assert to(answer, "status")[-1] == ["set", "armed: the jam starts at the next 2-bar line"]
    assert to(answer, "advice") == [["set", "about 0.12 s a cycle"]]
    advice = device.reply("/stembridge/jam/advice", "s1", "musicgen-small on this CPU needs lag 1")
    assert to(advice, "advice") == [["set", "musicgen-small on this CPU needs lag 1"]]
    assert device.reply("/stembridge/jam/advice", "other", "not ours")["outlets"] == []


def test_a_jam_records_sends_and_plays_through_the_patch(device: Device) -> None:
    loaded(device)
    armed(device)
    started = device.send("playing", 1)
    assert to(started, "cycle") == [[7680, "ticks"]] and to(started, "pair") == [[15360, "ticks"]]
    capture = cycle_samples(4, 120, lead=1.0)
    assert to(started, "recend") == [[pytest.approx(capture / 44.1)]]
    assert to(started, "recbuf") == [["sizeinsamps", capture, 2]]  # the buffer is what one cycle keeps
    assert (
        to(started, "recgate") == [[1]]
        and to(started, "buf0") == [["clear"]]
        and to(started, "buf1") == [["clear"]]
    )
    before = play_to(device, 0.25, 30.75)
    assert osc(before) == [] and to(before, "recbuf") == []
    at_lead = device.send("beats", 31.0)  # a quarter note before the line of cycle 0's end (beat 32)
    assert to(at_lead, "recbuf") == [["writewave", "/tmp/jam/jam-s1-in-0.wav"]]
    (cycle,) = osc(at_lead)
    assert cycle[0] == "/stembridge/jam/cycle" and cycle[3:] == [
        "s1",
        0,
        "/tmp/jam/jam-s1-in-0.wav",
        "bpm",
        120,
    ]
    # the buffer is sized for the next line only at the next tick: Max may write the file in its low-priority
    # queue, which runs it before that tick's message reaches the script
    assert to(device.send("beats", 31.25), "recbuf") == [["sizeinsamps", capture, 2]]
    part = device.reply("/stembridge/jam/part", "s1", 1, "/r/jam-s1/part-1.wav", 0.1)
    assert to(part, "buf0") == [["replace", "/r/jam-s1/part-1.wav"]]  # grid cycle 2 (even): player A
    assert to(part, "len0") == [[pytest.approx(8000.0)]]
    assert to(part, "margin") == [["set", "cycle 1: part ready 375 ms early"]]
    at_line = play_to(device, 31.5, 32.5)
    assert to(at_line, "buf1") == [
        ["replace", "/r/jam-s1/part-1.wav"]
    ]  # player B repeats it if part 2 is late
    (second,) = osc(play_to(device, 32.75, 47.0))
    assert second[3:] == ["s1", 1, "/tmp/jam/jam-s1-in-1.wav", "bpm", 120]
    late = device.reply("/stembridge/jam/late", "s1", 2, 80)
    assert to(late, "margin") == [["set", "cycle 2: the engine was 80 ms late"]]


def test_disarming_stops_the_session_and_the_take_lands_in_a_new_track_at_the_jams_start(
    device: Device,
) -> None:
    loaded(device)
    armed(device)
    device.send("playing", 1)
    play_to(device, 0.25, 40.0)
    stopped = device.send("arm", 0)
    assert to(stopped, "recgate") == [[0]]
    (stop,) = osc(stopped)
    assert stop[0] == "/stembridge/jam/stop" and stop[3] == "s1"
    placed = device.reply("/stembridge/jam/stopped", "s1", "/r/jam-s1/performance.wav")
    calls = [(c["path"], c["fn"], c["args"]) for c in placed["calls"] if c["fn"].startswith("create")]
    assert calls == [
        ("live_set", "create_audio_track", [1]),  # right after the device's track
        (
            "live_set tracks 1",
            "create_audio_clip",
            ["/r/jam-s1/performance.wav", 16],
        ),  # bar 5: the jam's start
    ]
    assert to(placed, "status")[-1] == [
        "set",
        "The take is in a new track at bar 5: /r/jam-s1/performance.wav",
    ]


def test_before_live_12_0_5_the_take_is_named_instead(device: Device) -> None:
    loaded(device, version=(12, 0, 4))
    armed(device)
    device.send("playing", 1)
    play_to(device, 0.25, 20.0)
    device.send("arm", 0)
    placed = device.reply("/stembridge/jam/stopped", "s1", "/r/perf.wav")
    assert [c for c in placed["calls"] if c["fn"].startswith("create")] == []
    assert to(placed, "status")[-1] == [
        "set",
        "The take: /r/perf.wav (Live 12.0.5 or later puts it in a track: drag it in)",
    ]


def test_no_daemon_and_a_refused_start_are_said_in_plain_words(device: Device) -> None:
    loaded(device)
    device.send("arm", 1)
    device.cmd("time", now=1_000_000 + 6000)
    gone = device.cmd("tick")
    assert to(gone, "status")[-1] == [
        "set",
        "No answer from stembridge at 127.0.0.1:9977: start it with `stembridge serve`, then arm again",
    ]
    assert to(gone, "armed") == [["set", 0]]  # the Arm toggle goes off
    (start,) = osc(device.send("arm", 1))
    refused = device.reply("/stembridge/error", start[2], "invalid_argument", "lag must be 0..2, got 5")
    assert to(refused, "status")[-1] == ["set", "The daemon refused the request: lag must be 0..2, got 5"]
    assert to(refused, "armed") == [["set", 0]]
    assert osc(device.send("arm", 1))  # and it can be armed again


# --- the patch (the checks every device passes are in tests/test_m4l_device.py) ---------------------------------


@pytest.fixture(scope="module")
def patch() -> dict[str, Any]:
    patcher: dict[str, Any] = json.loads((M4L / "StembridgeJam.maxpat").read_text(encoding="utf-8"))[
        "patcher"
    ]
    return patcher


def boxes(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["box"]["id"]: b["box"] for b in patch["boxes"]}


def wires(patch: dict[str, Any]) -> set[tuple[str, int, str, int]]:
    return {(*ln["patchline"]["source"], *ln["patchline"]["destination"]) for ln in patch["lines"]}


def by_text(patch: dict[str, Any], text: str) -> str:
    (found,) = [i for i, b in boxes(patch).items() if b.get("text") == text]
    return found


def test_the_jam_patch_and_its_script_agree(patch: dict[str, Any], device: Device) -> None:
    source = (M4L / "stembridge_jam.js").read_text()
    js = by_text(patch, "js stembridge_jam.js")
    assert f"inlets = {boxes(patch)[js]['numinlets']};" in source
    assert f"outlets = {boxes(patch)[js]['numoutlets']};" in source
    (route,) = [b for b in boxes(patch).values() if b.get("text", "").startswith("route ")]
    selectors = route["text"].split()[1:]
    players = re.search(r"^var PLAYERS = (.*);", source, re.M)
    assert players, "stembridge_jam.js lists its players' buffers and lengths in PLAYERS"
    named = set(re.findall(r'\bui\("(\w+)"', source)) | set(re.findall(r'"(\w+)"', players.group(1)))
    assert named == set(selectors), "the script and [route] disagree"
    device.cmd("load", script="stembridge_jam.js", live=live_set([], None))
    words = [b["text"].split()[1] for b in boxes(patch).values() if b.get("text", "").startswith("prepend ")]
    assert {"arm", "stem", "bars", "lag", "onlate", "take", "port", "prompt", "playing", "beats", "spb",
            "timesig", "samplerate"} == set(words)  # fmt: skip
    for word in words + [b["text"] for b in boxes(patch).values() if b["maxclass"] == "message"]:
        assert device.eval(f"typeof {word}") == "function", f"[{word}] reaches no function in the script"
        assert device.eval(f"{word}.local") is None, f"{word} is local: Max would refuse the message"
    assert device.eval("run.local") == 1 and device.eval("placeTake.local") == 1


def test_the_patch_records_the_input_and_plays_the_parts_on_the_transports_grid(
    patch: dict[str, Any],
) -> None:
    w = wires(patch)
    b = {box.get("text", ""): i for i, box in boxes(patch).items()}
    plugin, plugout, rec = b["plugin~"], b["plugout~"], b["record~ ---jamrec 2"]
    assert {(plugin, 0, plugout, 0), (plugin, 1, plugout, 1)} <= w  # the band passes through
    assert {(plugin, 0, rec, 0), (plugin, 1, rec, 1)} <= w  # and is recorded, both channels
    # [record~] starts where the cycle's transport-locked ramp wraps (a line), while the script opens the gate
    cyc = b["phasor~ 1n @lock 1"]
    chain = [cyc, b["delta~"], b["<~ 0."], b["edge~"], b["gate"], b["t 1"], rec]
    inlets = [0, 0, 0, 1, 0, 0]
    for (src, dst), inlet in zip(zip(chain, chain[1:], strict=False), inlets, strict=True):
        assert (src, 0, dst, inlet) in w, (boxes(patch)[src].get("text"), boxes(patch)[dst].get("text"))
    # each player's position is the two-cycle ramp, scaled to its part's length, gated to its grid parity
    pair, x2 = b["phasor~ 2n @lock 1"], b["*~ 2."]
    assert (pair, 0, x2, 0) in w
    for parity, buf in ((0, "---jamA"), (1, "---jamB")):
        play = b[f"play~ {buf} 2"]
        (pos,) = [s for s, o, d, i in w if d == play and i == 0]
        assert boxes(patch)[pos]["text"] == "*~ 1000."
        gated = [d for s, o, d, i in w if s == play and o in (0, 1)]
        assert len(gated) == 2
        for g in gated:
            assert boxes(patch)[g]["text"] == "*~" and any(s == g and d == plugout for s, o, d, i in w)
            (gate,) = [s for s, o, d, i in w if d == g and i == 1]
            assert boxes(patch)[gate]["text"] == ("<~ 1." if parity == 0 else ">=~ 1.")
        assert f"buffer~ {buf} 1000 2" in b
    # [route] reaches what the script drives
    (route,) = [i for i, box in boxes(patch).items() if box.get("text", "").startswith("route ")]
    selectors = boxes(patch)[route]["text"].split()[1:]
    reach = {selectors[o]: (boxes(patch)[d].get("text") or boxes(patch)[d].get("varname"), i)
             for s, o, d, i in w if s == route}  # fmt: skip
    assert reach["recgate"] == ("gate", 0) and reach["recend"] == ("record~ ---jamrec 2", 3)
    assert reach["recbuf"] == ("buffer~ ---jamrec 1000 2", 0)
    assert reach["buf0"] == ("buffer~ ---jamA 1000 2", 0) and reach["buf1"] == ("buffer~ ---jamB 1000 2", 0)
    assert reach["len0"] == ("*~ 1000.", 1) and reach["len1"] == ("*~ 1000.", 1)
    assert reach["cycle"] == ("phasor~ 1n @lock 1", 0) and reach["pair"] == ("phasor~ 2n @lock 1", 0)
    assert reach["armed"] == ("Arm", 0)
    # the transport reaches the script: running, beats (rate-limited), tempo, time signature, sample rate
    sync, js = b["plugsync~"], b["js stembridge_jam.js"]
    for outlet, word in [(0, "playing"), (4, "timesig"), (5, "spb"), (6, "beats")]:
        (first,) = [d for s, o, d, i in w if s == sync and o == outlet]
        path = [first]
        while boxes(patch)[path[-1]].get("text") != f"prepend {word}":
            (nxt,) = [d for s, o, d, i in w if s == path[-1]]
            path.append(nxt)
        assert (path[-1], 0, js, 0) in w


def test_the_jam_devices_parameters_are_saved_and_never_automated(patch: dict[str, Any]) -> None:
    params = {b["saved_attribute_attributes"]["valueof"]["parameter_longname"]: b["saved_attribute_attributes"]["valueof"]
              for b in boxes(patch).values() if b.get("parameter_enable") == 1}  # fmt: skip
    assert set(params) == {"Arm", "Stem", "Bars", "Lag", "On late", "Take", "Port"}
    assert params["Arm"]["parameter_invisible"] == 2  # the script turns it off: hidden, out of undo
    assert all(p["parameter_invisible"] == 1 for name, p in params.items() if name != "Arm")  # stored only
    assert params["Bars"]["parameter_mmin"] == 1 and params["Bars"]["parameter_mmax"] == 16
    assert params["Lag"]["parameter_enum"] == ["lag 0", "lag 1", "lag 2"]
    assert params["On late"]["parameter_enum"] == ["repeat", "rest"]


def test_the_jam_device_view_fits_live_and_nothing_overlaps(patch: dict[str, Any]) -> None:
    shown = [b for b in boxes(patch).values() if b.get("presentation")]
    assert patch["openinpresentation"] == 1 and len(shown) >= 12
    for i, a in enumerate(shown):
        ax, ay, aw, ah = a["presentation_rect"]
        assert ax >= 0 and ay >= 0 and ay + ah <= 169 and ax + aw <= patch["devicewidth"], a["id"]
        for other in shown[i + 1 :]:
            bx, by, bw, bh = other["presentation_rect"]
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), (
                a["id"],
                other["id"],
            )


@pytest.mark.parametrize("script", ["stembridge_jam.js", "stembridge_jam_core.js"])
def test_the_jam_scripts_are_es5_for_max_classic_js(script: str) -> None:
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
    if script.endswith("_core.js"):  # pure: no Max or Live globals
        for name in ("outlet", "post(", "LiveAPI", "Task", "messnamed", "File("):
            assert name not in code, f"the scheduling logic uses {name}: it belongs in stembridge_jam.js"


def test_a_session_that_starts_after_disarming_is_stopped_at_once(device: Device) -> None:
    loaded(device)
    (start,) = osc(device.send("arm", 1))
    assert osc(device.send("arm", 0)) == []  # no session yet: nothing to stop
    answer = device.reply("/stembridge/jam/started", start[2], "s9", 0.1)
    (stop,) = osc(answer)
    assert stop[0] == "/stembridge/jam/stop" and stop[3] == "s9"
    assert device.reply("/stembridge/jam/part", "s9", 1, "/r/p.wav", 0.1)["outlets"] == []
