"""What an audio file's header promises against what the file holds: cut-off files and streamed sizes.

WAV (RIFF) and AIFF (FORM) files state their sizes up front, the container's and each chunk's. A file cut
short (a copy or an export that did not finish, a download that stopped) holds fewer bytes than they promise,
and libsndfile reads what is there without a word: :func:`truncation` says so. FLAC and MP3 state their length
in frames; one cut short cannot read its last frame. The hot folder waits for such a file to complete; the
pipeline uses what it holds and notes it on the result.

A writer that cannot seek back to fill the sizes in (a recorder streaming to a pipe, ffmpeg writing to
stdout) leaves them at a placeholder, 0 or 0xFFFFFFFF: such a file is not cut short but of unstated length,
read to its end. libsndfile reads a data chunk sized 0xFFFFFFFF to the end of the file, but one sized 0 as
empty, so :func:`decodable` hands it such a file with that size read as 0xFFFFFFFF.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from bridge.audio.inputs import open_regular

PLACEHOLDERS = (0, 0xFFFFFFFF)  # sizes streaming writers leave until they finish
_STREAMED = struct.pack("<I", 0xFFFFFFFF)
_MAX_CHUNKS = 4096  # chunks looked at before the audio data; more is not a file anyone exported


@dataclass(frozen=True)
class _Layout:
    """The sizes a RIFF or FORM header states. Offsets and sizes in bytes."""

    wav: bool  # RIFF (little-endian WAV); else FORM (AIFF)
    size: int  # bytes in the file
    declared: int  # the container's size field (counts from byte 8)
    data_start: int | None  # where the audio data begins; None when its chunk header is not in the file
    data_size: int | None  # the data chunk's size field (without SSND's 8-byte offset and block size)
    data_field: int | None  # where that size field is


def _layout(f: BinaryIO, size: int) -> _Layout | None:
    """Walk the chunks of a RIFF (WAV) or FORM (AIFF) file up to its audio data; None for other files."""
    head = f.read(12)
    if len(head) < 8 or head[:4] not in (b"RIFF", b"FORM"):
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    data_id = b"data" if endian == "<" else b"SSND"
    declared = struct.unpack(endian + "I", head[4:8])[0]
    pos = 12
    for _ in range(_MAX_CHUNKS):
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        chunk_size = struct.unpack(endian + "I", chunk[4:])[0]
        if chunk[:4] == data_id:
            extra = 8 if data_id == b"SSND" else 0  # SSND: offset and block size before the samples
            data_size = chunk_size if chunk_size in PLACEHOLDERS else max(0, chunk_size - extra)
            return _Layout(endian == "<", size, declared, pos + 8 + extra, data_size, pos + 4)
        pos += 8 + chunk_size + (chunk_size & 1)
    return _Layout(endian == "<", size, declared, None, None, None)


def _open_layout(path: str | os.PathLike[str]) -> _Layout | None:
    with open_regular(path) as f:  # a FIFO swapped in is refused, never waited on
        return _layout(f, os.fstat(f.fileno()).st_size)


def truncation(path: str | os.PathLike[str]) -> str | None:
    """Why the audio file at ``path`` holds less than its header says, or None when it does not (or its header
    states no length: a streamed WAV, an OGG), e.g. ``"it is shorter than its header says (2.7 of 8.0 s)"``.

    A file libsndfile cannot open at all is not this function's business (None): reading it says why.

    Raises:
        OSError: the file cannot be opened or read.
    """
    layout = _open_layout(path)
    if layout is None:
        return _unreadable_end(path)
    container_end = 0 if layout.declared in PLACEHOLDERS else layout.declared + 8
    start, size = layout.data_start, layout.data_size
    data_end = start + size if start is not None and size is not None and size not in PLACEHOLDERS else 0
    promised = max(container_end, data_end)
    if promised <= layout.size:
        return None
    if start is not None and data_end > layout.size > start:
        held = _seconds(path)  # the audio itself is cut: say how much of it there is
        if held is not None:
            declared = held * (data_end - start) / (layout.size - start)
            return f"it is shorter than its header says ({held:.1f} of {declared:.1f} s)"
    return f"it is shorter than its header says ({layout.size} of {promised} bytes)"


def _seconds(path: str | os.PathLike[str]) -> float | None:
    """The length of audio libsndfile finds in ``path`` (what it holds), or None when it cannot tell."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError):  # libsndfile's errors are RuntimeErrors
        return None
    return float(info.frames) / info.samplerate if info.samplerate > 0 else None


def _unreadable_end(path: str | os.PathLike[str]) -> str | None:
    """FLAC, MP3, OGG: the header states a length the data may not reach; read the last frame."""
    import soundfile as sf

    try:
        frames = sf.info(str(path)).frames
    except (RuntimeError, OSError, ValueError):
        return None
    if frames <= 0:
        return None
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(max(0, frames - 1))
            if len(f.read(1)) >= 1:
                return None
    except (RuntimeError, OSError, ValueError):
        pass
    return "it ends before its header says"


def _streamed_data_field(path: str | os.PathLike[str]) -> int | None:
    """Where the size field of a WAV's data chunk sits when it is 0 but audio follows it, in a file whose
    RIFF size is a placeholder too or stops before the data (a header written before the first sample).
    None for any other file."""
    try:
        layout = _open_layout(path)
    except OSError:
        return None  # reading the file says why
    # (AIFF states its length in frames too, in COMM: a FORM file is never read past it)
    if layout is None or not layout.wav or layout.data_size != 0 or layout.data_start is None:
        return None
    streamed = layout.declared in PLACEHOLDERS or layout.declared + 8 <= layout.data_start
    return layout.data_field if streamed and layout.size > layout.data_start else None


class _StreamedView(io.FileIO):
    """A WAV file read with its data chunk's size field replaced by 0xFFFFFFFF (to the end of the file)."""

    def __init__(self, path: str | os.PathLike[str], field: int) -> None:
        super().__init__(path, "rb")
        self._field = field

    def readinto(self, buffer: Any) -> int:
        start = self.tell()
        n = super().readinto(buffer) or 0
        lo, hi = max(start, self._field), min(start + n, self._field + 4)
        if lo < hi:
            view = memoryview(buffer).cast("B")
            view[lo - start : hi - start] = _STREAMED[lo - self._field : hi - self._field]
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self.fileno()).st_size - self.tell())
        buffer = bytearray(size)
        n = self.readinto(buffer)
        return bytes(buffer[:n])


@contextmanager
def decodable(path: str | os.PathLike[str]) -> Iterator[str | BinaryIO]:
    """What to hand libsndfile for ``path``: the path itself, or for a streamed WAV whose data size is 0, the
    file with that size read as "to the end" (see the module docstring)."""
    field = _streamed_data_field(path)
    if field is None:
        yield str(path)
        return
    with _StreamedView(path, field) as f:
        yield f
