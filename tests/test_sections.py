"""Sections of input files (a trimmed DAW item plays ``length`` seconds from ``start`` seconds into its file):
the CLI, the daemon and the pipeline cut them sample-exactly, place results at the section's timeline position,
and tell sections of one file apart in the separation cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.bwf import read_bext
from bridge.audio.section import Section, cut
from bridge.audio.writer import write_audio
from bridge.cli import main
from bridge.client import Client, Endpoint
from bridge.config import Settings
from bridge.errors import InvalidArgument
from bridge.jobs.cache import ResultCache
from bridge.pipeline import OutputOptions, separate_file
from bridge.server.daemon import DaemonThread
from tests import synth
from tests.test_daemon import no_leaked_threads  # noqa: F401 - fails a test that leaks threads

SR = 44100


@pytest.fixture()
def song_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Six seconds (3 bars at 120 bpm) stamped at 10 s on the timeline (BWF)."""
    audio = synth.mix(synth.song_stems(bpm=120.0, bars=3)).astype(np.float32)
    path = write_audio(tmp_path / "song.wav", audio, SR, bit_depth=32, position=10 * SR)
    return path, audio


def test_cut_is_sample_exact_and_pads_past_the_end() -> None:
    audio = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert cut(audio, 10, Section(0.3, 0.4)).tolist() == [[3, 4, 5, 6], [13, 14, 15, 16]]
    assert cut(audio, 10, Section(0.8)).tolist() == [[8, 9], [18, 19]]
    assert cut(audio, 10, Section(0.8, 0.4)).tolist() == [[8, 9, 0, 0], [18, 19, 0, 0]]
    assert cut(audio, 10, Section()) is audio
    with pytest.raises(InvalidArgument, match=r"start 1 s is past the end of x.wav \(1.000 s\)"):
        cut(audio, 10, Section(1.0), "x.wav")
    for bad in (dict(start=-1.0), dict(start=float("nan")), dict(start=0.0, length=0.0)):
        with pytest.raises(InvalidArgument):
            Section(**bad)  # type: ignore[arg-type]


def test_cli_separates_a_section_placed_where_it_plays(
    tmp_path: Path, song_file: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    path, audio = song_file
    argv = ["separate", str(path), "--engine", "builtin", "--start", "2", "--length", "2.5"]
    assert main([*argv, "--bit-depth", "32", "--out", str(tmp_path / "out"), "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    total = np.zeros((2, int(2.5 * SR)), dtype=np.float32)
    for output in outputs:
        stem, rate = sf.read(output["path"], dtype="float32", always_2d=True)
        assert rate == SR and stem.shape[0] == int(2.5 * SR)
        assert read_bext(Path(output["path"]))["time_reference"] == 12 * SR  # 10 s + 2 s into the file
        total += stem.T
    # the builtin stems sum back to their input exactly: the section, not the file's start
    np.testing.assert_allclose(total, audio[:, 2 * SR : int(4.5 * SR)], atol=1e-5)


def test_cli_varies_a_section_bar_exact(
    tmp_path: Path, song_file: tuple[Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = song_file
    argv = ["vary", str(path), "--engine", "builtin", "--start", "2", "--length", "2", "--bpm", "120"]
    assert main([*argv, "--bars", "1", "--variations", "2", "--out", str(tmp_path / "out"), "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert len(outputs) == 2
    for output in outputs:
        assert sf.info(output["path"]).frames == 2 * SR
        assert read_bext(Path(output["path"]))["time_reference"] == 12 * SR


def test_context_start_puts_bar_1_inside_each_context_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stems = synth.song_stems(bpm=120.0, bars=2)
    drums, keys = stems["drums"], stems["other"]
    sf.write(tmp_path / "drums.wav", drums.T, SR, subtype="FLOAT")
    sf.write(tmp_path / "keys.wav", keys.T, SR, subtype="FLOAT")
    lead_in = np.zeros((2, SR // 2), dtype=np.float32)  # the same keys half a second into their file
    sf.write(tmp_path / "keys_late.wav", np.concatenate([lead_in, keys], axis=1).T, SR, subtype="FLOAT")
    common = ["generate", "--engine", "builtin", "--stem", "bass", "--bpm", "120", "--bars", "2", "--json"]
    assert (
        main(
            [*common, "--context", str(tmp_path / "drums.wav"), str(tmp_path / "keys.wav")]
            + ["--out", str(tmp_path / "a")]
        )
        == 0
    )
    aligned = json.loads(capsys.readouterr().out)["outputs"][0]["path"]
    late = [
        "--context",
        str(tmp_path / "drums.wav"),
        str(tmp_path / "keys_late.wav"),
        "--context-start",
        "0",
        "0.5",
    ]
    assert main([*common, *late, "--out", str(tmp_path / "b")]) == 0
    shifted = json.loads(capsys.readouterr().out)["outputs"][0]["path"]
    np.testing.assert_array_equal(sf.read(aligned)[0], sf.read(shifted)[0])
    assert main([*common, *late[:3], "--context-start", "0.5", "--out", str(tmp_path / "c")]) == 2
    assert "got 1 context start(s) for 2 context file(s)" in capsys.readouterr().err


def test_daemon_takes_sections_and_caches_them_apart(
    tmp_path: Path, song_file: tuple[Path, np.ndarray]
) -> None:
    path, _ = song_file
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    with DaemonThread(settings, discovery=False) as d, Client(Endpoint("127.0.0.1", d.port)) as client:
        first = client.run("separate", [str(path)], {"start": 1, "length": 2, "stems": "bass"})
        other = client.run("separate", [str(path)], {"start": 3, "length": 2, "stems": "bass"})
        a, b = (sf.read(r.paths[0], dtype="float32")[0] for r in (first, other))
        assert a.shape == b.shape == (2 * SR, 2) and not np.allclose(a, b)  # not served from the cache
        with pytest.raises(InvalidArgument, match="context_start"):
            client.run(
                "generate", ["bass"], {"context": str(path), "context_start": [0, 1], "bpm": 120, "bars": 1}
            )
        with pytest.raises(InvalidArgument, match="past the end"):
            client.run("vary", [str(path)], {"start": 60})


def test_pipeline_cache_serves_the_same_section_only(
    tmp_path: Path, song_file: tuple[Path, np.ndarray]
) -> None:
    path, _ = song_file
    cache = ResultCache(tmp_path / "cache", max_bytes=10**9)
    options = OutputOptions(out_dir=tmp_path / "out")
    run = lambda section: separate_file(path, options, engine="builtin", cache=cache, section=section)  # noqa: E731
    assert not run(Section(1.0, 2.0)).info["cached"]
    assert run(Section(1.0, 2.0)).info["cached"]
    assert not run(Section(1.5, 2.0)).info["cached"]
    assert not run(None).info["cached"]
