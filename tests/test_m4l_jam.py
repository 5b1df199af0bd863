"""The StembridgeJam Max for Live device (m4l/StembridgeJam.maxpat): its scheduling logic under a simulated Live
transport, its Max glue with stub Max objects and a stub Live set, and its patch.

The scheduling logic (m4l/stembridge_jam_core.js) runs in tests/m4l/jam_harness.js, which moves a simulated
transport (beats, tempo, play/stop) and ticks the logic every few milliseconds; each action it asks for comes back
with the song position at which it asked. The glue (m4l/stembridge_jam.js) runs in tests/m4l/harness.js, as the
Stembridge device's script does. The daemon's replies are stubbed: the contract is docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.audio.timing import Grid, TimeSignature
from tests.test_m4l_device import Device, live_set, track

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
    assert (start["grid"], start["lineBeats"], start["cycleTicks"]) == (1, 16, 16 * 480)  # bar 5; 4 bars of 4/4
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
    assert shown["late"] and shown["text"].startswith("cycle 1: part only ") and shown["text"].endswith(
        " ms early: not played"
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
    assert {"type": "record", "open": False} in [{k: a[k] for k in ("type", "open")} for a in of(halted, "record")]
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
def test_bad_options_are_refused_with_the_fix(transport: Transport, options: dict[str, Any], message: str) -> None:
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
