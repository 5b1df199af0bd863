"""Long inputs block by block: the separation streamed from the file into its staged outputs, with tiny blocks.

The real size (an hour of audio in bounded memory) is a benchmark (bench/bench_memory.py), not a test: here
the blocks are a second long, so an 8-second song runs through every path a long one takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge import pipeline
from bridge.audio import bwf
from bridge.audio.blocks import AudioSource, windows
from bridge.audio.section import Section
from bridge.audio.stream_writer import StreamWriter
from bridge.audio.writer import write_audio
from bridge.engines import builtin
from bridge.engines.base import Level, ProgressCallback
from bridge.engines.builtin import BuiltinEngine
from bridge.errors import AudioWriteError, Cancelled
from bridge.jobs import outdir
from bridge.pipeline import OutputOptions, separate_file

SR = 44100
STEMS = ("drums", "bass", "vocals", "other")


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every separation longer than a second is streamed, in one-second blocks."""
    monkeypatch.setattr(pipeline, "STREAM_ABOVE_SECONDS", 0.0)
    monkeypatch.setattr(builtin, "SEPARATE_BLOCK_SECONDS", 1.0)


@pytest.fixture
def song_file(tmp_path: Path, song_mix: np.ndarray) -> Path:
    path = tmp_path / "in" / "song.wav"
    path.parent.mkdir()
    sf.write(str(path), song_mix.T, SR, subtype="FLOAT")
    return path


