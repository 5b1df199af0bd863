"""Audio files in and out: read (any format libsndfile knows), resample, conform channels, atomic write.

Everything in the package works on float32 ``[C, T]`` arrays; this module is the thin edge where files become
arrays and back. Reads turn every failure into :class:`~bridge.errors.AudioReadError` with one line naming
the file and the fix. Writes are atomic: the file is written to a hidden temp file in the destination folder,
synced, then published under its final name with a hard link (which fails if the name is taken, so an
existing file is never overwritten unless asked); nothing is left behind on failure.

WAV files are written by our own RIFF writer (:mod:`bridge.audio.bwf`) so that a Broadcast Wave ``bext`` chunk
can carry the part's timeline position. AIFF has no standard place for a sample position, so ``position`` is
not embedded in AIFF files: use WAV when the DAW should place the file by itself.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf
from scipy.signal import firwin, kaiser_beta, resample_poly

from bridge.audio import bwf
from bridge.errors import AudioReadError, AudioWriteError, InvalidArgument, StembridgeError

READABLE_FORMATS = "WAV, AIFF, FLAC, MP3 or OGG"
SAMPLE_RATE_RANGE = (1000, 768000)
MAX_CHANNELS = 64
_WRITE_FORMATS = {"wav": ("wav",), "aiff": ("aif", "aiff", "aifc")}
_AUDIO_SUFFIXES = {"wav", "wave", "bwf", "aif", "aiff", "aifc", "flac", "mp3", "ogg", "oga", "m4a", "caf"}
# Resampler: Kaiser-windowed sinc, 64 zero crossings each side, 100 dB stopband, flat to 92 % of the lower
# Nyquist frequency and -32 dB at it (aliasing lands above ~97 % of Nyquist, far below audibility).
_ZERO_CROSSINGS = 64
_STOPBAND_DB = 100.0
_ROLLOFF = 0.97
_UNIQUE_TRIES = 10000


def check_sample_rate(sample_rate: int, what: str = "sample rate") -> int:
    """Return ``sample_rate`` as an int, or raise :class:`InvalidArgument` (whole number, 1000-768000 Hz)."""
    try:
        value = float(sample_rate)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a whole number of Hz, got {sample_rate!r}") from None
    low, high = SAMPLE_RATE_RANGE
    if not np.isfinite(value) or value != int(value) or not low <= value <= high:
        raise InvalidArgument(
            f"{what} must be a whole number between {low} and {high} Hz, got {sample_rate!r}"
        )
    return int(value)


def check_audio(audio: np.ndarray, what: str, *, error: type[StembridgeError] = AudioReadError) -> np.ndarray:
    """Validate an audio array and return it as float32 ``[C, T]``.

    Args:
        audio: samples ``[C, T]`` (channels x samples), floating point.
        what: names the audio in messages, e.g. ``"context audio"`` or ``"song.wav"``.
        error: class raised for unusable content (no samples, NaN/inf).

    Raises:
        InvalidArgument: not a 2-D floating-point array with 1-64 channels.
        AudioReadError (or ``error``): no samples, or NaN/infinite samples.
    """
    if not isinstance(audio, np.ndarray):
        raise InvalidArgument(f"{what} must be a numpy array [channels, samples], got {type(audio).__name__}")
    if audio.ndim != 2:
        fix = "; use audio[None, :] for mono" if audio.ndim == 1 else ""
        raise InvalidArgument(f"{what} must be 2-D [channels, samples], got shape {audio.shape}{fix}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise InvalidArgument(f"{what} must hold float samples in [-1, 1], got dtype {audio.dtype}")
    channels, samples = audio.shape
    if not 1 <= channels <= MAX_CHANNELS:
        fix = "; pass audio.T if it is [samples, channels]" if samples <= MAX_CHANNELS else ""
        raise InvalidArgument(f"{what} must have 1 to {MAX_CHANNELS} channels, got {channels}{fix}")
    if samples == 0:
        raise error(f"{what} holds no audio (0 samples); give it some sound")
    out = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(out).all():
        raise error(f"{what} contains NaN or infinite samples; export or render it again")
    return out


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or not 1 <= channels <= 64:
        raise InvalidArgument(
            f"channels must be a whole number between 1 and {MAX_CHANNELS}, got {channels!r}"
        )
    return int(channels)


def read_audio(
    path: str | os.PathLike[str], sample_rate: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``[C, T]``.

    Args:
        path: a WAV, AIFF, FLAC, MP3 or OGG file (anything libsndfile reads).
        sample_rate: resample to this rate when given.
        channels: conform to this many channels when given (see :func:`conform_channels`).

    Returns:
        ``(audio [C, T] float32, sample_rate)``.

    Raises:
        AudioReadError: missing, a folder, not readable, not audio or corrupt, no samples, NaN/inf samples.
        InvalidArgument: bad ``sample_rate`` or ``channels``.
    """
    target_rate = None if sample_rate is None else check_sample_rate(sample_rate)
    target_channels = None if channels is None else _check_channels(channels)
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise AudioReadError(f"audio file not found: {path}; check the path") from None
    except IsADirectoryError:
        raise AudioReadError(
            f"{path} is a folder, not an audio file; give the path of a file inside it"
        ) from None
    except PermissionError:
        if path.is_dir():  # Windows reports opening a folder as permission denied
            raise AudioReadError(
                f"{path} is a folder, not an audio file; give the path of a file inside it"
            ) from None
        raise AudioReadError(
            f"permission denied reading {path}; make the file readable by this user"
        ) from None
    except OSError as exc:
        if path.is_dir():  # some systems report a folder as EINVAL
            raise AudioReadError(
                f"{path} is a folder, not an audio file; give the path of a file inside it"
            ) from None
        raise AudioReadError(
            f"cannot open {path}: {exc.strerror or exc}; check the path and the disk"
        ) from None
    if not head:
        raise AudioReadError(f"{path} is an empty file (0 bytes); export the audio again")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as exc:
        detail = (
            str(getattr(exc, "error_string", "") or exc or type(exc).__name__).splitlines()[0].rstrip(".")
        )
        raise AudioReadError(
            f"cannot read {path}: not a supported audio file or corrupt ({detail}); use {READABLE_FORMATS}"
        ) from None
    if data.shape[0] == 0:
        raise AudioReadError(f"{path} holds no audio (0 samples); export it again with sound in it")
    audio = check_audio(np.ascontiguousarray(data.T), str(path))
    if target_rate is not None and target_rate != rate:
        audio = resample(audio, int(rate), target_rate)
        rate = target_rate
    if target_channels is not None:
        audio = conform_channels(audio, target_channels)
    return audio, int(rate)


