"""Atomic audio file writing: WAV (with a BWF ``bext`` position) and AIFF, never a half-written file.

Writing is two-phase, so that a job writes all its files or none (:class:`Publisher`):

1. **Encode**: every file is encoded into a hidden temp file in its destination folder, synced to disk
   (:func:`temp_file`: ``.<name>.stembridge-<pid>-<8 hex digits>.tmp``; the pid lets the daemon's start-up
   cleanup tell a dead writer's leftovers from a live writer's work).
2. **Reserve**: each final name is reserved by creating its claim file ``.<name>.stembridge-claim`` exclusively
   (holding the writer's pid). Every writer here respects claims, so two jobs that want the same names never
   get the same one: the second gets ``name-2.ext``, ``name-3.ext``... A caller can now record the planned
   paths (the daemon journals them) before anything becomes visible.
3. **Publish**: every temp file is published under its reserved name with a hard link, which fails rather than
   overwrite, in one quick pass; if one fails, or Ctrl-C, SIGTERM or SIGHUP interrupts the pass (even right
   after a link, before it is recorded), the files already published are removed again (known by their inode).

A daemon job's writer works in a folder held open (``folder``, :mod:`bridge.audio.folder`): every step above
goes through that handle, so a link swapped into the folder's path cannot redirect a file.

A published file keeps the temp file's inode (a hard link, or a rename where the file system has no hard
links), so a file at a planned path whose inode is the one recorded at reservation is known to be ours.

WAV files are written by our own RIFF writer (:mod:`bridge.audio.bwf`) so that a Broadcast Wave ``bext`` chunk
can carry the part's timeline position. AIFF has no standard place for a sample position, so ``position`` is
not embedded in AIFF files: use WAV when the DAW should place the file by itself.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import soundfile as sf

from bridge.audio import bwf
from bridge.audio.folder import At, AtPair, HeldFolder, sync_folder
from bridge.audio.io import check_audio, check_sample_rate
from bridge.errors import AudioWriteError, InvalidArgument

_WRITE_FORMATS = {"wav": ("wav",), "aiff": ("aif", "aiff", "aifc")}
_AUDIO_SUFFIXES = {"wav", "wave", "bwf", "aif", "aiff", "aifc", "flac", "mp3", "ogg", "oga", "m4a", "caf"}
_UNIQUE_TRIES = 10000
CLAIM_SUFFIX = ".stembridge-claim"  # bridge.jobs.leftovers matches it too


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


def temp_file(folder: Path, name: str, held: HeldFolder | None = None) -> tuple[Path, int]:
    """Create a new hidden temp file ``.<name>.stembridge-<pid>-<8 hex digits>.tmp`` in ``folder``.

    ``pid`` is this process's: the daemon's start-up cleanup (:mod:`bridge.jobs.leftovers`, which matches the
    same pattern) removes such files only when that process is gone, never a live writer's.

    Args:
        held: ``folder`` held open (a daemon job's): the file is created through that handle, after checking
            that ``folder``'s path still leads to it (:meth:`~bridge.audio.folder.HeldFolder.verify`).

    Returns:
        ``(path, fd)``: the file, opened for writing; the caller closes ``fd``.
    """
    if held is not None:
        held.verify()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    pid = os.getpid()
    for _ in range(100):
        tmp = folder / f".{name}.stembridge-{pid}-{secrets.token_hex(4)}.tmp"
        where, at = _at(tmp, held)
        try:
            fd = os.open(where, flags, 0o666, **at)
        except FileExistsError:
            continue
        except BaseException as exc:
            if not isinstance(exc, OSError):  # Ctrl-C or SIGTERM as it was made: the file may exist (ours)
                _remove_quietly(tmp, held)
            raise
        return tmp, fd
    raise AudioWriteError(f"could not create a temp file in {folder}; remove stale .tmp files there")


def claim_path(target: Path) -> Path:
    """The hidden file that reserves ``target``'s name until it is published: ``.<name>.stembridge-claim``."""
    return target.with_name(f".{target.name}{CLAIM_SUFFIX}")


def _write_temp(
    target: Path,
    audio: np.ndarray | bytes,
    sample_rate: int = 0,
    fmt: str = "",
    bit_depth: int = 0,
    position: int | None = None,
    description: str = "",
    held: HeldFolder | None = None,
) -> Path:
    """Write the encoded file (``audio`` encoded as ``fmt``, or ``bytes`` as they are) to a hidden temp file
    beside ``target`` (through ``held``, ``target``'s folder held open, when given), synced to disk; return its
    path."""
    folder = target.parent
    if held is None:
        make_folder(target)
    try:
        tmp, fd = temp_file(folder, target.name, held)
    except OSError as exc:
        raise _write_error(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(audio, bytes):
                f.write(audio)
            elif fmt == "wav":
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
        _remove_quietly(tmp, held)
        if isinstance(exc, OSError):
            raise _write_error(exc, target) from None
        raise
    return tmp


def make_folder(target: Path) -> None:
    """Make ``target``'s folder, and the ones above it, where missing (a writer without a held folder).

    Raises:
        AudioWriteError: a part of it is a file, or it cannot be made.
    """
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AudioWriteError(f"{folder} exists and is not a folder; choose another output folder") from None
    except OSError as exc:
        raise _write_error(exc, target) from None


def _at(path: Path, held: HeldFolder | None) -> tuple[str | Path, At]:
    """How an ``os`` call names ``path``: through ``held`` (see :meth:`~bridge.audio.folder.HeldFolder.at`), or
    by its path."""
    return (path, At()) if held is None else held.at(path)


def _remove_quietly(path: Path, held: HeldFolder | None = None) -> None:
    where, at = _at(path, held)
    try:
        os.unlink(where, **at)
    except FileNotFoundError:
        pass


def _holds(path: Path, inode: int, held: HeldFolder | None = None) -> bool:
    """Whether ``path`` is the file with ``inode`` (a link to our temp file); never true for inode 0 (unknown)."""
    where, at = _at(path, held)
    try:
        return inode != 0 and os.stat(where, follow_symlinks=False, **at).st_ino == inode
    except OSError:
        return False


def _sync_folder(folder: Path, held: HeldFolder | None = None) -> None:
    """Best effort: make the new directory entries durable (the files' data is already synced)."""
    sync_folder(folder, held.fd if held is not None and folder == held.path else None)


def _claim(target: Path, held: HeldFolder | None = None) -> Path | None:
    """Reserve ``target`` (through ``held``, its folder held open, when given): create its claim file
    exclusively, holding this process's pid.

    Returns:
        The claim file, or None when the name is taken: claimed by another writer, or a file is there.
    """
    claim = claim_path(target)
    where, at = _at(claim, held)
    try:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644, **at)
    except FileExistsError:
        return None
    try:
        try:
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        finally:
            os.close(fd)
    except BaseException:
        _remove_quietly(claim, held)
        raise
    if _exists(target, held):
        _remove_quietly(claim, held)
        return None
    return claim


def _exists(path: Path, held: HeldFolder | None = None) -> bool:
    """Whether anything (a link too) is at ``path``."""
    where, at = _at(path, held)
    try:
        os.stat(where, follow_symlinks=False, **at)
    except OSError:  # as os.path.lexists: missing, or unreachable
        return False
    return True


def _publish(tmp: Path, target: Path, overwrite: bool, held: HeldFolder | None = None) -> bool:
    """Move ``tmp`` to ``target`` atomically (through ``held``, their folder held open, when given). Returns
    False (``tmp`` kept) when ``target`` exists."""
    src, dst, both = (tmp, target, AtPair()) if held is None else held.pair(tmp, target)
    _, at = _at(target, held)
    if overwrite:
        os.replace(src, dst, **both)
        return True
    try:
        os.link(src, dst, **both)  # atomic, and fails if target exists
    except FileExistsError:
        return False
    except OSError:
        # No hard links here (FAT/exFAT, some network shares): claim the name exclusively, then replace it.
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, **at)
        except FileExistsError:
            return False
        os.close(fd)
        try:
            os.replace(src, dst, **both)
        except BaseException:  # the empty placeholder, or (a signal right after the replace) the file itself
            _remove_quietly(target, held)
            raise
        return True
    _remove_quietly(tmp, held)
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


