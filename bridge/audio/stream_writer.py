"""Writing a long output block by block into its hidden temp file (WAV with BWF position, or AIFF).

:func:`bridge.audio.writer.write_audio` encodes a whole array at once. A long separation cannot hold its
stems whole, so the streaming jobs append each block as it is made: a :class:`StreamWriter` creates the same
hidden temp file beside the target (:func:`bridge.audio.writer.temp_file`), writes a header with a provisional
length, appends the blocks and, in :meth:`StreamWriter.finish`, writes the header again with the real length
and syncs the file. The temp file is then handed to a :class:`bridge.audio.writer.Publisher`
(:meth:`~bridge.audio.writer.Publisher.adopt`), which reserves the final name and publishes it with the job's
other files, all or none, exactly as for files written whole.

Stems of a mix above 0 dBFS would clip in integer PCM; :meth:`StreamWriter.to_float` turns what has been written
so far into a 32-bit float file (in a second temp file renamed over the first), and the rest is written as float.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from bridge.audio import bwf
from bridge.audio.folder import At, AtPair, HeldFolder
from bridge.audio.writer import _coding_history, _remove_quietly, _write_error, make_folder, temp_file
from bridge.errors import InvalidArgument

_COPY_FRAMES = 1 << 16
_AIFF_SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


class StreamWriter:
    """An audio file written block by block into a hidden temp file beside ``target``.

    Args:
        target: the file this will become (its folder is created if missing); only its temp file is written.
        channels: channels of every block.
        sample_rate: in Hz.
        fmt: ``wav`` or ``aiff``.
        bit_depth: 16, 24 or 32 (float).
        position: WAV only: the BWF time reference in samples (``None``: a plain WAV).
        description: the ``bext`` description (WAV with a position).
        folder: ``target``'s folder held open (a daemon job's): the temp file is made, rewritten and removed
            through that handle (see :class:`bridge.audio.writer.Publisher`'s ``folder``).

    Attributes:
        temp: the temp file (the same path for the writer's whole life, :meth:`to_float` included).
        frames: frames written so far.
        peak: the largest absolute sample written so far.

    Raises:
        AudioWriteError: the folder cannot be created or written.
    """

    def __init__(
        self,
        target: Path,
        channels: int,
        sample_rate: int,
        *,
        fmt: str = "wav",
        bit_depth: int = 24,
        position: int | None = None,
        description: str = "",
        folder: HeldFolder | None = None,
    ) -> None:
        if fmt not in ("wav", "aiff"):
            raise InvalidArgument(f"output format must be 'wav' or 'aiff', got {fmt!r}")
        if bit_depth not in (16, 24, 32):
            raise InvalidArgument(f"bit_depth must be 16, 24 or 32 (32 = float), got {bit_depth!r}")
        self.target = Path(target)
        self.channels, self.sample_rate = int(channels), int(sample_rate)
        self.fmt, self.bit_depth = fmt, bit_depth
        self._position, self._description = position, description
        self.frames = 0
        self.peak = 0.0
        self._folder = folder
        if folder is None:
            make_folder(self.target)
        self.temp, self._file, self._sound = self._open()

    def _open(self) -> tuple[Path, IO[bytes], sf.SoundFile | None]:
        """A new temp file with its header written; ``(path, file, libsndfile handle for AIFF or None)``."""
        try:
            path, fd = temp_file(self.target.parent, self.target.name, self._folder)
        except OSError as exc:
            raise _write_error(exc, self.target) from None
        f = os.fdopen(fd, "w+b")
        try:
            if self.fmt == "wav":
                f.write(self._wav_header())
                return path, f, None
            subtype = _AIFF_SUBTYPES[self.bit_depth]
            return path, f, sf.SoundFile(f, "w", self.sample_rate, self.channels, subtype, format="AIFF")
        except BaseException as exc:
            f.close()
            _remove_quietly(path, self._folder)
            if isinstance(exc, OSError):
                raise _write_error(exc, self.target) from None
            raise

    def _wav_header(self) -> bytes:
        bext = None
        if self._position is not None:
            history = _coding_history(self.channels, self.sample_rate, self.bit_depth)
            bext = bwf.make_bext(self._position, self._description, coding_history=history)
        return bwf.wav_header(self.channels, self.sample_rate, self.bit_depth, self.frames, bext)

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` float32 ``[channels, n]``.

        Raises:
            AudioWriteError: the disk is full, or the file would pass the 4 GB WAV limit.
        """
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise InvalidArgument(f"blocks must be shaped [{self.channels}, n], got {block.shape}")
        if block.shape[1] == 0:
            return
        self.peak = max(self.peak, float(np.max(np.abs(block))))
        try:
            self._append(block)
        except OSError as exc:
            raise _write_error(exc, self.target) from None
        self.frames += block.shape[1]

    def _append(self, block: np.ndarray) -> None:
        if self._sound is None:
            # the 4 GB limit, checked as the file grows rather than at the end
            bwf.wav_header(self.channels, self.sample_rate, self.bit_depth, self.frames + block.shape[1])
            self._file.write(bwf.encode(block, self.bit_depth))
            return
        frames = np.ascontiguousarray(block.T)
        if self.bit_depth == 24:  # libsndfile takes 24-bit PCM from the top of int32
            self._sound.write(bwf.quantize(frames, 24) << 8)
        elif self.bit_depth == 16:
            self._sound.write(bwf.quantize(frames, 16))
        else:
            self._sound.write(frames)

    def to_float(self) -> None:
        """Rewrite what has been written as 32-bit float (same temp path) and write float from now on."""
        if self.bit_depth == 32:
            return
        old = self.temp
        self._close()
        self.bit_depth = 32
        frames, self.frames = self.frames, 0
        new, self._file, self._sound = self._open()
        try:
            where, at = (old, At()) if self._folder is None else self._folder.at(old)
            with open(os.open(where, os.O_RDONLY | getattr(os, "O_BINARY", 0), **at), "rb") as raw:
                with sf.SoundFile(raw) as src:
                    for start in range(0, frames, _COPY_FRAMES):
                        data = src.read(min(_COPY_FRAMES, frames - start), dtype="float32", always_2d=True)
                        self._append(data.T)
                        self.frames += data.shape[0]
            src_name, dst_name, both = (
                (new, old, AtPair()) if self._folder is None else self._folder.pair(new, old)
            )
            os.replace(src_name, dst_name, **both)
        except BaseException as exc:
            self._close()
            _remove_quietly(new, self._folder)
            if isinstance(exc, OSError):
                raise _write_error(exc, self.target) from None
            raise

    def finish(self) -> Path:
        """Write the final header, sync the file to disk and close it; returns the temp file."""
        self._close()
        return self.temp

    def _close(self) -> None:
        """Finish the open file: its real length in the header, synced, closed (safe to call twice)."""
        if self._file.closed:
            return
        try:
            if self._sound is not None:
                self._sound.close()  # libsndfile writes the AIFF header's lengths
            else:
                if (self.frames * self.channels * (self.bit_depth // 8)) & 1:
                    self._file.write(b"\x00")
                self._file.seek(0)
                self._file.write(self._wav_header())
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _write_error(exc, self.target) from None
        finally:
            self._file.close()

    def discard(self) -> None:
        """Close and remove the temp file (after a failure)."""
        if not self._file.closed:
            if self._sound is not None:
                try:
                    self._sound.close()
                except (RuntimeError, OSError, sf.SoundFileError):
                    pass  # the file goes anyway
            self._file.close()
        _remove_quietly(self.temp, self._folder)
