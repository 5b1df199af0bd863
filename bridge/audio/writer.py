"""Atomic audio file writing: WAV (with a BWF ``bext`` position) and AIFF, never a half-written file.

The file is encoded into a hidden temp file in the destination folder (:func:`temp_file`), synced, then
published under its final name with a hard link, which fails if the name is taken, so an existing file is
never overwritten unless asked; nothing is left behind on failure. :func:`write_audio_unique` publishes under
``name-2.ext``, ``name-3.ext``... when the name is taken, claimed by the publish itself so that two writers
racing for one name both succeed.

WAV files are written by our own RIFF writer (:mod:`bridge.audio.bwf`) so that a Broadcast Wave ``bext`` chunk
can carry the part's timeline position. AIFF has no standard place for a sample position, so ``position`` is
not embedded in AIFF files: use WAV when the DAW should place the file by itself.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from bridge.audio import bwf
from bridge.audio.io import check_audio, check_sample_rate
from bridge.errors import AudioWriteError, InvalidArgument

_WRITE_FORMATS = {"wav": ("wav",), "aiff": ("aif", "aiff", "aifc")}
_AUDIO_SUFFIXES = {"wav", "wave", "bwf", "aif", "aiff", "aifc", "flac", "mp3", "ogg", "oga", "m4a", "caf"}
_UNIQUE_TRIES = 10000


def _write_error(exc: OSError, target: Path) -> AudioWriteError:
    folder = target.parent
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return AudioWriteError(f"disk full writing {target}; free some space or choose another output folder")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AudioWriteError(
            f"folder {folder} is not writable; choose another output folder or fix its permissions"
        )
    if code == errno.ENAMETOOLONG:
        return AudioWriteError(f"file name too long: {target.name}; choose a shorter name")
    return AudioWriteError(f"could not write {target}: {exc.strerror or exc}; check the output folder")


def _check_format(path: Path, fmt: str, bit_depth: int) -> str:
    fmt = str(fmt).lower().lstrip(".")
    fmt = "aiff" if fmt in ("aif", "aifc") else fmt
    if fmt not in _WRITE_FORMATS:
        raise InvalidArgument(f"output format must be 'wav' or 'aiff', got {fmt!r}")
    if bit_depth not in (16, 24, 32):
        raise InvalidArgument(f"bit_depth must be 16, 24 or 32 (32 = float), got {bit_depth!r}")
    suffix = path.suffix.lower().lstrip(".")
    if (
        suffix in _AUDIO_SUFFIXES
        and suffix not in _WRITE_FORMATS[fmt]
        and not (fmt == "wav" and suffix == "bwf")
    ):
        other = next((name for name, suffixes in _WRITE_FORMATS.items() if suffix in suffixes), None)
        fix = f"name it .{_WRITE_FORMATS[fmt][0]}" + (f" or choose format {other!r}" if other else "")
        raise InvalidArgument(f"file name {path.name} does not match format {fmt!r}; {fix}")
    return fmt


def _check_position(position: int | None) -> int | None:
    if position is None:
        return None
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position < 0:
        raise InvalidArgument(f"position must be a whole number of samples >= 0, got {position!r}")
    return int(position)


def _coding_history(channels: int, sample_rate: int, bit_depth: int) -> str:
    mode = {1: ",M=mono", 2: ",M=stereo"}.get(channels, "")
    return f"A=PCM,F={sample_rate},W={bit_depth}{mode},T=stembridge"


def _encode_aiff(f: IO[bytes], audio: np.ndarray, sample_rate: int, bit_depth: int) -> None:
    subtype = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}[bit_depth]
    if not sf.check_format("AIFF", subtype):
        raise AudioWriteError(
            f"this libsndfile cannot write {bit_depth}-bit AIFF; use fmt='wav' or bit_depth 24"
        )
    frames = np.ascontiguousarray(audio.T)
    if bit_depth == 24:
        data: np.ndarray = bwf.quantize(frames, 24) << 8  # libsndfile takes 24-bit PCM from the top of int32
    elif bit_depth == 16:
        data = bwf.quantize(frames, 16)
    else:
        data = frames
    try:
        sf.write(f, data, sample_rate, format="AIFF", subtype=subtype)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioWriteError(f"libsndfile could not encode AIFF ({exc}); use fmt='wav'") from None


def temp_file(folder: Path, name: str) -> tuple[Path, int]:
    """Create a new hidden temp file ``.<name>.<8 hex digits>.tmp`` in ``folder``.

    The daemon removes files named like this that a killed job left behind (:mod:`bridge.jobs.leftovers`
    matches the same pattern).

    Returns:
        ``(path, fd)``: the file, opened for writing; the caller closes ``fd``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise AudioWriteError(f"could not create a temp file in {folder}; remove stale .tmp files there")


