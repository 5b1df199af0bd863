"""``stembridge jam --input FILE`` and the file player behind it: the JSON report, the files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.timing import Grid
from bridge.cli import main
from bridge.engines.builtin import BuiltinEngine
from bridge.jam import JamOptions, JamSession
from bridge.jam.player import play
from tests.test_jam import C_MAJOR, SR, SlowEngine, band

BARS = 2
L = Grid(120.0, sample_rate=SR).samples_for_bars(BARS)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def humans_file(tmp_path: Path) -> Path:
    """Three cycles and a half of a band at 120 bpm (2-bar cycles)."""
    path = tmp_path / "in" / "the band.wav"
    path.parent.mkdir()
    audio = band(120, BARS * 4, C_MAJOR)[:, : 3 * L + L // 2]
    sf.write(path, audio.T, SR, subtype="FLOAT")
    return path


def test_jam_json_reports_every_cycle_and_writes_the_parts_and_the_take(
    capsys: pytest.CaptureFixture[str], humans_file: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    code, out, _ = run(
        capsys, "jam", "--input", str(humans_file), "--stem", "bass", "--bpm", "120", "--bars", "2",
        "--out", str(out_dir), "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    cycles = report["cycles"]
    assert [c["index"] for c in cycles] == [0, 1, 2, 3]
    assert [c["play_index"] for c in cycles] == [1, 2, 3, 4]
    assert all(set(c) == {"index", "play_index", "ready_ms_before_line", "late"} for c in cycles)
    assert all((c["ready_ms_before_line"] < 0) == c["late"] for c in cycles)
    (folder,) = out_dir.iterdir()
    assert folder.name.startswith("jam-the-band-")
    on_time = [c["play_index"] for c in cycles if not c["late"]]
    parts = [str(folder / f"part-{p}.wav") for p in on_time]
    assert report["outputs"] == parts + [str(folder / "performance.wav")]
    for path in parts:
        assert sf.info(path).frames == L
    assert sf.info(str(folder / "performance.wav")).frames == 5 * L  # cycles 0..4, from bar 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(p).name for p in report["outputs"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bpm", "120", "--bars", "17"], "bars must be a whole number between 1 and 16, got 17"),
        (["--bpm", "0"], "bpm must be between 20 and 400, got 0"),
        (["--bpm", "120", "--lag", "5"], "lag must be a whole number between 0 and 2, got 5"),
        (["--bpm", "120", "--stem", "vocals"], "the builtin engine cannot generate 'vocals'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], humans_file: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    out_dir = tmp_path / "out"
    stem = [] if "--stem" in argv else ["--stem", "bass"]
    code, out, err = run(capsys, "jam", "--input", str(humans_file), *stem, *argv, "--out", str(out_dir))
    assert code == 2 and out == ""
    assert err.startswith("stembridge jam: error: ") and message in err and err.count("\n") == 1
    assert not out_dir.exists()


def test_a_missing_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    code, out, err = run(capsys, "jam", "--input", str(missing), "--stem", "bass", "--bpm", "120", "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "unreadable_audio"
    assert err == f"stembridge jam: error: audio file not found: {missing}; check the path\n"


def test_a_silent_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros((SR, 2), dtype=np.float32), SR)
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "jam", "--input", str(silent), "--stem", "bass", "--bpm", "120", "--out", str(out_dir)
    )
    assert code == 2 and not out_dir.exists()
    assert err == (
        "stembridge jam: error: the humans' audio is silent throughout; give a recording of the band to jam with\n"
    )


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["jam", "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_realtime_waits_for_each_cycle_to_be_played(tmp_path: Path) -> None:
    options = JamOptions("bass", bars=BARS, sample_rate=SR)
    session = JamSession(options, BuiltinEngine(), tmp_path, "live")
    waits: list[float] = []
    humans = band(120, BARS * 4, C_MAJOR)[:, : 2 * L]
    run_ = play(session, humans, realtime=True, sleep=waits.append)
    captured = L - SR // 2  # a beat of lead at 120 bpm
    due = [captured / SR, (L + captured) / SR]  # seconds from the start (the sleeps here return at once)
    assert len(waits) == 2 and all(0 < w <= d for w, d in zip(waits, due, strict=True))
    assert [p.index for p in run_.parts] == [0, 1]
    assert session.stopped and run_.performance == tmp_path / "jam-live" / "performance.wav"


def test_a_short_last_cycle_is_sent_as_it_is(tmp_path: Path) -> None:
    options = JamOptions("bass", bars=BARS, sample_rate=SR)
    session = JamSession(options, BuiltinEngine(), tmp_path, "short")
    sent: list[int] = []
    original = session.answer

    def spy(index: int, humans: np.ndarray, **kwargs: object) -> object:
        sent.append(humans.shape[1])
        return original(index, humans, budget=60.0)

    session.answer = spy  # type: ignore[method-assign,assignment]
    play(session, band(120, BARS * 2, C_MAJOR)[:, : L + 1000])
    assert sent == [L - SR // 2, 1000]


@pytest.mark.parametrize("realtime", [False, True])
def test_an_engine_slower_than_a_cycle_falls_behind_and_its_parts_turn_late(
    tmp_path: Path, realtime: bool
) -> None:
    """1-bar cycles at 240 bpm (1 s), lag 1 and two beats of lead: each part has 1.5 s from its own cycle's
    capture, more than the engine's 1.2 s, yet each cycle also waits for the answer before it, so the backlog
    grows by 0.2 s a cycle and cycle 2's part is ready past its line (1.2 s x 3 after cycle 0 is sent)."""
    options = JamOptions("bass", bars=1, bpm=240.0, lag=1, lead=2.0, sample_rate=SR)
    session = JamSession(options, SlowEngine(set(range(100)), seconds=1.2), tmp_path, "behind")
    humans = band(240, 4, C_MAJOR)
    run_ = play(session, humans, realtime=realtime)
    assert [p.index for p in run_.parts] == [0, 1, 2, 3]
    assert [p.late for p in run_.parts[2:]] == [True, True]
    assert all(p.margin_ms < 0 and p.path is None for p in run_.parts[2:])
    written = sorted(p.name for p in (tmp_path / "jam-behind").iterdir())
    assert "part-4.wav" not in written and "part-5.wav" not in written