def _read(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SR
    return np.ascontiguousarray(data.T)


def _separate(path: Path, out: Path, **kwargs: object) -> dict[str, np.ndarray]:
    result = separate_file(path, OutputOptions(out, bit_depth=32), engine="builtin", **kwargs)  # type: ignore[arg-type]
    return {o.stem: _read(o.path) for o in result.outputs}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_windows_cover_the_signal_on_the_grid() -> None:
    spans = list(windows(1000, 300, 50, align=64))
    assert [(w.start, w.stop) for w in spans] == [(0, 320), (320, 640), (640, 960), (960, 1000)]
    assert [(w.first, w.last) for w in spans] == [(0, 384), (256, 704), (576, 1000), (896, 1000)]
    assert all(w.first % 64 == 0 for w in spans)


def test_streamed_separation_equals_the_whole_one(
    tmp_path: Path, song_file: Path, song_mix: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _separate(song_file, tmp_path / "whole")
    monkeypatch.setattr(pipeline, "STREAM_ABOVE_SECONDS", 0.0)
    monkeypatch.setattr(builtin, "SEPARATE_BLOCK_SECONDS", 1.0)
    calls = []
    real = BuiltinEngine.separate_block

    def counting(self: BuiltinEngine, audio: np.ndarray, *args: object) -> dict[str, np.ndarray]:
        calls.append(audio.shape[-1])
        return real(self, audio, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(BuiltinEngine, "separate_block", counting)
    streamed = _separate(song_file, tmp_path / "streamed")
    assert len(calls) == -(
        -song_mix.shape[-1] // (SR // 512 * 512 + 512)
    )  # one-second blocks on the hop grid
    assert max(calls) < song_mix.shape[-1]
    assert list(streamed) == list(STEMS)
    for stem in STEMS:
        assert streamed[stem].shape == song_mix.shape  # to the sample
        assert np.max(np.abs(streamed[stem] - whole[stem])) < 1e-5  # no seams: the blocks see enough context
    total = np.sum([streamed[s] for s in STEMS], axis=0)
    assert np.max(np.abs(total - song_mix)) < 1e-5


@pytest.mark.usefixtures("tiny_blocks")
def test_streamed_section_is_cut_to_the_sample(tmp_path: Path, song_file: Path, song_mix: np.ndarray) -> None:
    stems = _separate(song_file, tmp_path / "out", section=Section(1.5, 5.0), stems=["bass", "other"])
    first, count = int(round(1.5 * SR)), int(round(5.0 * SR))
    assert list(stems) == ["bass", "other"]
    assert stems["bass"].shape == (2, count)
    whole = BuiltinEngine().separate(song_mix[:, first : first + count], SR, ["bass"])["bass"]
    assert np.max(np.abs(stems["bass"] - whole)) < 1e-5


@pytest.mark.usefixtures("tiny_blocks")
def test_streamed_stems_past_0_dbfs_are_written_as_float(tmp_path: Path, song_mix: np.ndarray) -> None:
    loud = song_mix.copy()
    loud[:, 6 * SR : 6 * SR + 100] *= 4.0  # over full scale late in the song, after blocks were written
    path = tmp_path / "loud.wav"
    sf.write(str(path), loud.T, SR, subtype="FLOAT")
    result = separate_file(path, OutputOptions(tmp_path / "out"), engine="builtin")
    assert result.info["warnings"][0].startswith("the stems peak at +")
    for o in result.outputs:
        assert sf.info(str(o.path)).subtype == "FLOAT"
    total = np.sum([_read(o.path) for o in result.outputs], axis=0)
    # the blocks written before the loud one went through 24 bits first: the sum holds to that precision
    assert np.max(np.abs(total - loud)) < 4 * 2.0**-23
    assert np.max(np.abs(total[:, 6 * SR :] - loud[:, 6 * SR :])) < 1e-5


@pytest.mark.usefixtures("tiny_blocks")
@pytest.mark.parametrize("swapped", [False, True], ids=["held", "swapped"])
def test_a_held_folder_streams_through_its_handle(
    tmp_path: Path, song_mix: np.ndarray, swapped: bool
) -> None:
    """A daemon job's folder is held open (:func:`bridge.jobs.outdir.prepare`): the streamed temp files, their
    rewrite as float (a stem past 0 dBFS) and the published files all go through the handle; a folder swapped
    for a link meanwhile gets nothing through the link, and the job fails naming it."""
    loud = song_mix.copy()
    loud[:, 6 * SR : 6 * SR + 100] *= 4.0
    path = tmp_path / "loud.wav"
    sf.write(str(path), loud.T, SR, subtype="FLOAT")
    renders, outside = (tmp_path / "renders").resolve(), tmp_path / "outside"
    outside.mkdir()
    folder, _ = outdir.prepare(renders / "x", [renders])

    def swap(fraction: float, stage: str) -> None:
        if swapped and stage == "write" and not (renders / "x").is_symlink():  # every temp file is written
            (renders / "x").rename(renders / "x.old")
            (renders / "x").symlink_to(outside, target_is_directory=True)

    with folder:
        options = OutputOptions(folder.path, folder=folder)
        if not swapped:
            result = separate_file(path, options, engine="builtin", progress=swap)
            total = np.sum([_read(o.path) for o in result.outputs], axis=0)
            assert all(sf.info(str(o.path)).subtype == "FLOAT" for o in result.outputs)
            assert np.max(np.abs(total[:, 6 * SR :] - loud[:, 6 * SR :])) < 1e-5
            assert _hidden(renders / "x") == []
            return
        with pytest.raises(AudioWriteError, match=f"the output folder {renders / 'x'} was moved or replaced"):
            separate_file(path, options, engine="builtin", progress=swap)
    assert list(outside.iterdir()) == []
    assert list((renders / "x.old").iterdir()) == []  # no temp file, no claim


@pytest.mark.usefixtures("tiny_blocks")
def test_a_failure_mid_stream_leaves_nothing(
    tmp_path: Path, song_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = BuiltinEngine.separate_block
    blocks = []

    def failing(self: BuiltinEngine, audio: np.ndarray, *args: object) -> dict[str, np.ndarray]:
        blocks.append(1)
        if len(blocks) == 3:
            raise OSError(28, "No space left on device")
        return real(self, audio, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(BuiltinEngine, "separate_block", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        separate_file(song_file, OutputOptions(out), engine="builtin")
    assert len(blocks) == 3  # two blocks were already in the temp files
    assert list(out.iterdir()) == []  # no stem, no temp file, no claim


@pytest.mark.usefixtures("tiny_blocks")
def test_a_full_disk_mid_stream_leaves_nothing(
    tmp_path: Path, song_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bwf._encode
    calls = []

    def full(block: np.ndarray, bit_depth: int, is_float: bool) -> bytes:
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real(block, bit_depth, is_float)

    monkeypatch.setattr(bwf, "_encode", full)
    out = tmp_path / "out"
    with pytest.raises(AudioWriteError, match="disk full writing .*song__.*; free some space"):
        separate_file(song_file, OutputOptions(out), engine="builtin")
    assert list(out.iterdir()) == []


@pytest.mark.usefixtures("tiny_blocks")
def test_cancel_mid_stream_leaves_nothing(tmp_path: Path, song_file: Path) -> None:
    seen: list[float] = []

    def cancel_late(fraction: float, stage: str) -> None:
        seen.append(fraction)
        if fraction > 0.5:
            raise Cancelled("cancelled")

    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        separate_file(song_file, OutputOptions(out), engine="builtin", progress=cancel_late)
    assert list(out.iterdir()) == []
    assert seen == sorted(seen)


@pytest.mark.usefixtures("tiny_blocks")
def test_the_publish_hook_sees_the_streamed_files_before_they_appear(tmp_path: Path, song_file: Path) -> None:
    out = tmp_path / "out"
    planned = []

    def hook(staged: Sequence[object]) -> None:
        planned.extend(staged)
        assert not [p for p in out.iterdir() if not p.name.startswith(".")]

    result = separate_file(song_file, OutputOptions(out), engine="builtin", on_publish=hook)
    assert [s.target for s in planned] == [o.path for o in result.outputs]  # type: ignore[attr-defined]
    assert _hidden(out) == []


@pytest.mark.parametrize(("fmt", "depth"), [("wav", 16), ("wav", 24), ("wav", 32), ("aiff", 24)])
def test_a_file_written_in_blocks_equals_one_written_whole(
    tmp_path: Path, song_mix: np.ndarray, fmt: str, depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    class Frozen(datetime):
        """The bext chunk stamps the time it is written: both files get the same second."""

        @classmethod
        def now(cls, tz: object = None) -> Frozen:  # type: ignore[override]
            return cls(2026, 12, 7, 11, 30, 0)

    monkeypatch.setattr(bwf, "datetime", Frozen)
    ext = "wav" if fmt == "wav" else "aif"
    position = 12345 if fmt == "wav" else None
    whole = write_audio(
        tmp_path / f"whole.{ext}", song_mix, SR, fmt=fmt, bit_depth=depth, position=position, description="d"
    )
    writer = StreamWriter(
        tmp_path / f"streamed.{ext}", 2, SR, fmt=fmt, bit_depth=depth, position=position, description="d"
    )
    for start in range(0, song_mix.shape[-1], 10007):
        writer.write(song_mix[:, start : start + 10007])
    temp = writer.finish()
    assert temp.name.startswith(f".streamed.{ext}.stembridge-")
    if fmt == "wav":
        assert temp.read_bytes() == whole.read_bytes()
    else:
        assert np.array_equal(_read(temp), _read(whole))


def test_to_float_keeps_what_was_written(tmp_path: Path, song_mix: np.ndarray) -> None:
    writer = StreamWriter(tmp_path / "x.wav", 2, SR, bit_depth=16, position=0)
    half = song_mix.shape[-1] // 2
    writer.write(song_mix[:, :half])
    temp = writer.temp
    writer.to_float()
    writer.write(song_mix[:, half:] * 2.0)
    assert writer.finish() == temp
    data = _read(temp)
    assert sf.info(str(temp)).subtype == "FLOAT"
    assert data.shape == song_mix.shape
    assert np.max(np.abs(data[:, :half] - song_mix[:, :half])) <= 2.0**-15
    assert np.array_equal(data[:, half:], song_mix[:, half:] * 2.0)
    assert [p.name for p in tmp_path.iterdir()] == [temp.name]  # the 16-bit file was replaced, not left


def test_level_is_the_mean_and_deviation_of_the_mono_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    audio = (0.3 + 0.1 * rng.standard_normal((2, 4000))).astype(np.float32)
    path = tmp_path / "n.wav"
    sf.write(str(path), audio.T, SR, subtype="FLOAT")
    monkeypatch.setattr("bridge.audio.blocks._READ_FRAMES", 777)  # several blocks
    with AudioSource(path, Section(0.01, 0.1)) as source:
        level = Level(*source.level())
        assert source.frames == round(0.1 * SR)
    mono = audio[:, 441:].mean(axis=0, dtype=np.float64)
    mono = np.concatenate([mono, np.zeros(source.frames - mono.size)])  # the section runs past the end
    assert level.mean == pytest.approx(mono.mean(), rel=1e-9)
    assert level.std == pytest.approx(mono.std(ddof=1), rel=1e-9)


def test_engines_without_blocks_are_fed_whole(
    tmp_path: Path, song_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "STREAM_ABOVE_SECONDS", 0.0)
    monkeypatch.setattr(BuiltinEngine, "block_plan", lambda self, rate: None)
    seen = []
    real = BuiltinEngine.separate

    def whole(
        self: BuiltinEngine,
        audio: np.ndarray,
        rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        seen.append(audio.shape)
        return real(self, audio, rate, stems, progress)

    monkeypatch.setattr(BuiltinEngine, "separate", whole)
    separate_file(song_file, OutputOptions(tmp_path / "out"), engine="builtin", stems=["bass"])
    assert seen == [(2, sf.info(str(song_file)).frames)]


@pytest.mark.usefixtures("tiny_blocks")
def test_a_separation_with_midi_is_estimated_whole(tmp_path: Path, song_file: Path) -> None:
    """With ``midi`` the input is read whole (transcription needs each stem), and the daemon's memory estimate
    must say so: the streamed estimate would let a job through that then holds the whole song."""
    engine = BuiltinEngine()
    options = OutputOptions(tmp_path / "out")
    streamed = pipeline.separation_memory(engine, song_file, 4, options)
    whole = pipeline.separation_memory(engine, song_file, 4, options, midi=True)
    with AudioSource(song_file) as source:
        frames, channels = source.frames, source.channels
    assert whole == frames * max(2, channels) * 4 * (2 * 4 + 4)  # float32: input and stems twice over
    assert streamed < whole / 2
