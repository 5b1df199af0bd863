"""RIFF/WAVE writing with an optional Broadcast Wave (BWF) ``bext`` chunk, and reading the ``bext`` back.

The ``bext`` chunk (EBU Tech 3285, versions 1 and 2) carries ``TimeReference``: the first sample's position
on the timeline, in samples at the file's own rate, counted from the timeline start. DAWs use it to place a
file where it belongs: Logic's "Move to Recorded Position", Reaper's "BWF start offset", Pro Tools' "Spot to
original time stamp". Layout of the chunk's data (offsets in bytes, little-endian):

======  ====  =========================================================================
offset  size  field
======  ====  =========================================================================
0       256   Description (text, NUL padded)
256     32    Originator
288     32    OriginatorReference
320     10    OriginationDate ``yyyy-mm-dd``
330     8     OriginationTime ``hh-mm-ss``
338     4     TimeReferenceLow (uint32)
342     4     TimeReferenceHigh (uint32)
346     2     Version (uint16): 1, or 2 when loudness fields are set
348     64    UMID (all zero here: none)
412     10    v2 loudness: LoudnessValue, LoudnessRange, MaxTruePeakLevel, MaxMomentaryLoudness,
              MaxShortTermLoudness (int16, value x 100; 0x7FFF = not set)
422     180   Reserved (zero)
602     ...   CodingHistory (text, lines ending CR LF)
======  ====  =========================================================================

The WAV writer puts ``fmt `` first, then ``fact`` (float data only), then ``bext``, then ``data``. Files with
more than two channels use ``WAVE_FORMAT_EXTENSIBLE``. Samples are scaled by ``2**(bits-1)`` and clipped, the
same convention soundfile/libsndfile use when reading, so a 24-bit round trip is within ``2**-23``.
File-system concerns (temp files, atomic publish, error messages about folders) live in
:mod:`bridge.audio.writer`.
"""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from bridge.audio.inputs import open_regular
from bridge.errors import AudioReadError, AudioWriteError, InvalidArgument

BEXT_FIXED_SIZE = 602
TIME_REFERENCE_OFFSET = 338
_LOUDNESS_UNSET = 0x7FFF
_LOUDNESS_FIELDS = (
    "loudness_value",
    "loudness_range",
    "max_true_peak_level",
    "max_momentary_loudness",
    "max_short_term_loudness",
)
_BEXT_STRUCT = struct.Struct("<256s32s32s10s8sIIH64s5h180s")

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# Speaker masks for the usual layouts in WAV channel order; others get 0 ("no particular assignment").
_CHANNEL_MASKS = {1: 0x4, 2: 0x3, 3: 0x7, 4: 0x33, 5: 0x37, 6: 0x3F, 7: 0x13F, 8: 0x63F}
_MAX_RIFF_SIZE = 0xFFFFFFFF
_BLOCK_FRAMES = 1 << 16


def _text(value: str, size: int) -> bytes:
    """UTF-8 bytes of ``value`` cut to ``size`` on a character boundary (NUL padding is left to struct)."""
    data = value.encode("utf-8")
    while len(data) > size:
        value = value[:-1]
        data = value.encode("utf-8")
    return data


def _loudness_field(name: str, value: float | None) -> int:
    if value is None:
        return _LOUDNESS_UNSET
    scaled = round(float(value) * 100.0)
    if not -32768 <= scaled < _LOUDNESS_UNSET:
        raise InvalidArgument(f"bext {name} must be between -327.68 and 327.66, got {value!r}")
    return int(scaled)


