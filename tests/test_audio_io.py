"""Audio I/O: reading every format, resampling, channel conforming, atomic WAV/AIFF writing, BWF bext."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from scipy.io import wavfile

from bridge.audio import bwf
from bridge.audio import inputs as audio_inputs
from bridge.audio import io as audio_io
from bridge.audio import writer as audio_writer
from bridge.audio.bwf import make_bext, parse_bext, read_bext
from bridge.audio.io import check_audio, conform_channels, read_audio, resample
from bridge.audio.writer import Publisher, write_audio, write_audio_unique
from bridge.errors import AudioReadError, AudioWriteError, InvalidArgument
from bridge.termination import Terminated
from tests.fifo import make_fifo, without_blocking
from tests.synth import faded_sine


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5, channels: int = 2) -> np.ndarray:
    """Unfaded sine ``[channels, T]`` float32 (exact phase, for comparing against a resampled copy)."""
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None, :], channels, axis=0).astype(np.float32)


def full_scale_noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    """Uniform noise in [-0.999, 0.999], plus one sample at exactly +1 and one at -1."""
    x = np.random.default_rng(seed).uniform(-0.999, 0.999, (channels, frames)).astype(np.float32)
    x[:, 0], x[:, 1] = 1.0, -1.0
    return x


def chunks(path: Path) -> list[tuple[bytes, int, int]]:
    """``(id, offset of data, size)`` of each top-level RIFF chunk."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    out, pos = [], 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
        out.append((cid, pos + 8, size))
        pos += 8 + size + (size & 1)
    assert pos == len(raw)
    return out


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sr / x.size)


# ------------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize(
    ("bit_depth", "subtype", "max_error"),
    [(16, "PCM_16", 2**-15), (24, "PCM_24", 2**-23), (32, "FLOAT", 0.0)],
)
def test_wav_round_trip(
    tmp_path: Path, channels: int, bit_depth: int, subtype: str, max_error: float
) -> None:
    audio = full_scale_noise(channels, 4001)
    path = write_audio(tmp_path / "x.wav", audio, 48000, bit_depth=bit_depth)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, channels, 4001, subtype)
    back, rate = read_audio(path)
    assert rate == 48000 and back.shape == audio.shape and back.dtype == np.float32
    assert np.abs(back - audio).max() <= max_error
    if bit_depth != 32:  # away from +1.0 (which clips to the top code) rounding is within half a step
        assert np.abs(back - audio)[:, 2:].max() <= 2.0**-bit_depth
    # A second, independent reader (scipy's RIFF parser) decodes the same samples.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wavfile.WavFileWarning)  # it skips the chunks it does not know
        rate2, data = wavfile.read(path)
    scale = {16: 2.0**15, 24: 2.0**31, 32: 1.0}[bit_depth]  # scipy left-justifies 24-bit samples in int32
    assert rate2 == 48000
    np.testing.assert_array_equal(np.atleast_2d(data.T) / scale, back)
    fmt_id, fmt_at, fmt_size = chunks(path)[0]
    tag = struct.unpack("<H", path.read_bytes()[fmt_at : fmt_at + 2])[0]
    assert fmt_id == b"fmt "
    assert tag == (0xFFFE if channels > 2 else (3 if bit_depth == 32 else 1))
    assert fmt_size == (40 if channels > 2 else (18 if bit_depth == 32 else 16))


@pytest.mark.parametrize(
    ("bit_depth", "subtype", "max_error"),
    [(16, "PCM_16", 2**-15), (24, "PCM_24", 2**-23), (32, "FLOAT", 0.0)],
)
def test_aiff_round_trip(tmp_path: Path, bit_depth: int, subtype: str, max_error: float) -> None:
    audio = full_scale_noise(2, 3000, seed=1)
    path = write_audio(tmp_path / "x.aif", audio, 44100, fmt="aiff", bit_depth=bit_depth, position=1000)
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.frames, info.channels) == ("AIFF", subtype, 3000, 2)
    back, rate = read_audio(path)
    assert rate == 44100 and np.abs(back - audio).max() <= max_error
    assert read_bext(path) is None  # AIFF cannot carry a position


