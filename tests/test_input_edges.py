"""Inputs at the edges, through the CLI, the pipeline and the daemon: material too loud to level against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.loudness import integrated_loudness, true_peak
from bridge.audio.post import LOUDEST_REFERENCE_LUFS, loudness_target
from bridge.cli import main
from tests import synth

SR = synth.SR
CEILING = 10 ** (-1.0 / 20)  # finish()'s ceiling, -1 dBFS, for sample and true peaks
LSB = 2.0**-23  # a 24-bit file may round a sample at the ceiling up by half a step


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def square(seconds: float, freq: float = 110.0, amp: float = 1.0) -> np.ndarray:
    """A stereo square wave ``[2, T]`` at ``amp`` (1.0: full scale)."""
    t = np.arange(int(seconds * SR)) / SR
    wave = amp * np.sign(np.sin(2 * np.pi * freq * t) + 1e-9)
    return np.stack([wave, wave]).astype(np.float32)


def write(path: Path, audio: np.ndarray, subtype: str = "FLOAT", sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, sr, subtype=subtype)
    return path


def outputs(out: str) -> list[Path]:
    return [Path(o["path"]) for o in json.loads(out)["outputs"]]


def assert_levelled(path: Path) -> None:
    """Written, finite, at a sensible level: sample and true peaks under -1 dBFS, no louder than a master."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = data.T
    assert audio.shape[1] > 0 and np.all(np.isfinite(audio))
    assert np.max(np.abs(audio)) <= CEILING + LSB
    assert true_peak(audio, sr) <= CEILING + LSB
    assert -40.0 < integrated_loudness(audio, sr) <= LOUDEST_REFERENCE_LUFS + 0.1


# ------------------------------------------------------------------------------------------ loud material


def test_loudness_targets_stay_in_the_measurable_range() -> None:
    assert loudness_target(-14.0, 3.0) == -17.0
    assert loudness_target(2.04) == LOUDEST_REFERENCE_LUFS  # a full-scale square wave
    assert loudness_target(10.5, 3.0) == LOUDEST_REFERENCE_LUFS - 3.0  # 64 context files summed
    assert loudness_target(-65.0, 8.0) == -70.0  # a pad under a whisper
    assert loudness_target(float("-inf"), 3.0) is None  # silence: nothing to match


def test_vary_of_a_full_scale_square_wave_is_levelled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = write(tmp_path / "in" / "square.wav", square(2.0), subtype="PCM_16")
    code, out, err = run(
        capsys, "vary", str(source), "--variations", "2", "--out", str(tmp_path / "out"), "--json", "-q"
    )
    assert code == 0, err
    paths = outputs(out)
    assert len(paths) == 2
    for path in paths:
        assert_levelled(path)


def test_generate_under_a_context_peaking_at_plus_6_dbfs_is_levelled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    t = np.arange(2 * SR) / SR
    tone = 2.0 * np.sin(2 * np.pi * 110 * t)  # +6 dBFS, as a float file holds it: about +5 LUFS
    hot = np.stack([tone, tone])
    context = write(tmp_path / "in" / "hot.wav", hot)
    code, out, err = run(
        capsys, "generate", "--stem", "bass", "--context", str(context), "--bpm", "120", "--bars", "2",
        "--out", str(tmp_path / "out"), "--json", "-q",
    )  # fmt: skip
    assert code == 0, err
    [path] = outputs(out)
    assert_levelled(path)


def test_generate_under_64_context_files_is_levelled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    contexts = []
    for k in range(64):  # 64 parts at -6 dBFS each: their sum measures about +10 LUFS
        tone = 0.5 * np.sin(2 * np.pi * synth.midi_hz(45 + k % 24) * t + rng.uniform(0, 2 * np.pi))
        contexts.append(str(write(tmp_path / "in" / f"part{k:02d}.wav", np.stack([tone, tone]))))
    code, out, err = run(
        capsys, "generate", "--stem", "drums", "--context", *contexts, "--bpm", "120", "--bars", "1",
        "--out", str(tmp_path / "out"), "--json", "-q",
    )  # fmt: skip
    assert code == 0, err
    [path] = outputs(out)
    assert_levelled(path)


def test_a_pad_under_a_whisper_quiet_context_is_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The other end: 8 LU under a context at -65 LUFS is below what BS.1770 measures (-70)."""
    t = np.arange(2 * SR) / SR
    tone = np.sin(2 * np.pi * 220 * t)
    tone *= 10 ** ((-65.0 - integrated_loudness(np.stack([tone, tone]).astype(np.float32), SR)) / 20)
    context = write(tmp_path / "in" / "whisper.wav", np.stack([tone, tone]))
    code, out, err = run(
        capsys, "generate", "--stem", "pad", "--context", str(context), "--bpm", "120", "--bars", "1",
        "--out", str(tmp_path / "out"), "--json", "-q",
    )  # fmt: skip
    assert code == 0, err
    [path] = outputs(out)
    data, _ = sf.read(path, dtype="float32")
    assert np.all(np.isfinite(data)) and 0.0 < np.max(np.abs(data)) <= CEILING + LSB