def _write_temp(
    target: Path,
    audio: np.ndarray,
    sample_rate: int,
    fmt: str,
    bit_depth: int,
    position: int | None,
    description: str,
) -> Path:
    """Write the encoded file to a hidden temp file beside ``target``, synced to disk; return its path."""
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AudioWriteError(f"{folder} exists and is not a folder; choose another output folder") from None
    except OSError as exc:
        raise _write_error(exc, target) from None
    if target.is_dir():
        raise AudioWriteError(f"{target} is a folder; give a file name to write to")
    try:
        tmp, fd = temp_file(folder, target.name)
    except OSError as exc:
        raise _write_error(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if fmt == "wav":
                bext = None
                if position is not None:
                    history = _coding_history(audio.shape[0], sample_rate, bit_depth)
                    bext = bwf.make_bext(position, description, coding_history=history)
                bwf.write_wav(f, audio, sample_rate, bit_depth, bext)
            else:
                _encode_aiff(f, audio, sample_rate, bit_depth)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise _write_error(exc, target) from None
        raise
    return tmp


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _sync_folder(folder: Path) -> None:
    """Best effort: make the new directory entry durable (POSIX). The file's data is already synced; some
    systems (Windows, network mounts) cannot open or fsync a folder, which is not an error here."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, target: Path, overwrite: bool) -> bool:
    """Move ``tmp`` to ``target`` atomically. Returns False (``tmp`` kept) when ``target`` exists."""
    if overwrite:
        os.replace(tmp, target)
        return True
    try:
        os.link(tmp, target)  # atomic, and fails if target exists
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (FAT/exFAT, some network shares): claim the name exclusively, then replace it.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        os.close(fd)
        try:
            os.replace(tmp, target)
        except OSError:
            _remove_quietly(target)
            raise
        return True
    tmp.unlink()
    return True


def _prepare(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    fmt: str,
    bit_depth: int,
    position: int | None,
) -> tuple[Path, np.ndarray, int, str, int | None]:
    target = Path(path)
    fmt = _check_format(target, fmt, bit_depth)
    rate = check_sample_rate(sample_rate)
    audio = check_audio(audio, f"audio for {target.name}", error=AudioWriteError)
    return target, audio, rate, fmt, _check_position(position)


def _write_first_free(
    first: Path,
    names: Iterable[Path],
    audio: np.ndarray,
    sample_rate: int,
    *,
    fmt: str,
    bit_depth: int,
    position: int | None,
    description: str,
    overwrite: bool,
) -> Path:
    """Encode once to a temp file beside ``first``; publish it under the first of ``names`` that is free."""
    tmp = _write_temp(first, audio, sample_rate, fmt, bit_depth, position, description)
    try:
        for target in names:
            try:
                if _publish(tmp, target, overwrite):
                    _sync_folder(target.parent)
                    return target
            except OSError as exc:
                raise _write_error(exc, target) from None
        raise AudioWriteError(f"{first} already exists; choose another name or allow overwriting")
    finally:
        _remove_quietly(tmp)


def _numbered(path: Path) -> Iterator[Path]:
    """``song.wav``, ``song-2.wav``, ``song-3.wav``... (finite)."""
    yield path
    for n in range(2, _UNIQUE_TRIES + 1):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    *,
    fmt: str = "wav",
    bit_depth: int = 24,
    position: int | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``audio`` ``[C, T]`` atomically; never replaces an existing file unless ``overwrite``.

    Args:
        path: the file to create; a missing folder is created.
        audio: float32 ``[C, T]``; integer formats clip values outside [-1, 1].
        sample_rate: the audio's rate.
        fmt: ``"wav"`` (16/24-bit PCM, 32 = IEEE float) or ``"aiff"`` (16/24-bit PCM, 32 = float AIFC).
        bit_depth: 16, 24 or 32.
        position: the part's first sample on the DAW timeline (samples at ``sample_rate`` from the timeline
            start). WAV files then get a BWF ``bext`` chunk with it as TimeReference (0 included); AIFF cannot
            carry it, so it is not embedded there.
        description: text for the ``bext`` Description (WAV with a position only).
        overwrite: replace an existing file (atomically) instead of failing.

    Returns:
        The path written.

    Raises:
        AudioWriteError: the file exists, the folder is not writable, the disk is full...
        InvalidArgument: bad format, bit depth, rate, position or array.
    """
    target, audio, rate, fmt, pos = _prepare(path, audio, sample_rate, fmt, bit_depth, position)
    return _write_first_free(
        target,
        [target],
        audio,
        rate,
        fmt=fmt,
        bit_depth=bit_depth,
        position=pos,
        description=description,
        overwrite=overwrite,
    )


def write_audio_unique(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate: int,
    *,
    fmt: str = "wav",
    bit_depth: int = 24,
    position: int | None = None,
    description: str = "",
) -> Path:
    """Like :func:`write_audio`, but when ``path`` exists write ``name-2.ext``, ``name-3.ext``... instead.

    The name is claimed by the atomic publish itself, so two writers racing for the same name both succeed
    under different names. Returns the path written.
    """
    target, audio, rate, fmt, pos = _prepare(path, audio, sample_rate, fmt, bit_depth, position)
    return _write_first_free(
        target,
        _numbered(target),
        audio,
        rate,
        fmt=fmt,
        bit_depth=bit_depth,
        position=pos,
        description=description,
        overwrite=False,
    )