@pytest.mark.parametrize("fmt", ["wav", "aiff"])
def test_integer_formats_clip_instead_of_wrapping(tmp_path: Path, fmt: str) -> None:
    audio = np.array([[1.5, -2.0, 0.25, 1.0000001]], dtype=np.float32)
    back, _ = read_audio(
        write_audio(tmp_path / f"x.{'aif' if fmt == 'aiff' else 'wav'}", audio, 8000, fmt=fmt)
    )
    np.testing.assert_allclose(back[0], [1 - 2**-23, -1.0, 0.25, 1 - 2**-23], atol=0)


def test_bext_written_with_position_in_96k_file(tmp_path: Path) -> None:
    audio = faded_sine(1000.0, 0.05, sr=96000)[None, :].repeat(2, axis=0)
    position = 96000 * 3600 * 14  # 14 h into the timeline: needs TimeReferenceHigh
    path = write_audio(tmp_path / "bass.wav", audio, 96000, position=position, description="bass, bar 9")
    ids = [c[0] for c in chunks(path)]
    assert ids == [b"fmt ", b"bext", b"data"]  # bext after fmt, before data
    bext = read_bext(path)
    assert bext is not None
    assert bext["time_reference"] == position and position > 2**32
    assert bext["description"] == "bass, bar 9" and bext["originator"] == "stembridge"
    assert bext["version"] == 1
    assert bext["coding_history"] == "A=PCM,F=96000,W=24,M=stereo,T=stembridge\r\n"
    back, rate = read_audio(path)
    assert rate == 96000 and back.shape == audio.shape


def test_bext_position_zero_is_written_and_no_position_means_no_bext(tmp_path: Path) -> None:
    audio = full_scale_noise(1, 100)
    at_zero = read_bext(write_audio(tmp_path / "zero.wav", audio, 44100, position=0))
    assert at_zero is not None and at_zero["time_reference"] == 0
    plain = write_audio(tmp_path / "plain.wav", audio, 44100)
    assert read_bext(plain) is None
    assert [c[0] for c in chunks(plain)] == [b"fmt ", b"data"]


def test_bext_byte_layout() -> None:
    from datetime import datetime

    position = (7 << 32) + 123456
    data = make_bext(
        position, "desc", originator="orig", originator_reference="ref", when=datetime(2024, 5, 6, 7, 8, 9)
    )
    assert len(data) % 2 == 0 and len(data) >= 602
    assert data[0:4] == b"desc" and data[4:256] == bytes(252)
    assert data[256:260] == b"orig" and data[288:291] == b"ref"
    assert data[320:330] == b"2024-05-06" and data[330:338] == b"07-08-09"
    assert struct.unpack("<II", data[338:346]) == (123456, 7)
    assert struct.unpack("<H", data[346:348]) == (1,)
    assert data[348:602] == bytes(254)  # UMID, v2 loudness (unused in v1), reserved
    parsed = parse_bext(data)
    assert (
        parsed["time_reference"] == position
        and parsed["date"] == "2024-05-06"
        and parsed["time"] == "07-08-09"
    )


def test_bext_version_2_loudness_round_trip() -> None:
    data = make_bext(48000, loudness={"loudness_value": -23.0, "max_true_peak_level": -1.04})
    assert struct.unpack("<H", data[346:348]) == (2,)
    assert struct.unpack("<5h", data[412:422]) == (-2300, 0x7FFF, -104, 0x7FFF, 0x7FFF)
    parsed = parse_bext(data)
    assert parsed["version"] == 2
    assert parsed["loudness"]["loudness_value"] == -23.0 and parsed["loudness"]["loudness_range"] is None


def test_bext_text_is_cut_to_its_field_and_bad_position_is_refused() -> None:
    parsed = parse_bext(make_bext(0, "é" * 300))
    assert parsed["description"] == "é" * 128  # 256 bytes of UTF-8, never half a character
    with pytest.raises(InvalidArgument, match="position must be between 0 and 2\\*\\*64-1 samples, got -1"):
        make_bext(-1)
    with pytest.raises(InvalidArgument, match="position must be a whole number of samples, got 1.5"):
        make_bext(1.5)  # type: ignore[arg-type]


SOX_REQUIRED = bool(os.environ.get("CI"))