def _resample_filter(up: int, down: int) -> np.ndarray:
    most = max(up, down)
    taps = 2 * _ZERO_CROSSINGS * most + 1
    h = firwin(taps, _ROLLOFF / most, window=("kaiser", kaiser_beta(_STOPBAND_DB)))
    return np.asarray(h, dtype=np.float32)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Band-limited resampling by the exact rational ratio ``sr_to / sr_from`` (polyphase, Kaiser sinc).

    Args:
        audio: ``[C, T]`` float samples.
        sr_from: the rate of ``audio``.
        sr_to: the wanted rate.

    Returns:
        float32 ``[C, round(T * sr_to / sr_from)]``; the input itself (as float32) when the rates are equal.
    """
    sr_from = check_sample_rate(sr_from, "source sample rate")
    sr_to = check_sample_rate(sr_to, "target sample rate")
    audio = check_audio(audio, "audio to resample", error=InvalidArgument)
    if sr_from == sr_to:
        return audio
    ratio = Fraction(sr_to, sr_from)
    up, down = ratio.numerator, ratio.denominator
    frames = audio.shape[1]
    n_out = (2 * frames * sr_to + sr_from) // (2 * sr_from)  # round(frames * sr_to / sr_from), half up, exact
    out = resample_poly(audio, up, down, axis=-1, window=_resample_filter(up, down), padtype="constant")
    out = np.asarray(out, dtype=np.float32)
    if out.shape[1] >= n_out:
        return np.ascontiguousarray(out[:, :n_out])
    return np.pad(out, ((0, 0), (0, n_out - out.shape[1])))


def _downmix_matrix(channels: int) -> np.ndarray:
    """``[2, channels]`` stereo downmix in WAV channel order, rows normalised to sum 1.

    Known layouts (3: L R C, 4: L R Ls Rs, 5: L R C Ls Rs, 6: 5.1, 7: 6.1, 8: 7.1) fold the centre and
    surrounds in at -3 dB and drop the LFE; other counts send odd channels left and even channels right.
    Normalising each row keeps a signal that is the same in every channel at its level (and never louder).
    """
    g = float(np.sqrt(0.5))
    layouts: dict[int, list[tuple[float, float]]] = {
        3: [(1, 0), (0, 1), (g, g)],
        4: [(1, 0), (0, 1), (g, 0), (0, g)],
        5: [(1, 0), (0, 1), (g, g), (g, 0), (0, g)],
        6: [(1, 0), (0, 1), (g, g), (0, 0), (g, 0), (0, g)],
        7: [(1, 0), (0, 1), (g, g), (0, 0), (g * g, g * g), (g, 0), (0, g)],
        8: [(1, 0), (0, 1), (g, g), (0, 0), (g, 0), (0, g), (g, 0), (0, g)],
    }
    rows = layouts.get(channels) or [(1.0, 0.0) if i % 2 == 0 else (0.0, 1.0) for i in range(channels)]
    matrix = np.asarray(rows, dtype=np.float64).T
    return np.asarray(matrix / matrix.sum(axis=1, keepdims=True), dtype=np.float32)


def conform_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Return ``audio`` ``[C, T]`` with ``channels`` channels.

    Mono is copied to every channel; anything goes to mono by the mean of its channels; more than two channels
    go to stereo by a downmix (:func:`_downmix_matrix`). Other changes (e.g. 2 -> 6) raise InvalidArgument.
    """
    audio = check_audio(audio, "audio", error=InvalidArgument)
    channels = _check_channels(channels)
    have = audio.shape[0]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if channels == 1:
        return np.asarray(audio.mean(axis=0, keepdims=True, dtype=np.float64), dtype=np.float32)
    if channels == 2:
        return np.asarray(_downmix_matrix(have) @ audio, dtype=np.float32)
    raise InvalidArgument(
        f"cannot turn {have} channels into {channels}; ask for 1 or 2 channels, or give mono audio"
    )


# ----------------------------------------------------------------------------------------------- writing


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


def _temp_file(folder: Path, name: str) -> tuple[Path, int]:
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
        tmp, fd = _temp_file(folder, target.name)
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
