"""The stembridge command end to end on synthetic audio: outputs, JSON, exit codes, and no leftovers on errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.bwf import read_bext
from bridge.audio.timing import Grid, TimeSignature
from bridge.cli import main
from tests import synth
from tests.fifo import make_fifo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def song_file(tmp_path: Path, song_mix: np.ndarray) -> Path:
    path = tmp_path / "in" / "My Song.wav"
    path.parent.mkdir()
    sf.write(path, song_mix.T, synth.SR, subtype="FLOAT")
    return path


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_help_for_every_command_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("separate", "generate", "vary", "models", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_separate_writes_stems_that_sum_to_the_mix(
    capsys: pytest.CaptureFixture[str], song_file: Path, song_mix: np.ndarray, out_dir: Path
) -> None:
    code, out, _ = run(
        capsys, "separate", str(song_file), "--out", str(out_dir), "--json", "--bit-depth", "32"
    )
    assert code == 0
    result = json.loads(out)
    assert result["engine"] == "builtin"
    stems = {o["stem"]: Path(o["path"]) for o in result["outputs"]}
    assert set(stems) == {"drums", "bass", "vocals", "other"}
    assert stems["bass"].name == "My_Song__bass.wav"
    total = sum(sf.read(p, dtype="float32", always_2d=True)[0].T for p in stems.values())
    assert np.max(np.abs(total - song_mix)) < 1e-4


def test_separate_subset_at_another_rate(
    capsys: pytest.CaptureFixture[str], song_file: Path, song_mix: np.ndarray, out_dir: Path
) -> None:
    code, out, _ = run(
        capsys,
        "separate",
        str(song_file),
        "--stems",
        "drums,bass",
        "--samplerate",
        "48000",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    outputs = json.loads(out)["outputs"]
    assert [o["stem"] for o in outputs] == ["drums", "bass"]
    info = sf.info(outputs[0]["path"])
    assert info.samplerate == 48000 and info.subtype == "PCM_24"
    assert info.frames == round(song_mix.shape[1] * 48000 / 44100)


def test_generate_is_bar_exact_and_placed(
    capsys: pytest.CaptureFixture[str], song: dict, tmp_path: Path
) -> None:
    ctx = tmp_path / "drums.wav"
    sf.write(ctx, song["drums"].T, synth.SR, subtype="PCM_24")
    out_dir = tmp_path / "out"
    code, out, _ = run(
        capsys,
        "generate",
        "--stem",
        "bass",
        "--context",
        str(ctx),
        "--bpm",
        "120",
        "--bars",
        "4",
        "--variations",
        "2",
        "--seed",
        "3",
        "--position",
        "2.5",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    outputs = json.loads(out)["outputs"]
    assert [Path(o["path"]).name for o in outputs] == [
        "drums__bass__120bpm__4bars__v1.wav",
        "drums__bass__120bpm__4bars__v2.wav",
    ]
    expected = Grid(120, TimeSignature(4, 4), synth.SR).samples_for_bars(4)
    for o in outputs:
        audio, sr = sf.read(o["path"], always_2d=True)
        assert sr == synth.SR and audio.shape == (expected, 2)
        assert np.max(np.abs(audio)) <= 10 ** (-1 / 20) + 1e-4
        bext = read_bext(Path(o["path"]))
        assert bext is not None and bext["time_reference"] == round(2.5 * synth.SR)
    a = sf.read(outputs[0]["path"])[0]
    b = sf.read(outputs[1]["path"])[0]
    assert not np.allclose(a, b)


def test_generate_without_context_uses_the_prompt(capsys: pytest.CaptureFixture[str], out_dir: Path) -> None:
    code, out, _ = run(
        capsys,
        "generate",
        "--stem",
        "pad",
        "--bpm",
        "90",
        "--bars",
        "2",
        "--time-signature",
        "6/8",
        "--prompt",
        "dark pad in E minor",
        "--format",
        "aiff",
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    path = Path(json.loads(out)["outputs"][0]["path"])
    assert path.suffix == ".aif"
    assert sf.info(path).frames == Grid(90, TimeSignature(6, 8), 44100).samples_for_bars(2)


def test_vary_keeps_length(capsys: pytest.CaptureFixture[str], song: dict, tmp_path: Path) -> None:
    loop = tmp_path / "loop.wav"
    sf.write(loop, song["drums"].T, synth.SR, subtype="PCM_24")
    code, out, _ = run(
        capsys,
        "vary",
        str(loop),
        "--variations",
        "3",
        "--bpm",
        "120",
        "--bars",
        "4",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0
    outputs = json.loads(out)["outputs"]
    assert [o["variation"] for o in outputs] == [1, 2, 3]
    for o in outputs:
        assert sf.info(o["path"]).frames == song["drums"].shape[1]


def test_never_overwrites(capsys: pytest.CaptureFixture[str], song_file: Path, out_dir: Path) -> None:
    out_dir.mkdir()
    mine = out_dir / "My_Song__drums.wav"
    mine.write_bytes(b"my precious take")
    code, out, _ = run(
        capsys, "separate", str(song_file), "--stems", "drums", "--out", str(out_dir), "--json"
    )
    assert code == 0
    assert mine.read_bytes() == b"my precious take"
    assert Path(json.loads(out)["outputs"][0]["path"]).name == "My_Song__drums-2.wav"


def test_a_folder_with_an_outputs_name_gets_the_next_free_name(
    capsys: pytest.CaptureFixture[str], song_file: Path, song_mix: np.ndarray, out_dir: Path
) -> None:
    (out_dir / "My_Song__drums.wav").mkdir(parents=True)  # a folder that happens to have the name
    code, out, err = run(
        capsys, "separate", str(song_file), "--stems", "drums,bass", "--out", str(out_dir), "--json"
    )
    assert code == 0, err
    paths = [Path(o["path"]) for o in json.loads(out)["outputs"]]
    assert paths == [out_dir / "My_Song__drums-2.wav", out_dir / "My_Song__bass.wav"]
    assert [sf.info(str(p)).frames for p in paths] == [song_mix.shape[1]] * 2
    assert (out_dir / "My_Song__drums.wav").is_dir() and not list((out_dir / "My_Song__drums.wav").iterdir())


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2), dtype=np.float32), 44100)
    nan = tmp_path / "nan.wav"
    data = np.zeros((1000, 2), dtype=np.float32)
    data[500] = np.nan
    sf.write(nan, data, 44100, subtype="FLOAT")
    text = tmp_path / "notes.mp3"
    text.write_text("not audio")
    return {"corrupt": corrupt, "empty": empty, "nan": nan, "text": text, "missing": tmp_path / "nope.wav"}


@pytest.mark.parametrize(
    ("case", "argv", "needle"),
    [
        ("missing", ["separate", "{missing}"], "nope.wav"),
        ("corrupt", ["separate", "{corrupt}"], "corrupt.wav"),
        ("empty", ["separate", "{empty}"], "empty.wav"),
        ("nan", ["vary", "{nan}"], "nan.wav"),
        ("text", ["separate", "{text}"], "notes.mp3"),
        (
            "bpm",
            ["generate", "--stem", "bass", "--bpm", "0", "--bars", "4"],
            "bpm must be between 20 and 400, got 0",
        ),
        (
            "bars",
            ["generate", "--stem", "bass", "--bpm", "120", "--bars", "300"],
            "bars must be a whole number",
        ),
        ("stem", ["generate", "--stem", "kazoo", "--bpm", "120", "--bars", "4"], "kazoo"),
        ("sepstem", ["separate", "{corrupt}", "--stems", "drums,kazoo"], "kazoo"),
        ("engine", ["separate", "{corrupt}", "--engine", "nope"], "unknown engine 'nope'"),
        ("strength", ["vary", "{corrupt}", "--strength", "2"], "strength must be between 0 and 1"),
        (
            "context",
            ["generate", "--stem", "bass", "--bpm", "120", "--bars", "4", "--context", "{nan}"],
            "nan.wav",
        ),
        (
            "timesig",
            ["generate", "--stem", "bass", "--bpm", "120", "--bars", "4", "--time-signature", "4/5"],
            "time signature",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, case: str, argv: list[str], needle: str
) -> None:
    # capfd, not capsys: decoders writing straight to file descriptor 2 would break the one-line promise
    files = _bad_files(tmp_path)
    out_dir = tmp_path / "out"
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv] + ["--out", str(out_dir)]
    code, out, err = run(capfd, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert files_in(out_dir) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["separate", "{fifo}"],
        ["vary", "{fifo}"],
        ["separate", "{bare}"],  # no .wav: not even looked at as a WAV first
        ["generate", "--stem", "bass", "--bpm", "120", "--bars", "1", "--context", "{fifo}"],
    ],
)
def test_a_fifo_input_is_refused_not_waited_on(tmp_path: Path, argv: list[str]) -> None:
    fifos = {"fifo": make_fifo(tmp_path / "pipe.wav"), "bare": make_fifo(tmp_path / "pipe")}
    out_dir = tmp_path / "out"
    path = fifos["bare"] if "{bare}" in argv else fifos["fifo"]
    argv = [a.format(**{k: str(v) for k, v in fifos.items()}) for a in argv] + ["--out", str(out_dir)]
    # a subprocess with a timeout: a regression (open() waiting for a writer forever) fails, not hangs
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"stembridge {argv[0]}: error: {path} is not a regular file (it is a FIFO); give the path of an "
        f"audio file"
    ]
    assert files_in(out_dir) == []


def test_json_errors_are_machine_readable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "separate", str(tmp_path / "missing.wav"), "--json", "--out", str(tmp_path))
    assert code == 2
    assert json.loads(out)["error"]["code"] == "unreadable_audio"


def test_models_lists_engines_and_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["engines"]["builtin"]["available"] is True
    names = {m["name"]: m for m in data["models"]}
    assert names["builtin"]["available"] is True
    assert names["htdemucs"]["available"] is False and names["htdemucs"]["reason"]
    code, out, _ = run(capsys, "models")
    assert "builtin" in out and "htdemucs" in out


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str], out_dir: Path) -> None:
    code, out, _ = run(capsys, "demo", "--out", str(out_dir), "--quiet")
    assert code == 0
    folder = out_dir / "stembridge-demo"
    names = files_in(folder)
    assert "demo-song.wav" in names
    for stem in ("drums", "bass", "vocals", "other"):
        assert f"demo-song__{stem}.wav" in names
    assert "demo-song__bass__120bpm__8bars__v1.wav" in names
    assert "demo-song__bass__120bpm__8bars__v1.mid" in names  # the new bass's notes
    names = [name for name in names if not name.endswith(".mid")]
    for k in (1, 2, 3):
        assert f"demo-song__bass-var__120bpm__8bars__v{k}.wav" in names
    assert str(folder) in out
    assert f"its notes  {folder / 'demo-song__bass__120bpm__8bars__v1.mid'}" in out
    expected = Grid(120, TimeSignature(4, 4), 44100).samples_for_bars(8)
    for name in names:
        assert sf.info(folder / name).frames == expected


def test_console_script_and_module_entry_point(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bridge.cli"]
    done = subprocess.run(
        [*cmd, "generate", "--stem", "bass", "--bpm", "500", "--bars", "4"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "stembridge generate: error: bpm must be between 20 and 400, got 500"
    exe = shutil.which("stembridge")
    if exe is None and os.environ.get("CI"):
        pytest.fail("the stembridge console script is not installed in CI")
    if exe is not None:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
        assert version.stdout.startswith("stembridge ")


# --- edge cases a reviewer found ------------------------------------------------------------------------------


def test_render_length_is_bounded(capsys: pytest.CaptureFixture[str], out_dir: Path) -> None:
    code, _, err = run(
        capsys,
        "generate",
        "--stem",
        "pad",
        "--bpm",
        "20",
        "--bars",
        "256",
        "--variations",
        "2",
        "--out",
        str(out_dir),
    )
    assert code == 2 and "would render 102:24 of audio" in err and "fewer bars or variations" in err
    code, _, err = run(
        capsys,
        "generate",
        "--stem",
        "pad",
        "--bpm",
        "120",
        "--bars",
        "4",
        "--time-signature",
        "32/1",
        "--out",
        str(out_dir),
    )
    assert code == 2 and "lasts 128 quarter notes" in err
    assert files_in(out_dir) == []


def test_hot_mix_gives_float_stems_that_still_sum(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, song_mix: np.ndarray
) -> None:
    hot = tmp_path / "hot.wav"
    sf.write(hot, (song_mix * 1.6).T, synth.SR, subtype="FLOAT")
    code, out, err = run(capsys, "separate", str(hot), "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    result = json.loads(out)
    assert "32-bit float" in result["warnings"][0] and "32-bit float" in err
    total = 0
    for o in result["outputs"]:
        assert sf.info(o["path"]).subtype == "FLOAT"
        total = total + sf.read(o["path"], dtype="float32", always_2d=True)[0].T
    assert np.max(np.abs(total - song_mix * 1.6)) < 1e-4


def test_vary_at_another_rate_is_bar_exact(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    loop = tmp_path / "loop48.wav"
    n48 = Grid(97, TimeSignature(4, 4), 48000).samples_for_bars(3)
    t = np.arange(n48) / 48000
    sf.write(loop, (0.3 * np.sin(2 * np.pi * 110 * t)).astype(np.float32), 48000)
    code, out, _ = run(
        capsys,
        "vary",
        str(loop),
        "--bpm",
        "97",
        "--bars",
        "3",
        "--samplerate",
        "44100",
        "--variations",
        "2",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0
    for o in json.loads(out)["outputs"]:
        info = sf.info(o["path"])
        assert info.samplerate == 44100 and info.frames == Grid(
            97, TimeSignature(4, 4), 44100
        ).samples_for_bars(3)


def test_input_position_carries_over_to_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, song_mix: np.ndarray
) -> None:
    from bridge.audio.writer import write_audio

    placed = write_audio(tmp_path / "placed.wav", song_mix, synth.SR, position=551250)
    code, out, _ = run(
        capsys,
        "separate",
        str(placed),
        "--stems",
        "bass",
        "--samplerate",
        "48000",
        "--out",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0
    bext = read_bext(Path(json.loads(out)["outputs"][0]["path"]))
    assert bext is not None and bext["time_reference"] == 600000  # 12.5 s at 48 kHz
    code, out, _ = run(
        capsys, "vary", str(placed), "--bpm", "120", "--bars", "4", "--out", str(tmp_path / "v"), "--json"
    )
    assert code == 0
    bext = read_bext(Path(json.loads(out)["outputs"][0]["path"]))
    assert bext is not None and bext["time_reference"] == 551250


def test_stem_lists_are_checked(capsys: pytest.CaptureFixture[str], song_file: Path, out_dir: Path) -> None:
    code, _, err = run(capsys, "separate", str(song_file), "--stems", ",", "--out", str(out_dir))
    assert code == 2 and "no stems named; pick some of: drums, bass, vocals, other" in err
    code, out, _ = run(
        capsys, "separate", str(song_file), "--stems", "drums,Drums", "--out", str(out_dir), "--json"
    )
    assert code == 0 and len(json.loads(out)["outputs"]) == 1


def test_vary_reads_tempo_from_our_own_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    n = Grid(87, TimeSignature(4, 4), synth.SR).samples_for_bars(4)
    loop, _ = synth.drum_loop(87, 4)
    named = tmp_path / "song__drums__87bpm__4bars__v1.wav"
    sf.write(named, 0.5 * loop[:n], synth.SR)
    code, out, _ = run(
        capsys, "vary", str(named), "--variations", "1", "--out", str(tmp_path / "o"), "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["bpm"] == 87 and result["bars"] == 4
    assert Path(result["outputs"][0]["path"]).name == "song__drums-var__87bpm__4bars__v1.wav"


def test_position_needs_wav(capsys: pytest.CaptureFixture[str], out_dir: Path) -> None:
    code, _, err = run(
        capsys,
        "generate",
        "--stem",
        "bass",
        "--bpm",
        "120",
        "--bars",
        "2",
        "--format",
        "aiff",
        "--position",
        "2",
        "--out",
        str(out_dir),
    )
    assert code == 2 and "use --format wav" in err