@pytest.mark.skipif(
    shutil.which("sox") is None and not SOX_REQUIRED, reason="sox is not installed (set CI=1 to require it)"
)
@pytest.mark.parametrize(
    ("channels", "bit_depth", "encoding"),
    [(2, 24, "Signed Integer"), (6, 24, "Signed Integer"), (1, 32, "Floating Point")],
)
def test_sox_reads_our_wav(tmp_path: Path, channels: int, bit_depth: int, encoding: str) -> None:
    """An independent reader (sox) accepts the BWF file and decodes the same samples."""
    if shutil.which("sox") is None:
        pytest.fail("sox is required when CI is set: install it (apt-get install -y sox)")
    audio = full_scale_noise(channels, 22050, seed=3) * np.float32(0.9)
    path = write_audio(
        tmp_path / "x.wav", audio, 44100, bit_depth=bit_depth, position=88200, description="sox check"
    )

    def soxi(flag: str) -> str:
        return subprocess.run(
            ["soxi", flag, str(path)], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert (soxi("-r"), soxi("-c"), soxi("-s"), soxi("-b")) == (
        "44100",
        str(channels),
        "22050",
        str(bit_depth),
    )
    assert encoding in soxi("-e")
    raw = subprocess.run(
        ["sox", str(path), "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"],
        capture_output=True,
        check=True,
    ).stdout
    decoded = np.frombuffer(raw, dtype="<f4").reshape(-1, channels).T
    assert decoded.shape == audio.shape
    assert np.abs(decoded - audio).max() <= 2**-23


def test_no_overwrite_leaves_existing_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "take.wav"
    path.write_bytes(b"precious")
    with pytest.raises(AudioWriteError, match=re.escape(f"{path} already exists; choose another name")):
        write_audio(path, full_scale_noise(2, 100), 44100)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]
    write_audio(path, full_scale_noise(2, 100), 44100, overwrite=True)
    assert sf.info(str(path)).frames == 100


def test_unique_names(tmp_path: Path) -> None:
    written = [
        write_audio_unique(tmp_path / "drums.wav", full_scale_noise(1, 10 + i), 44100) for i in range(3)
    ]
    assert [p.name for p in written] == ["drums.wav", "drums-2.wav", "drums-3.wav"]
    assert [sf.info(str(p)).frames for p in written] == [10, 11, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drums-2.wav", "drums-3.wav", "drums.wav"]


def test_a_folder_with_an_outputs_name_gets_the_next_free_name(tmp_path: Path) -> None:
    for taken in ("take.wav", "take-2.wav"):  # folders that happen to have the names
        (tmp_path / taken).mkdir()
    written = write_audio_unique(tmp_path / "take.wav", full_scale_noise(1, 10), 44100)
    assert written == tmp_path / "take-3.wav" and sf.info(str(written)).frames == 10
    with Publisher() as pub:  # a job's set of files: the one whose name is a folder is numbered, the rest not
        pub.add(tmp_path / "take.wav", full_scale_noise(1, 11), 44100)
        pub.add(tmp_path / "other.wav", full_scale_noise(1, 12), 44100)
        assert [p.name for p in pub.publish()] == ["take-4.wav", "other.wav"]
    assert sf.info(str(tmp_path / "take-4.wav")).frames == 11
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["take-2.wav", "take.wav"]
    assert not list((tmp_path / "take.wav").iterdir()) and hidden(tmp_path) == []
    with pytest.raises(AudioWriteError, match=re.escape(f"{tmp_path / 'take.wav'} is a folder; give a file")):
        write_audio(tmp_path / "take.wav", full_scale_noise(1, 10), 44100)  # no numbering asked for


def test_unique_names_race_free(tmp_path: Path) -> None:
    results: list[Path] = []
    lock = threading.Lock()

    def job(i: int) -> None:
        p = write_audio_unique(tmp_path / "v.wav", full_scale_noise(1, 100 + i), 44100)
        with lock:
            results.append(p)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in results}) == 6
    assert sorted(sf.info(str(p)).frames for p in results) == list(range(100, 106))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = bwf._encode
    calls = []

    def failing_encode(block: np.ndarray, bit_depth: int, is_float: bool) -> bytes:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_encode(block, bit_depth, is_float)

    monkeypatch.setattr(bwf, "_encode", failing_encode)
    out = tmp_path / "out"
    with pytest.raises(
        AudioWriteError, match=re.escape(f"disk full writing {out / 'big.wav'}; free some space")
    ):
        write_audio(out / "big.wav", full_scale_noise(2, 3 * bwf._BLOCK_FRAMES), 44100)
    assert len(calls) == 2  # it failed after part of the data was on disk
    assert list(out.iterdir()) == []  # the folder was created, and no temp file is left in it


