"""Reading a long input in blocks: a section of an audio file as a source of float32 ``[C, n]`` ranges.

:mod:`bridge.audio.io` reads a whole file into one array; that is what engines take and what short inputs
need. A long song does not fit that way (an hour of stereo is 1.3 GB as float32, and a separation holds
several such arrays), so the streaming jobs (:mod:`bridge.streaming`) read it here instead, one block at a
time, with the same checks and the same one-line errors as :func:`bridge.audio.io.read_audio`.

:func:`windows` plans the blocks: each block's core, and the window around it that an engine must see for the
core to come out as it would from the whole signal.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import soundfile as sf

from bridge.audio import io as audio_io
from bridge.audio.headers import decodable
from bridge.audio.section import Section, span
from bridge.errors import AudioReadError, InvalidArgument

_READ_FRAMES = 1 << 18  # frames per read while measuring: a few MB


@dataclass(frozen=True)
class Window:
    """One block: its core ``[start, stop)`` and the window ``[first, last)`` around it the engine sees."""

    start: int
    stop: int
    first: int
    last: int


def windows(total: int, block: int, context: int, align: int = 1) -> Iterator[Window]:
    """Cover ``total`` samples with cores of ``block`` samples, each widened by ``context`` on both sides
    (clipped to the signal).

    ``block`` and ``context`` are rounded up to multiples of ``align``, so every window starts on a multiple of
    it (an engine's frame or chunk grid then falls where it falls for the whole signal).
    """
    if total < 1 or block < 1 or context < 0 or align < 1:
        raise InvalidArgument(
            f"need total, block, align >= 1 and context >= 0, got {total}, {block}, {context}, {align}"
        )
    block = -(-block // align) * align
    context = -(-context // align) * align
    for start in range(0, total, block):
        stop = min(total, start + block)
        yield Window(start, stop, max(0, start - context), min(total, stop + context))


class AudioSource:
    """A section of an audio file, read in ranges of samples: ``with AudioSource(path) as src: src.read(a, b)``.

    Args:
        path: a file :func:`bridge.audio.io.read_audio` would read.
        section: the part of the file to use (past the file's end it plays silence); ``None``: all of it.

    Attributes:
        sample_rate, channels: the file's.
        frames: samples in the section.

    Raises:
        AudioReadError: as :func:`bridge.audio.io.read_audio` (missing, not audio, corrupt, no samples...);
            NaN or infinite samples are found when the range holding them is read.
        InvalidArgument: the section starts past the end of the file.
    """

    def __init__(self, path: str | os.PathLike[str], section: Section | None = None) -> None:
        self.path = audio_io.check_header(path)
        self._source = ExitStack()  # a streamed WAV's placeholder sizes read to its end, as read_audio does
        try:
            self._file = sf.SoundFile(self._source.enter_context(decodable(self.path)))
        except audio_io.DECODE_ERRORS as exc:
            self._source.close()
            raise audio_io.decode_error(self.path, exc) from None
        try:
            total = int(self._file.frames)
            if total <= 0:
                raise AudioReadError(
                    f"{self.path} holds no audio (0 samples); export it again with sound in it"
                )
            self.sample_rate = int(self._file.samplerate)
            self.channels = int(self._file.channels)
            self._first, self.frames = span(total, self.sample_rate, section, self.path.name)
            self._total = total
        except BaseException:
            self.close()
            raise

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the section as float32 ``[C, stop - start]``.

        Raises:
            AudioReadError: the file cannot be decoded there, or holds NaN/infinite samples there.
            InvalidArgument: the file has more channels than stembridge takes.
        """
        if not 0 <= start <= stop <= self.frames:
            raise InvalidArgument(f"range {start}..{stop} is outside the section (0..{self.frames})")
        out = np.zeros((self.channels, stop - start), dtype=np.float32)
        begin = self._first + start
        end = min(self._total, self._first + stop)
        if end > begin:
            try:
                self._file.seek(begin)
                data = self._file.read(end - begin, dtype="float32", always_2d=True)
            except audio_io.DECODE_ERRORS as exc:
                raise audio_io.decode_error(self.path, exc) from None
            out[:, : data.shape[0]] = data.T
        return audio_io.check_audio(out, str(self.path))  # channels, NaN and infinity, as read_audio

    def level(self) -> tuple[float, float]:
        """Mean and standard deviation (with Bessel's correction, as torch's ``std``) of the section's mono
        mix (the mean of its channels), measured block by block in float64."""
        count, total, squares = 0, 0.0, 0.0
        shift = None  # subtracted before summing squares, so the variance keeps its precision
        for start in range(0, self.frames, _READ_FRAMES):
            mono = self.read(start, min(self.frames, start + _READ_FRAMES)).mean(axis=0, dtype=np.float64)
            if shift is None:
                shift = float(mono.mean())
            centred = mono - shift
            count += mono.size
            total += float(centred.sum())
            squares += float(np.dot(centred, centred))
        if shift is None:  # no frames: cannot happen once opened, but say so plainly
            return 0.0, 0.0
        mean = total / count
        variance = (squares - count * mean * mean) / max(1, count - 1)
        return shift + mean, math.sqrt(max(0.0, variance))

    def close(self) -> None:
        self._file.close()
        self._source.close()

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
