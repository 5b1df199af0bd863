"""Inputs at the edges, through the CLI, the pipeline and the daemon: material too loud to level against, files
cut shorter than their headers say (and streamed ones that state no length), and parts too short to vary."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.headers import truncation
from bridge.audio.io import read_audio
from bridge.audio.loudness import integrated_loudness, true_peak
from bridge.audio.post import LOUDEST_REFERENCE_LUFS, loudness_target
from bridge.cli import main
from bridge.config import Settings
from bridge.engines.builtin.vary import vary
from bridge.errors import AudioReadError, InvalidArgument
from bridge.pipeline import OutputOptions, vary_file
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.hotfolder_drops import audio_problem
from tests import synth
from tests.test_daemon import OscPeer, no_leaked_threads  # noqa: F401 - fails a test that leaks threads

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


# ------------------------------------------------------------------------------- cut short, or streamed

RATE = 8000  # small files; the sizes are what these tests are about


def chunks(data: bytes) -> dict[bytes, int]:
    """Offset of each top-level chunk header of a RIFF file."""
    found, pos = {}, 12
    while pos + 8 <= len(data):
        found[data[pos : pos + 4]] = pos
        pos += 8 + struct.unpack("<I", data[pos + 4 : pos + 8])[0]
    return found


def real_wav(path: Path, seconds: float) -> bytes:
    """A 24-bit stereo WAV of a chord, ``seconds`` long; returns its bytes."""
    t = np.arange(int(round(seconds * RATE))) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
    write(path, np.stack([tone, 0.8 * tone]), subtype="PCM_24", sr=RATE)
    return path.read_bytes()


def with_sizes(data: bytes, riff: int, data_size: int) -> bytes:
    out = bytearray(data)
    out[4:8] = struct.pack("<I", riff)
    at = chunks(data)[b"data"] + 4
    out[at : at + 4] = struct.pack("<I", data_size)
    return bytes(out)


@pytest.fixture()
def cut_wav(tmp_path: Path) -> Path:
    """A WAV whose header says 8 s and whose data holds 2.7 s: the end of the file is missing."""
    path = tmp_path / "in" / "cut.wav"
    data = real_wav(path, 8.0)
    path.write_bytes(data[: chunks(data)[b"data"] + 8 + int(2.7 * RATE) * 6])
    return path


@pytest.fixture()
def lying_wav(tmp_path: Path) -> Path:
    """A whole 2.7 s WAV whose RIFF and data sizes were rewritten to promise 8 s."""
    path = tmp_path / "in" / "lying.wav"
    data = real_wav(path, 2.7)
    promised = (8 * RATE - int(2.7 * RATE)) * 6  # bytes of the 5.3 s it lacks
    path.write_bytes(with_sizes(data, len(data) - 8 + promised, 8 * RATE * 6))
    return path


NOTE = "it is shorter than its header says (2.7 of 8.0 s); used what it holds (export or copy it again for the rest)"


@pytest.mark.parametrize("which", ["cut_wav", "lying_wav"])
def test_a_wav_shorter_than_its_header_is_used_with_a_note(
    which: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path: Path = request.getfixturevalue(which)
    note = f"{path.name}: {NOTE}"
    assert truncation(path) == "it is shorter than its header says (2.7 of 8.0 s)"
    assert audio_problem(path) == truncation(path)  # the hot folder's check is the same one
    out_dir = str(tmp_path / "out")
    code, out, err = run(capsys, "vary", str(path), "--variations", "1", "--out", out_dir, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["warnings"] == [note]
    assert result["outputs"][0]["samples"] == int(2.7 * RATE)  # what it holds, to the sample
    assert f"stembridge vary: note: {note}" in err.splitlines()
    code, out, err = run(capsys, "separate", str(path), "--stems", "bass", "--out", out_dir)
    assert code == 0 and f"stembridge separate: note: {note}" in err.splitlines()
    code, out, err = run(
        capsys, "generate", "--stem", "bass", "--context", str(path), "--bpm", "120", "--bars", "1",
        "--out", out_dir, "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["warnings"] == [note]


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_a_streamed_wav_is_read_to_its_end_without_a_note(
    placeholder: int, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "in" / "streamed.wav"
    data = real_wav(path, 1.5)
    whole, _ = read_audio(path)
    path.write_bytes(with_sizes(data, placeholder, placeholder))  # what a writer that never seeks back leaves
    audio, rate = read_audio(path)
    assert rate == RATE and np.array_equal(audio, whole)  # read to its end
    assert truncation(path) is None and audio_problem(path) is None
    code, out, err = run(
        capsys, "vary", str(path), "--variations", "1", "--out", str(tmp_path / "out"), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert "warnings" not in result and "note" not in err
    assert result["outputs"][0]["samples"] == whole.shape[1]
    # the block reader (separate, the daemon's memory estimate) reads it to its end too
    from bridge.audio.blocks import AudioSource

    with AudioSource(path) as source:
        assert source.frames == whole.shape[1] and np.array_equal(source.read(0, source.frames), whole)
    code, out, err = run(capsys, "separate", str(path), "--out", str(tmp_path / "stems"), "--json")
    assert code == 0, err
    assert {o["samples"] for o in json.loads(out)["outputs"]} == {whole.shape[1]}


def test_an_empty_wav_whose_sizes_add_up_is_still_empty(tmp_path: Path) -> None:
    """A data size of 0 is a placeholder only when the RIFF size does not count what follows it."""
    path = tmp_path / "in" / "empty.wav"
    data = real_wav(path, 0.5)
    start = chunks(data)[b"data"]
    trailer = b"LIST" + struct.pack("<I", 4) + b"INFO"
    empty = data[: start + 4] + struct.pack("<I", 0) + trailer
    path.write_bytes(empty[:4] + struct.pack("<I", len(empty) - 8) + empty[8:])
    with pytest.raises(AudioReadError, match="holds no audio"):
        read_audio(path)


# ----------------------------------------------------------------------------------------- too short to vary

TOO_SHORT = (
    "audio of 40 samples (0.91 ms at 44100 Hz) is too short to vary: it needs at least 44 samples (1 ms)"
)


def test_the_builtin_engine_needs_one_millisecond() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgument, match=r"^" + TOO_SHORT.replace("(", r"\(").replace(")", r"\)")):
        vary(rng.uniform(-0.5, 0.5, (2, 40)).astype(np.float32), SR, 1, 0.5, seed=0)
    for frames in (1, 43):
        with pytest.raises(InvalidArgument, match=f"audio of {frames} samples"):
            vary(rng.uniform(-0.5, 0.5, (2, frames)).astype(np.float32), SR, 2, 1.0, seed=1)
    for frames in (44, 45, 90):  # the minimum works, whatever the seed and strength
        for seed in range(3):
            x = rng.uniform(-0.5, 0.5, (2, frames)).astype(np.float32)
            outs = vary(x, SR, 2, 1.0, seed=seed)
            assert [o.shape for o in outs] == [x.shape] * 2 and all(np.isfinite(o).all() for o in outs)
    tiny = rng.uniform(-0.5, 0.5, (2, 40)).astype(np.float32)
    assert all(np.array_equal(o, tiny) for o in vary(tiny, SR, 2, 0.0, seed=0))  # strength 0 copies it


@pytest.fixture()
def tiny_wav(tmp_path: Path) -> Path:
    return write(tmp_path / "in" / "tiny.wav", square(40 / SR), subtype="PCM_16")


def test_vary_of_40_samples_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tiny_wav: Path, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "vary", str(tiny_wav), "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err == f"stembridge vary: error: {TOO_SHORT}; give a longer part\n"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    with pytest.raises(InvalidArgument, match="too short to vary"):
        vary_file(tiny_wav, OutputOptions(tmp_path / "out"), variations=1, engine="builtin")


# ----------------------------------------------------------------------------------------------- the daemon


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[DaemonThread]:
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    with DaemonThread(settings, discovery=False) as d:
        yield d


@pytest.fixture()
def peer(daemon: DaemonThread) -> Iterator[OscPeer]:
    p = OscPeer(daemon.port)
    yield p
    p.close()


def test_the_daemon_notes_a_cut_file_in_its_made_reply(peer: OscPeer, cut_wav: Path) -> None:
    peer.request(protocol.VARY, "v1", str(cut_wav), "variations", 1)
    address, made = peer.wait_for("v1", protocol.MADE, protocol.ERROR)
    assert address == protocol.MADE and made == ["v1", "builtin", "builtin", f"cut.wav: {NOTE}"]
    assert peer.wait_for("v1", protocol.DONE, protocol.ERROR)[0] == protocol.DONE


def test_the_daemon_refuses_a_part_too_short_to_vary(peer: OscPeer, tiny_wav: Path) -> None:
    peer.request(protocol.VARY, "v2", str(tiny_wav), "variations", 1)
    address, error = peer.wait_for("v2", protocol.ERROR, protocol.DONE)
    assert address == protocol.ERROR
    assert error == ["v2", "invalid_argument", f"{TOO_SHORT}; give a longer part"]