def test_unexpected_exception_mid_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(block: np.ndarray, bit_depth: int, is_float: bool) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(bwf, "_encode", boom)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "x.wav", full_scale_noise(2, 10), 44100)
    assert list(tmp_path.iterdir()) == []


def test_publish_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(audio_writer.os, "link", no_links)
    path = write_audio(tmp_path / "fat.wav", full_scale_noise(2, 50), 44100)
    assert sf.info(str(path)).frames == 50
    with pytest.raises(AudioWriteError, match="already exists"):
        write_audio(path, full_scale_noise(2, 60), 44100)
    assert sf.info(str(path)).frames == 50
    assert write_audio_unique(path, full_scale_noise(2, 70), 44100).name == "fat-2.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat-2.wav", "fat.wav"]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_publisher_encodes_all_then_reserves_then_publishes(tmp_path: Path) -> None:
    (tmp_path / "b.wav").write_bytes(b"someone else's")
    audio = {name: full_scale_noise(2, 100 + i, seed=i) for i, name in enumerate(("a.wav", "b.wav", "c.aif"))}
    with Publisher() as pub:
        for name, data in audio.items():
            pub.add(tmp_path / name, data, 44100, fmt="aiff" if name.endswith("aif") else "wav", bit_depth=32)
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["b.wav"]
        assert len(hidden(tmp_path)) == 3  # three encoded temp files, nothing visible yet
        planned = pub.reserve()
        assert [s.target.name for s in planned] == ["a.wav", "b-2.wav", "c.aif"]
        assert all(s.claim is not None and s.claim.read_text() == f"{os.getpid()}\n" for s in planned)
        assert not any(s.target.exists() for s in planned)  # reserved, still not visible
        paths = pub.publish()
    assert paths == [s.target for s in planned]
    for staged, data in zip(planned, audio.values(), strict=True):
        assert os.stat(staged.target).st_ino == staged.inode  # what the journal's plan identifies it by
        back, _ = sf.read(staged.target, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(back.T, data)
    assert hidden(tmp_path) == [] and (tmp_path / "b.wav").read_bytes() == b"someone else's"
    record = planned[0].to_dict()
    assert record == {
        "path": str(tmp_path / "a.wav"),
        "temp": str(planned[0].temp),
        "claim": str(tmp_path / ".a.wav.stembridge-claim"),
        "inode": planned[0].inode,
        "pid": os.getpid(),
    }


def test_a_failing_publish_removes_what_the_set_already_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = audio_writer._publish, []

    def fail_second(tmp: Path, target: Path, overwrite: bool, held: Any = None) -> bool:
        calls.append(target.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tmp, target, overwrite, held)

    monkeypatch.setattr(audio_writer, "_publish", fail_second)
    with pytest.raises(AudioWriteError, match=re.escape(f"disk full writing {tmp_path / 'b.wav'}")):
        with Publisher() as pub:
            for name in ("a.wav", "b.wav", "c.wav"):
                pub.add(tmp_path / name, full_scale_noise(1, 50), 44100)
            pub.publish()
    assert calls == ["a.wav", "b.wav"]
    assert list(tmp_path.iterdir()) == []  # a.wav removed again; no temp file or claim left


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), Terminated(signal.SIGTERM)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_right_after_a_link_still_publishes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    """Ctrl-C or SIGTERM can raise after ``os.link`` made a file and before the publisher recorded it: that file
    must go with the others (all or none), and a file another program put at a reserved name must stay."""
    real_link, linked = os.link, []

    def link_then_stop(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_link(src, dst, *args, **kwargs)
        linked.append(Path(dst).name)
        if len(linked) == 2:
            raise stop

    monkeypatch.setattr(audio_writer.os, "link", link_then_stop)
    with pytest.raises(type(stop)):
        with Publisher() as pub:
            for name in ("a.wav", "b.wav", "c.wav"):
                pub.add(tmp_path / name, full_scale_noise(1, 50), 44100)
            pub.publish()
    assert linked == ["a.wav", "b.wav"]
    assert list(tmp_path.iterdir()) == []  # a.wav and b.wav removed again; no temp file or claim left

    (tmp_path / "b.wav").write_bytes(b"someone else's")  # taken between the reservation and the link
    linked.clear()

    def taken_then_stop(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        linked.append(Path(dst).name)
        if len(linked) == 2:
            raise stop
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(audio_writer.os, "link", taken_then_stop)
    with pytest.raises(type(stop)):
        with Publisher() as pub:
            pub.add(tmp_path / "a.wav", full_scale_noise(1, 50), 44100)
            pub.add(tmp_path / "c.wav", full_scale_noise(1, 50), 44100)
            planned = pub.reserve()
            os.rename(tmp_path / "b.wav", planned[1].target)  # another program ignores the claim
            pub.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.wav"]
    assert (tmp_path / "c.wav").read_bytes() == b"someone else's"


def test_claims_keep_two_sets_with_the_same_names_apart(tmp_path: Path) -> None:
    """Two jobs that reserve the same names before either publishes never get the same file."""
    both_reserved = threading.Barrier(2, timeout=10)
    results: dict[int, list[Path]] = {}

    def job(k: int) -> None:
        with Publisher() as pub:
            for name in ("x__drums.wav", "x__bass.wav"):
                pub.add(tmp_path / name, full_scale_noise(1, 100 + k, seed=k), 44100, bit_depth=32)
            pub.reserve()
            both_reserved.wait()
            results[k] = pub.publish()

    threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for paths in results.values() for p in paths)
    assert names == ["x__bass-2.wav", "x__bass.wav", "x__drums-2.wav", "x__drums.wav"]
    for k, paths in results.items():  # each file holds its own job's audio
        for path in paths:
            back, _ = sf.read(path, dtype="float32", always_2d=True)
            np.testing.assert_array_equal(back.T, full_scale_noise(1, 100 + k, seed=k))
    assert hidden(tmp_path) == []


def test_a_name_taken_after_its_reservation(tmp_path: Path) -> None:
    with Publisher() as pub:
        pub.add(tmp_path / "late.wav", full_scale_noise(1, 10), 44100)
        (target,) = (s.target for s in pub.reserve())
        target.write_bytes(b"another program")  # ignores claims
        with pytest.raises(
            AudioWriteError, match="was created by another program while stembridge was writing"
        ):
            pub.publish()  # the plan was handed on: publishing elsewhere would make it wrong
    assert target.read_bytes() == b"another program" and hidden(tmp_path) == []
    with Publisher() as pub:
        pub.add(tmp_path / "race.wav", full_scale_noise(1, 10), 44100)
        pub.reserve()
        (tmp_path / "race.wav").write_bytes(b"another program")
        assert [p.name for p in pub.publish(retry=True)] == ["race-2.wav"]  # nobody was told the plan
    assert (tmp_path / "race.wav").read_bytes() == b"another program" and hidden(tmp_path) == []


def test_a_reserved_name_counts_as_taken(tmp_path: Path) -> None:
    (tmp_path / ".take.wav.stembridge-claim").write_text("1\n")  # another job is publishing take.wav
    with pytest.raises(AudioWriteError, match=re.escape(f"{tmp_path / 'take.wav'} already exists")):
        write_audio(tmp_path / "take.wav", full_scale_noise(1, 10), 44100)
    assert write_audio_unique(tmp_path / "take.wav", full_scale_noise(1, 10), 44100).name == "take-2.wav"
    assert hidden(tmp_path) == [".take.wav.stembridge-claim"]  # its claim is left alone


def test_write_errors_name_the_folder_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(
        AudioWriteError, match=re.escape(f"{blocker} exists and is not a folder; choose another")
    ):
        write_audio(blocker / "x.wav", full_scale_noise(1, 10), 44100)
    with pytest.raises(AudioWriteError, match=re.escape(f"{tmp_path} is a folder; give a file name")):
        write_audio(tmp_path, full_scale_noise(1, 10), 44100, fmt="wav")

    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(audio_writer.os, "open", denied)
    with pytest.raises(
        AudioWriteError, match=re.escape(f"folder {tmp_path} is not writable; choose another output")
    ):
        write_audio(tmp_path / "x.wav", full_scale_noise(1, 10), 44100)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(AudioWriteError, match="is not writable"):
            write_audio(folder / "x.wav", full_scale_noise(1, 10), 44100)
    finally:
        folder.chmod(0o700)


def test_write_argument_errors(tmp_path: Path) -> None:
    audio = full_scale_noise(2, 10)
    with pytest.raises(InvalidArgument, match="bit_depth must be 16, 24 or 32 \\(32 = float\\), got 8"):
        write_audio(tmp_path / "x.wav", audio, 44100, bit_depth=8)
    with pytest.raises(InvalidArgument, match="output format must be 'wav' or 'aiff', got 'mp3'"):
        write_audio(tmp_path / "x.mp3", audio, 44100, fmt="mp3")
    with pytest.raises(InvalidArgument, match="file name x.wav does not match format 'aiff'; name it .aif"):
        write_audio(tmp_path / "x.wav", audio, 44100, fmt="aiff")
    with pytest.raises(InvalidArgument, match="^file name x.flac does not match format 'wav'; name it .wav$"):
        write_audio(tmp_path / "x.flac", audio, 44100)
    with pytest.raises(InvalidArgument, match="position must be a whole number of samples >= 0, got -5"):
        write_audio(tmp_path / "x.wav", audio, 44100, position=-5)
    with pytest.raises(
        InvalidArgument, match="sample rate must be a whole number between 1000 and 768000 Hz, got 0"
    ):
        write_audio(tmp_path / "x.wav", audio, 0)
    with pytest.raises(AudioWriteError, match="audio for x.wav contains NaN or infinite samples"):
        write_audio(tmp_path / "x.wav", np.full((2, 10), np.nan, dtype=np.float32), 44100)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [("FLAC", "PCM_24", "flac"), ("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")],
)
def test_read_compressed_formats(tmp_path: Path, fmt: str, subtype: str, suffix: str) -> None:
    source = np.stack([faded_sine(440.0, 1.0, amp=0.5), faded_sine(660.0, 1.0, amp=0.25)])
    path = tmp_path / f"x.{suffix}"
    sf.write(str(path), source.T, 44100, format=fmt, subtype=subtype)
    audio, rate = read_audio(path)
    assert rate == 44100 and audio.dtype == np.float32 and audio.shape[0] == 2
    assert abs(audio.shape[1] - 44100) < 3000  # MP3 adds encoder delay and padding
    assert abs(peak_hz(audio[0], rate) - 440.0) < 2.0 and abs(peak_hz(audio[1], rate) - 660.0) < 2.0
    rms = np.sqrt((audio**2).mean(axis=1))
    expected = np.sqrt((source**2).mean(axis=1))
    np.testing.assert_allclose(20 * np.log10(rms / expected), 0.0, atol=0.5)


