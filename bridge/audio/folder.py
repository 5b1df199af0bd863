"""A job's output folder held open, so that swapping a part of its path cannot redirect the job's writes.

The daemon (maybe running as root) writes a job's files into a folder that other local users may be able to
change: a render folder others can write to, the hot folder's ``failed/``. Checking the path once, then writing
by name for minutes, leaves a window: someone renames the folder and puts a link to ``/etc`` in its place, and
the next file created by name lands there. A :class:`HeldFolder` is the folder opened once
(:func:`bridge.jobs.outdir.prepare` opens its real path one level at a time from the top, ``O_NOFOLLOW`` at
every level, after checking that it lies inside an allowed root) and kept open for the job: the writer creates its temp files, claims and published links relative to
that handle (``dir_fd``), so they land in the folder that was checked whatever happens to its path afterwards.

What is left: the folder itself can be moved (renamed) while the job runs; files written through the handle
then land where it went, which is only somewhere its mover could write to anyway. So that a job never answers
with paths that lead elsewhere, :meth:`HeldFolder.verify` checks that the path still leads, with no link on
the way, to the held folder; the writer calls it before each temp file is created and right before it
publishes. A job whose folder was moved or replaced fails with an error naming the folder, and its temp files
and claims are removed through the handle. Between that last check and the links, a few microseconds, a move
is still possible: the files then appear in the moved folder, never anywhere else.

Where the OS cannot open folders as handles (Windows), ``fd`` is None: the writer uses paths, and only the
checks remain (a window of microseconds around each of them).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import TracebackType
from typing import TypedDict

from bridge.errors import AudioWriteError, InvalidArgument

# Opening a folder: read-only, a folder and not a link, not inherited by child processes.
DIR_FLAGS = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
HANDLES = (
    hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
    and {os.open, os.link, os.unlink, os.rename, os.stat, os.mkdir, os.rmdir} <= os.supports_dir_fd
)


class At(TypedDict, total=False):
    """Keywords for an ``os`` call on a file in a held folder (none: by path)."""

    dir_fd: int


class AtPair(TypedDict, total=False):
    """Keywords for ``os.link`` and ``os.replace`` within a held folder (none: by path)."""

    src_dir_fd: int
    dst_dir_fd: int


def identity(st: os.stat_result) -> tuple[int, int]:
    """What tells one folder from another: its device and inode."""
    return st.st_dev, st.st_ino


class HeldFolder:
    """An open output folder (see the module doc); a context manager that closes it.

    Args:
        path: its real path (absolute, no link in it).
        fd: the open folder (``O_DIRECTORY``), owned from now on; None where the OS has no folder handles.
        ident: its :func:`identity`, as opened.

    Attributes:
        path, fd: as given.
    """

    def __init__(self, path: Path, fd: int | None, ident: tuple[int, int]) -> None:
        self.path = path
        self.fd = fd
        self._identity = ident

    def at(self, path: Path) -> tuple[str | Path, At]:
        """How an ``os`` call names ``path``, a file in this folder: ``(name, {"dir_fd": fd})``, or the path
        itself and no keywords where there is no handle.

        Raises:
            InvalidArgument: ``path`` is not directly in this folder (a bug in the caller).
        """
        if path.parent != self.path:
            raise InvalidArgument(f"{path} is not in the job's output folder {self.path}")
        if self.fd is None:
            return path, {}
        return path.name, {"dir_fd": self.fd}

    def pair(self, src: Path, dst: Path) -> tuple[str | Path, str | Path, AtPair]:
        """``(src, dst, keywords)`` for ``os.link``, ``os.replace``: both files in this folder."""
        a, kw = self.at(src)
        b, _ = self.at(dst)
        if not kw:
            return a, b, {}
        return a, b, {"src_dir_fd": kw["dir_fd"], "dst_dir_fd": kw["dir_fd"]}

    def verify(self) -> None:
        """Check that :attr:`path` still leads, through no link, to the held folder.

        Raises:
            AudioWriteError: it was moved or replaced (by a link or another folder) since it was opened.
        """
        try:
            same = (
                os.path.realpath(self.path) == str(self.path)
                and identity(os.lstat(self.path)) == self._identity
            )
        except OSError:
            same = False
        if not same:
            raise AudioWriteError(
                f"the output folder {self.path} was moved or replaced while the job ran, so its files were not "
                f"published; check the folder and send the request again"
            )

    def sync(self) -> None:
        """Best effort: make new entries in the folder durable (see :func:`sync_folder`)."""
        sync_folder(self.path, self.fd)

    def close(self) -> None:
        """Close the handle (safe to call twice)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def __enter__(self) -> HeldFolder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_level(name: str, parent: int | None) -> int:
    """Open the folder ``name`` (a path when ``parent`` is None, else a name in that open folder) without
    following a link at its last part.

    Raises:
        OSError: missing (``FileNotFoundError``), a link (``ELOOP``, or ``ENOTDIR`` on some systems), not a
            folder (``NotADirectoryError``).
    """
    if parent is None:
        return os.open(name, DIR_FLAGS)
    return os.open(name, DIR_FLAGS, dir_fd=parent)


def is_link(name: str, parent: int | None) -> bool:
    """Whether ``name`` (as for :func:`open_level`) is a symbolic link."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISLNK(st.st_mode)


def sync_folder(path: Path, fd: int | None = None) -> None:
    """Best effort: make the new directory entries of the folder ``path`` (open as ``fd``, when given) durable
    (POSIX). Some systems (Windows, network mounts) cannot open or fsync a folder, which is not an error here."""
    if os.name != "posix":
        return
    try:
        handle = fd if fd is not None else os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        if handle != fd:
            os.close(handle)