def make_bext(
    position_samples: int,
    description: str = "",
    originator: str = "stembridge",
    originator_reference: str = "",
    *,
    when: datetime | None = None,
    coding_history: str = "",
    loudness: dict[str, float | None] | None = None,
) -> bytes:
    """Build the data of a ``bext`` chunk (without the 8-byte chunk header).

    Args:
        position_samples: TimeReference: the file's first sample on the timeline, in samples at the file's
            rate, counted from the timeline start (0 = session start).
        description: free text, at most 256 bytes of UTF-8 (longer text is cut).
        originator: the program that made the file (32 bytes).
        originator_reference: a reference for the file (32 bytes), e.g. a job id.
        when: origination date and time; the local time now when None.
        coding_history: EBU R98 lines such as ``"A=PCM,F=48000,W=24,M=stereo,T=stembridge"``; each line is
            terminated with CR LF.
        loudness: optional EBU R128 figures keyed ``loudness_value`` (LUFS), ``loudness_range`` (LU),
            ``max_true_peak_level`` (dBTP), ``max_momentary_loudness``, ``max_short_term_loudness`` (LUFS).
            Giving any makes a version 2 chunk; without them the chunk is version 1.

    Returns:
        The chunk data, an even number of bytes (602 + the coding history, NUL padded to even length).
    """
    if isinstance(position_samples, bool) or not isinstance(position_samples, (int, np.integer)):
        raise InvalidArgument(f"position must be a whole number of samples, got {position_samples!r}")
    position = int(position_samples)
    if not 0 <= position < 2**64:
        raise InvalidArgument(f"position must be between 0 and 2**64-1 samples, got {position}")
    loudness = dict(loudness or {})
    unknown = sorted(set(loudness) - set(_LOUDNESS_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown bext loudness field(s) {unknown}; use {', '.join(_LOUDNESS_FIELDS)}")
    values = [_loudness_field(name, loudness.get(name)) for name in _LOUDNESS_FIELDS]
    version = 2 if any(loudness.get(name) is not None for name in _LOUDNESS_FIELDS) else 1
    if version == 1:
        values = [0] * len(values)  # version 1 keeps these bytes reserved (zero)
    stamp = when or datetime.now()
    history = "".join(line.rstrip("\r\n") + "\r\n" for line in coding_history.splitlines() if line.strip())
    payload = _BEXT_STRUCT.pack(
        _text(description, 256),
        _text(originator, 32),
        _text(originator_reference, 32),
        stamp.strftime("%Y-%m-%d").encode("ascii"),
        stamp.strftime("%H-%M-%S").encode("ascii"),
        position & 0xFFFFFFFF,
        position >> 32,
        version,
        b"",
        *values,
        b"",
    )
    payload += history.encode("ascii", errors="replace")
    if len(payload) % 2:
        payload += b"\x00"
    return payload


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def parse_bext(data: bytes) -> dict[str, Any]:
    """Decode ``bext`` chunk data (as made by :func:`make_bext` or any BWF writer) into a dict.

    Raises:
        AudioReadError: when the data is shorter than the 602-byte fixed part.
    """
    if len(data) < BEXT_FIXED_SIZE:
        raise AudioReadError(f"bext chunk is {len(data)} bytes, shorter than the 602 the BWF spec requires")
    fields = _BEXT_STRUCT.unpack_from(data)
    desc, orig, ref, date, time, low, high, version, umid, *loud, _reserved = fields
    result: dict[str, Any] = {
        "description": _cstr(desc),
        "originator": _cstr(orig),
        "originator_reference": _cstr(ref),
        "date": _cstr(date),
        "time": _cstr(time),
        "time_reference": low | (high << 32),
        "version": version,
        "umid": umid.hex() if any(umid) else "",
        "coding_history": data[BEXT_FIXED_SIZE:].split(b"\x00", 1)[0].decode("ascii", errors="replace"),
    }
    if version >= 2:
        result["loudness"] = {
            name: (None if raw == _LOUDNESS_UNSET else raw / 100.0)
            for name, raw in zip(_LOUDNESS_FIELDS, loud, strict=True)
        }
    return result


def read_bext(path: str | Path) -> dict[str, Any] | None:
    """Read the ``bext`` chunk of a WAV file.

    Returns:
        ``{"time_reference", "description", "originator", "originator_reference", "date", "time",
        "version", "umid", "coding_history"}`` (plus ``"loudness"`` for version 2), or None when the file is
        not a RIFF/WAVE file or has no ``bext`` chunk.

    Raises:
        AudioReadError: the file is missing, unreadable or not a regular file (a FIFO...), or its ``bext``
            chunk is truncated.
    """
    path = Path(path)
    try:
        with open_regular(path) as f:  # a FIFO is refused, never waited on
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while True:
                header = f.read(8)
                if len(header) < 8:
                    return None
                chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
                if chunk_id == b"bext":
                    data = f.read(size)
                    if len(data) < size:
                        raise AudioReadError(f"the bext chunk of {path} is truncated; export the file again")
                    return parse_bext(data)
                f.seek(size + (size & 1), 1)
    except FileNotFoundError:
        raise AudioReadError(f"audio file not found: {path}; check the path") from None
    except OSError as exc:
        raise AudioReadError(
            f"cannot read {path}: {exc.strerror or exc}; check the file's permissions"
        ) from None


def _chunk(chunk_id: bytes, data: bytes) -> bytes:
    pad = b"\x00" if len(data) % 2 else b""
    return chunk_id + struct.pack("<I", len(data)) + data + pad


def _fmt_chunk(channels: int, sample_rate: int, bit_depth: int, is_float: bool) -> bytes:
    block_align = channels * (bit_depth // 8)
    byte_rate = sample_rate * block_align
    if channels > 2:
        sub_format = struct.pack("<H", _WAVE_FORMAT_IEEE_FLOAT if is_float else _WAVE_FORMAT_PCM) + _GUID_TAIL
        mask = _CHANNEL_MASKS.get(channels, 0)
        data = (
            struct.pack(
                "<HHIIHHHHI",
                _WAVE_FORMAT_EXTENSIBLE,
                channels,
                sample_rate,
                byte_rate,
                block_align,
                bit_depth,
                22,
                bit_depth,
                mask,
            )
            + sub_format
        )
    elif is_float:
        data = struct.pack(
            "<HHIIHHH", _WAVE_FORMAT_IEEE_FLOAT, channels, sample_rate, byte_rate, block_align, bit_depth, 0
        )
    else:
        data = struct.pack(
            "<HHIIHH", _WAVE_FORMAT_PCM, channels, sample_rate, byte_rate, block_align, bit_depth
        )
    return _chunk(b"fmt ", data)


def quantize(block: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float samples -> clipped integers at ``bit_depth`` (16 or 24), scaled by ``2**(bit_depth-1)``.

    Args:
        block: float samples of any shape, nominally in [-1, 1]; values outside are clipped.

    Returns:
        int16 (16-bit) or int32 (24-bit, values in [-2**23, 2**23-1]) array of the same shape.
    """
    full = float(2 ** (bit_depth - 1))
    scaled = np.rint(np.clip(block, -1.0, 1.0) * full)
    np.clip(scaled, -full, full - 1.0, out=scaled)
    ints: np.ndarray = scaled.astype(np.int16 if bit_depth == 16 else np.int32)
    return ints


def encode(block: np.ndarray, bit_depth: int) -> bytes:
    """``[C, n]`` float32 -> interleaved little-endian sample bytes (16/24-bit PCM, 32: IEEE float)."""
    return _encode(block, bit_depth, bit_depth == 32)


def _encode(block: np.ndarray, bit_depth: int, is_float: bool) -> bytes:
    """``[C, n]`` float32 -> interleaved little-endian sample bytes."""
    frames = np.ascontiguousarray(block.T)
    if is_float:
        return frames.astype("<f4").tobytes()
    ints = quantize(frames, bit_depth)
    if bit_depth == 16:
        return ints.astype("<i2").tobytes()
    return ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def wav_header(
    channels: int, sample_rate: int, bit_depth: int, frames: int, bext: bytes | None = None
) -> bytes:
    """Everything of a WAV file before its samples, for ``frames`` frames of ``channels`` channels.

    Its length depends only on the format and ``bext``, not on ``frames``: a streaming writer writes it first
    with a guess and writes it again, in place, once the count is known.

    Raises:
        InvalidArgument: unsupported bit depth.
        AudioWriteError: the result would pass the 4 GB RIFF limit.
    """
    if bit_depth not in (16, 24, 32):
        raise InvalidArgument(f"WAV bit_depth must be 16, 24 or 32 (float), got {bit_depth}")
    is_float = bit_depth == 32
    header = _fmt_chunk(channels, sample_rate, bit_depth, is_float)
    if is_float:
        header += _chunk(b"fact", struct.pack("<I", min(frames, _MAX_RIFF_SIZE)))
    if bext is not None:
        header += _chunk(b"bext", bext)
    data_size = frames * channels * (bit_depth // 8)
    riff_size = 4 + len(header) + 8 + data_size + (data_size & 1)
    if riff_size > _MAX_RIFF_SIZE:
        raise AudioWriteError(
            f"{frames} frames x {channels} channels at {bit_depth} bit pass the 4 GB WAV limit; "
            "write shorter parts or fewer channels"
        )
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + header + b"data" + struct.pack("<I", data_size)


def write_wav(
    f: IO[bytes], audio: np.ndarray, sample_rate: int, bit_depth: int = 24, bext: bytes | None = None
) -> None:
    """Write ``audio`` ``[C, T]`` float32 as a WAV file to the open binary file ``f``.

    Args:
        bit_depth: 16 or 24 (PCM) or 32 (IEEE float).
        bext: data of a ``bext`` chunk from :func:`make_bext`, or None for a plain WAV.

    Raises:
        InvalidArgument: unsupported bit depth.
        AudioWriteError: the result would pass the 4 GB RIFF limit.
    """
    channels, frames = audio.shape
    f.write(wav_header(channels, sample_rate, bit_depth, frames, bext))
    for start in range(0, frames, _BLOCK_FRAMES):
        f.write(_encode(audio[:, start : start + _BLOCK_FRAMES], bit_depth, bit_depth == 32))
    if (frames * channels * (bit_depth // 8)) & 1:
        f.write(b"\x00")