def test_read_resamples_and_conforms(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "m.wav", sine(1000.0, 0.5, 44100, channels=1), 44100, bit_depth=32)
    audio, rate = read_audio(path, sample_rate=48000, channels=2)
    assert rate == 48000 and audio.shape == (2, 24000)
    np.testing.assert_array_equal(audio[0], audio[1])
    assert abs(peak_hz(audio[0], rate) - 1000.0) < 2.0


def test_read_errors_say_what_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioReadError, match=re.escape(f"audio file not found: {missing}; check the path")):
        read_audio(missing)
    with pytest.raises(
        AudioReadError, match=re.escape(f"{tmp_path} is a folder, not an audio file; give the path")
    ):
        read_audio(tmp_path)
    garbage = tmp_path / "song.wav"
    garbage.write_bytes(b"this is not a wave file at all" * 10)
    with pytest.raises(
        AudioReadError,
        match=re.escape(
            f"cannot read {garbage}: not a supported audio file or corrupt (no audio header); "
            "use WAV, AIFF, FLAC, MP3 or OGG"
        ),
    ):
        read_audio(garbage)
    text_mp3 = tmp_path / "notes.mp3"
    text_mp3.write_text("not an mp3 at all")
    with pytest.raises(
        AudioReadError, match=re.escape(f"cannot read {text_mp3}: not a supported audio file")
    ):
        read_audio(text_mp3)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(
        write_audio(tmp_path / "whole.wav", full_scale_noise(2, 100), 44100).read_bytes()[:30]
    )
    with pytest.raises(
        AudioReadError, match=re.escape(f"cannot read {truncated}: not a supported audio file or corrupt")
    ):
        read_audio(truncated)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(
        AudioReadError, match=re.escape(f"{empty} is an empty file (0 bytes); export the audio again")
    ):
        read_audio(empty)
    no_frames = tmp_path / "silent.wav"
    sf.write(str(no_frames), np.zeros((0, 2)), 44100, subtype="PCM_24")
    with pytest.raises(
        AudioReadError, match=re.escape(f"{no_frames} holds no audio (0 samples); export it again")
    ):
        read_audio(no_frames)
    nan = tmp_path / "nan.wav"
    sf.write(str(nan), np.array([[0.1, np.nan], [np.inf, 0.0]], dtype=np.float32), 44100, subtype="FLOAT")
    with pytest.raises(
        AudioReadError, match=re.escape(f"{nan} contains NaN or infinite samples; export or render it")
    ):
        read_audio(nan)

    def denied(*args: object, **kwargs: object) -> object:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(audio_inputs.os, "open", denied)  # input files are opened through bridge.audio.inputs
    with pytest.raises(
        AudioReadError, match=re.escape(f"permission denied reading {garbage}; make the file readable")
    ):
        read_audio(garbage)