def _numbered(path: Path) -> Iterator[Path]:
    """``song.wav``, ``song-2.wav``, ``song-3.wav``... (finite)."""
    yield path
    for n in range(2, _UNIQUE_TRIES + 1):
        yield path.with_name(f"{path.stem}-{n}{path.suffix}")


@dataclass(frozen=True)
class Staged:
    """One encoded file waiting in its temp file, with its final name reserved.

    Attributes:
        target: the path it is published under.
        temp: the temp file that holds the encoded data until then.
        claim: the file reserving ``target`` (None when overwriting).
        inode: the temp file's inode, which the published file keeps (0 where the file system has none).
        pid: the writing process.
    """

    target: Path
    temp: Path
    claim: Path | None
    inode: int
    pid: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible, for a journal: ``path``, ``temp``, ``claim`` (``""``: none), ``inode``, ``pid``."""
        claim = "" if self.claim is None else str(self.claim)
        return {
            "path": str(self.target),
            "temp": str(self.temp),
            "claim": claim,
            "inode": self.inode,
            "pid": self.pid,
        }


class Publisher:
    """Writes a set of files all or none: encode each, reserve every name, then publish them in one quick pass.

    Args:
        unique: when a name is taken (by a file, a folder or another writer's claim), use ``name-2.ext``,
            ``name-3.ext``... instead of failing.
        overwrite: replace existing files (single files only: replaced files cannot be restored, so a set
            written with ``overwrite`` is not all-or-none).
        folder: the files' folder held open (a daemon job's, :mod:`bridge.audio.folder`): every file must be
            directly in it, and temp files, claims and published files are made through the handle, so that a
            link swapped into the folder's path cannot redirect them. Its path is checked to still lead to it
            before each temp file is made and right before publishing (an error then: nothing is published).

    Example:
        >>> with Publisher() as pub:  # doctest: +SKIP
        ...     pub.add(folder / "song__drums.wav", drums, 44100)
        ...     pub.add(folder / "song__bass.wav", bass, 44100)
        ...     journal(pub.reserve())  # the final paths, before any of them is visible
        ...     paths = pub.publish()

    Leaving the ``with`` block removes the temp files and claims that are left (never a published file).
    """

    def __init__(
        self, *, unique: bool = True, overwrite: bool = False, folder: HeldFolder | None = None
    ) -> None:
        if unique and overwrite:
            raise InvalidArgument("a Publisher either picks unique names or overwrites, not both")
        self._unique = unique
        self._overwrite = overwrite
        self._folder = folder
        self._pid = os.getpid()
        self._encoded: list[tuple[Path, Path]] = []  # (temp file, wanted path)
        self._companions: dict[int, int] = {}  # index of a file -> index of the file whose name it takes
        self._staged: list[Staged] = []
        self._published: list[Path] = []

    def add(
        self,
        path: str | os.PathLike[str],
        audio: np.ndarray,
        sample_rate: int,
        *,
        fmt: str = "wav",
        bit_depth: int = 24,
        position: int | None = None,
        description: str = "",
    ) -> None:
        """Check the arguments and encode ``audio`` ``[C, T]`` into a temp file beside ``path`` (see
        :func:`write_audio` for the arguments). Nothing is visible yet."""
        if self._staged:
            raise InvalidArgument("add every file before reserve(); the names are already reserved")
        target, audio, rate, fmt, pos = _prepare(path, audio, sample_rate, fmt, bit_depth, position)
        # with unique names a folder is a taken name like any file
        if not self._unique and self._is_dir(target):
            raise AudioWriteError(f"{target} is a folder; give a file name to write to")
        tmp = _write_temp(target, audio, rate, fmt, bit_depth, pos, description, self._folder)
        self._encoded.append((tmp, target))

    def adopt(self, temp: Path, path: str | os.PathLike[str]) -> None:
        """Take a temp file encoded elsewhere (a :class:`bridge.audio.stream_writer.StreamWriter`'s, made by
        :func:`temp_file` beside ``path``) to publish as ``path`` with the others; from now on it is removed
        with them if the set is not published. Its content must be complete before :meth:`reserve`."""
        if self._staged:
            raise InvalidArgument("add every file before reserve(); the names are already reserved")
        self._encoded.append((Path(temp), Path(path)))

    def add_file(self, path: str | os.PathLike[str], data: bytes, *, companion_of: int | None = None) -> None:
        """Stage ``data`` (an encoded file, say a ``.mid``) like :meth:`add`.

        Args:
            companion_of: the index (order added) of an earlier file whose reserved name this one takes, with its
                own suffix: ``song-2.wav`` -> ``song-2.mid``; numbered on from there when that is taken.
        """
        if self._staged:
            raise InvalidArgument("add every file before reserve(); the names are already reserved")
        if companion_of is not None and not 0 <= companion_of < len(self._encoded):
            raise InvalidArgument(f"companion_of must name a file added before, got {companion_of}")
        target = Path(path)
        tmp = _write_temp(target, data, held=self._folder)
        if companion_of is not None:
            self._companions[len(self._encoded)] = companion_of
        self._encoded.append((tmp, target))

    def reserve(self) -> list[Staged]:
        """Reserve a final name for every file added; returns them in the order added.

        Raises:
            AudioWriteError: a name is taken (without ``unique``), or the folder cannot be written.
        """
        for tmp, wanted in self._encoded[len(self._staged) :]:
            lead = self._companions.get(len(self._staged))
            if lead is not None:
                wanted = self._staged[lead].target.with_suffix(wanted.suffix)
                self._encoded[len(self._staged)] = (tmp, wanted)
            self._staged.append(self._reserve(tmp, wanted))
        return list(self._staged)

    def _reserve(self, tmp: Path, wanted: Path) -> Staged:
        where, at = _at(tmp, self._folder)
        try:
            inode = os.stat(where, **at).st_ino
        except OSError as exc:
            raise _write_error(exc, wanted) from None
        if self._overwrite:
            return Staged(wanted, tmp, None, inode, self._pid)
        for target in _numbered(wanted) if self._unique else (wanted,):
            try:
                claim = _claim(target, self._folder)
            except OSError as exc:
                raise _write_error(exc, target) from None
            if claim is not None:
                return Staged(target, tmp, claim, inode, self._pid)
        if not self._unique:
            raise AudioWriteError(f"{wanted} already exists; choose another name or allow overwriting")
        raise AudioWriteError(
            f"{wanted} and the next {_UNIQUE_TRIES - 1} numbered names are taken; choose another name or folder"
        )

    def publish(self, *, retry: bool = False) -> list[Path]:
        """Publish every file under its reserved name (reserving first if needed); all or none.

        Args:
            retry: when another program created a file at a reserved name meanwhile, reserve the next free
                name and publish there. Off when the reserved names were handed on (journaled): publishing
                elsewhere would make them wrong, so that is an error instead.

        Returns:
            The paths published, in the order added.

        Raises:
            AudioWriteError: a file could not be published; the ones already published are removed again.
        """
        if self._published:
            raise InvalidArgument("this Publisher has already published its files; use a new one")
        self.reserve()
        if self._folder is not None:
            self._folder.verify()  # the last check; from here on the links go through the handle
        tried: list[Staged] = []  # linked, or maybe linked: an exception can come right after the link
        try:
            for i, staged in enumerate(self._staged):
                tried.append(staged)
                while not self._publish_one(staged):
                    if not retry or staged.claim is None:
                        raise AudioWriteError(
                            f"{staged.target} was created by another program while stembridge was writing it; "
                            f"send the request again"
                        )
                    _remove_quietly(staged.claim, self._folder)
                    staged = tried[-1] = self._staged[i] = self._reserve(staged.temp, self._encoded[i][1])
                self._published.append(staged.target)
            for folder in sorted({p.parent for p in self._published}):
                _sync_folder(folder, self._folder)
        except BaseException:
            self._roll_back(tried)
            raise
        return list(self._published)

    def _roll_back(self, tried: list[Staged]) -> None:
        """Remove what :meth:`publish` published of ``tried``: the files it knows it published, and the one it
        was publishing when the exception came (Ctrl-C, SIGTERM, SIGHUP can arrive after ``os.link`` made the
        file and before it was recorded), recognised by the temp file's inode, so that another program's file
        at that name is never removed."""
        for staged in tried:
            if staged.target in self._published or _holds(staged.target, staged.inode, self._folder):
                _remove_quietly(staged.target, self._folder)
        self._published.clear()

    def _publish_one(self, staged: Staged) -> bool:
        try:
            return _publish(staged.temp, staged.target, self._overwrite, self._folder)
        except OSError as exc:
            raise _write_error(exc, staged.target) from None

    def _is_dir(self, path: Path) -> bool:
        where, at = _at(path, self._folder)
        try:
            return stat.S_ISDIR(os.stat(where, **at).st_mode)
        except OSError:
            return False

    def close(self) -> None:
        """Remove the temp files and claims that are left; published files stay. Safe to call twice."""
        for tmp, _ in self._encoded:
            _remove_quietly(tmp, self._folder)
        for staged in self._staged:
            if staged.claim is not None:
                _remove_quietly(staged.claim, self._folder)
        self._encoded.clear()
        self._staged.clear()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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
        AudioWriteError: the file exists (or another writer has reserved its name), the folder is not
            writable, the disk is full...
        InvalidArgument: bad format, bit depth, rate, position or array.
    """
    with Publisher(unique=False, overwrite=overwrite) as pub:
        pub.add(
            path, audio, sample_rate, fmt=fmt, bit_depth=bit_depth, position=position, description=description
        )
        return pub.publish()[0]


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

    The name is reserved before it is published, so two writers racing for the same name both succeed under
    different names. Returns the path written.
    """
    with Publisher() as pub:
        pub.add(
            path, audio, sample_rate, fmt=fmt, bit_depth=bit_depth, position=position, description=description
        )
        return pub.publish(retry=True)[0]
