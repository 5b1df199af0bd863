"""Audio files in: read (any format libsndfile knows), resample, conform channels; the checks on audio arrays.

Everything in the package works on float32 ``[C, T]`` arrays; this module is the thin edge where files become
arrays. Reads turn every failure into :class:`~bridge.errors.AudioReadError` with one line naming the file and
the fix. Writing, atomic and with a BWF position, is in :mod:`bridge.audio.writer`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bridge.audio.headers import decodable
from bridge.audio.inputs import check_regular, open_regular
from bridge.errors import AudioReadError, InvalidArgument, StembridgeError

READABLE_FORMATS = "WAV, AIFF, FLAC, MP3 or OGG"
SAMPLE_RATE_RANGE = (1000, 768000)
MAX_CHANNELS = 64
# Resampler: libsoxr's very high quality, linear-phase filter: flat to 91 % of the lower Nyquist frequency and
# down to the float32 noise floor (about -150 dB) from the Nyquist frequency on (docs/BENCHMARKS.md).
_RESAMPLE_QUALITY = "VHQ"


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


_MAGIC = (b"RIFF", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b"ID3", b"caff", b"riff", b".snd", b"wvpk")


def _looks_like_audio(head: bytes) -> bool:
    """Whether the first bytes of a file start a container libsndfile reads (or an MPEG audio frame)."""
    if head.startswith(_MAGIC):
        return True
    # an MP3 without an ID3 tag starts with an MPEG frame header: 11 sync bits set
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


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
    path = check_header(path)
    try:
        with decodable(path) as source:  # a streamed WAV's placeholder sizes read to its end
            data, rate = sf.read(source, dtype="float32", always_2d=True)
    except DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None
    if data.shape[0] == 0:
        raise AudioReadError(f"{path} holds no audio (0 samples); export it again with sound in it")
    audio = check_audio(np.ascontiguousarray(data.T), str(path))
    if target_rate is not None and target_rate != rate:
        audio = resample(audio, int(rate), target_rate)
        rate = target_rate
    if target_channels is not None:
        audio = conform_channels(audio, target_channels)
    return audio, int(rate)


def check_header(path: str | os.PathLike[str]) -> Path:
    """Open ``path`` and check that its first bytes start an audio file libsndfile reads; return it as a Path.

    Raises:
        AudioReadError: missing, a folder, not readable, empty, or not audio (no audio header).
    """
    path = Path(path)
    try:
        with open_regular(path) as f:  # a FIFO is refused, never waited on
            head = f.read(16)
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
    if not _looks_like_audio(head):
        # Checked before decoding: libsndfile's MP3 decoder prints warnings to stderr on non-audio data.
        raise AudioReadError(
            f"cannot read {path}: not a supported audio file or corrupt (no audio header); use {READABLE_FORMATS}"
        )
    return path


# What libsndfile raises on a file it cannot decode (see :func:`decode_error`).
DECODE_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError, EOFError)


def decode_error(path: Path, exc: BaseException) -> AudioReadError:
    """The one-line error for a file libsndfile could not decode."""
    detail = str(getattr(exc, "error_string", "") or exc or type(exc).__name__).splitlines()[0].rstrip(".")
    if "does not exist" in detail or not detail:
        detail = "unrecognised or damaged data"
    return AudioReadError(
        f"cannot read {path}: not a supported audio file or corrupt ({detail}); use {READABLE_FORMATS}"
    )


def probe_sample_rate(path: str | os.PathLike[str]) -> int:
    """The sample rate of an audio file, from its header (nothing is decoded)."""
    check_regular(path)
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioReadError(f"cannot read {path}: {exc}; check the file") from None


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Band-limited resampling by the ratio ``sr_to / sr_from`` (libsoxr, very high quality, linear phase).

    Zero delay: a click at sample ``n`` of ``audio`` peaks at ``n * sr_to / sr_from`` of the result.

    Args:
        audio: ``[C, T]`` float samples.
        sr_from: the rate of ``audio``.
        sr_to: the wanted rate.

    Returns:
        float32 ``[C, round(T * sr_to / sr_from)]`` (halves round up); the input itself (as float32) when the
        rates are equal.
    """
    sr_from = check_sample_rate(sr_from, "source sample rate")
    sr_to = check_sample_rate(sr_to, "target sample rate")
    audio = check_audio(audio, "audio to resample", error=InvalidArgument)
    if sr_from == sr_to:
        return audio
    frames = audio.shape[1]
    n_out = (2 * frames * sr_to + sr_from) // (2 * sr_from)  # round(frames * sr_to / sr_from), half up, exact
    # soxr takes and returns [T, C]; its one-shot resample compensates the filter's delay and returns the
    # rounded length, which libsoxr computes in floating point: the length is fixed here to the exact figure.
    out = np.asarray(soxr.resample(audio.T, sr_from, sr_to, _RESAMPLE_QUALITY), dtype=np.float32).T
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


# ------------------------------------------------------------------------------------------- moved names