def test_special_files_are_refused_before_they_are_opened(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path / "pipe.wav")
    message = f"{fifo} is not a regular file (it is a FIFO); give the path of an audio file"
    for read in (read_audio, read_bext, audio_io.probe_sample_rate):
        with pytest.raises(AudioReadError) as info:
            without_blocking([fifo], lambda read=read: read(fifo))  # type: ignore[misc]
        assert str(info.value) == message, read
    link = tmp_path / "link.wav"
    link.symlink_to(fifo)  # a link to a FIFO is no better
    with pytest.raises(AudioReadError, match=re.escape(f"{link} is not a regular file (it is a FIFO)")):
        without_blocking([fifo], lambda: read_audio(link))
    # a folder keeps its own message, and a regular file behind a link reads as before
    with pytest.raises(AudioReadError, match=re.escape(f"{tmp_path} is a folder, not an audio file")):
        read_audio(tmp_path)
    write_audio(tmp_path / "real.wav", full_scale_noise(1, 10), 44100)
    (tmp_path / "to-real.wav").symlink_to(tmp_path / "real.wav")
    assert read_audio(tmp_path / "to-real.wav")[0].shape == (1, 10)


def test_read_argument_errors(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "x.wav", full_scale_noise(2, 10), 44100)
    with pytest.raises(
        InvalidArgument, match="sample rate must be a whole number between 1000 and 768000 Hz, got 44100.5"
    ):
        read_audio(path, sample_rate=44100.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="channels must be a whole number between 1 and 64, got 0"):
        read_audio(path, channels=0)


def test_check_audio_messages() -> None:
    ok = check_audio(np.zeros((2, 5), dtype=np.float64), "ctx")
    assert ok.dtype == np.float32 and ok.shape == (2, 5)
    with pytest.raises(
        InvalidArgument,
        match=re.escape("ctx must be 2-D [channels, samples], got shape (5,); use audio[None, :]"),
    ):
        check_audio(np.zeros(5, dtype=np.float32), "ctx")
    with pytest.raises(
        InvalidArgument, match="ctx must have 1 to 64 channels, got 1000; pass audio.T if it is"
    ):
        check_audio(np.zeros((1000, 2), dtype=np.float32), "ctx")
    with pytest.raises(InvalidArgument, match="ctx must hold float samples in \\[-1, 1\\], got dtype int16"):
        check_audio(np.zeros((2, 5), dtype=np.int16), "ctx")
    with pytest.raises(AudioReadError, match=re.escape("ctx holds no audio (0 samples)")):
        check_audio(np.zeros((2, 0), dtype=np.float32), "ctx")
    with pytest.raises(AudioReadError, match="ctx contains NaN or infinite samples"):
        check_audio(np.array([[0.0, np.nan]], dtype=np.float32), "ctx")
    with pytest.raises(InvalidArgument, match="ctx must be a numpy array"):
        check_audio([[0.0]], "ctx")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- resample, channels


@pytest.mark.parametrize(
    ("sr_from", "sr_to"), [(44100, 48000), (48000, 44100), (48000, 96000), (96000, 44100), (22050, 8000)]
)
@pytest.mark.parametrize("frames", [1, 2, 1001, 44101])
def test_resample_length_is_exact(sr_from: int, sr_to: int, frames: int) -> None:
    out = resample(np.zeros((2, frames), dtype=np.float32), sr_from, sr_to)
    expected = int(np.floor(frames * sr_to / sr_from + 0.5))
    assert out.shape == (2, expected) and out.dtype == np.float32


def test_resample_preserves_a_sine() -> None:
    x44 = sine(1000.0, 1.0, 44100, amp=0.5)
    x48 = resample(x44, 44100, 48000)
    ideal = sine(1000.0, 1.0, 48000, amp=0.5)
    middle = slice(2000, -2000)  # away from the edges, where the signal starts/stops abruptly
    assert np.abs(x48 - ideal)[:, middle].max() < 1e-4
    assert abs(peak_hz(x48[0], 48000) - 1000.0) < 1.0
    back = resample(x48, 48000, 44100)
    assert back.shape == x44.shape
    assert np.abs(back - x44)[:, middle].max() < 1e-4


def test_resample_keeps_high_band_and_removes_aliases() -> None:
    kept = resample(sine(19000.0, 0.5, 48000, amp=0.5), 48000, 44100)
    level_db = 20 * np.log10(np.sqrt(2) * kept[:, 4000:-4000].std() / 0.5)
    assert abs(level_db) < 0.1  # 19 kHz passes at 44.1 kHz
    alias = resample(sine(23000.0, 0.5, 48000, amp=0.5), 48000, 44100)
    assert 20 * np.log10(alias[:, 4000:-4000].std() / 0.5) < -90  # 23 kHz is above 22.05 kHz: filtered out


@pytest.mark.parametrize(("sr_from", "sr_to"), [(48000, 44100), (96000, 44100), (44100, 32000)])
@pytest.mark.parametrize("above_nyquist", [1.002, 1.01, 1.1])
def test_resample_attenuates_a_tone_just_above_the_new_nyquist(
    sr_from: int, sr_to: int, above_nyquist: float
) -> None:
    freq = sr_to / 2 * above_nyquist  # e.g. 22.09 kHz into 44.1 kHz: would fold back to 22.01 kHz
    out = resample(sine(freq, 0.5, sr_from, amp=0.5), sr_from, sr_to)
    level_db = 20 * np.log10(np.sqrt(2) * out[:, sr_to // 10 : -sr_to // 10].std() / 0.5 + 1e-30)
    assert level_db < -100.0, f"{freq:.0f} Hz aliases at {level_db:.1f} dB"


@pytest.mark.parametrize(
    ("sr_from", "sr_to"), [(44100, 48000), (48000, 44100), (48000, 96000), (22050, 8000)]
)
def test_resample_has_no_delay(sr_from: int, sr_to: int) -> None:
    """A click at sample n peaks at n * sr_to / sr_from, symmetric about it (linear phase, no shift)."""
    step_in, step_out = sr_from // np.gcd(sr_from, sr_to), sr_to // np.gcd(sr_from, sr_to)
    frames = 30 * step_in
    for n in (0, 7 * step_in, frames - 3 * step_in):  # first sample, inside, near the end
        click = np.zeros((2, frames), dtype=np.float32)
        click[:, n] = 1.0
        out = resample(click, sr_from, sr_to)
        m = n // step_in * step_out
        assert out.shape == (2, frames // step_in * step_out)
        assert int(np.argmax(out[0])) == m and np.array_equal(out[0], out[1])
        if m > 0:
            assert abs(out[0, m - 1] - out[0, m + 1]) < 1e-4 * out[0, m]


def test_resample_identity_and_errors() -> None:
    x = full_scale_noise(2, 100).astype(np.float64)
    same = resample(x, 48000, 48000)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x.astype(np.float32))
    with pytest.raises(
        InvalidArgument, match="target sample rate must be a whole number between 1000 and 768000 Hz, got -1"
    ):
        resample(x, 48000, -1)


def test_conform_channels() -> None:
    mono = sine(440.0, 0.1, 44100, channels=1)
    six = conform_channels(mono, 6)
    assert six.shape == (6, mono.shape[1]) and all(np.array_equal(six[i], mono[0]) for i in range(6))
    stereo = np.stack([mono[0], -mono[0] * 0.5])
    np.testing.assert_allclose(conform_channels(stereo, 1)[0], mono[0] * 0.25, atol=1e-7)
    np.testing.assert_allclose(conform_channels(six, 2), np.repeat(mono, 2, axis=0), atol=1e-6)  # same level
    left_only = np.zeros((6, 100), dtype=np.float32)
    left_only[0] = 1.0  # 5.1: L R C LFE Ls Rs
    down = conform_channels(left_only, 2)
    assert down[0].min() > 0.3 and np.all(down[1] == 0.0)
    lfe_only = np.zeros((6, 100), dtype=np.float32)
    lfe_only[3] = 1.0
    assert np.all(conform_channels(lfe_only, 2) == 0.0)
    assert conform_channels(full_scale_noise(11, 10), 2).shape == (2, 10)
    with pytest.raises(InvalidArgument, match="cannot turn 2 channels into 6; ask for 1 or 2 channels"):
        conform_channels(stereo, 6)
