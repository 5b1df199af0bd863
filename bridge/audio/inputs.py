"""Input files must be regular files: a FIFO, a socket or a device is refused before anything opens it.

Opening a FIFO for reading waits until something opens its other end, which may be never: the CLI would hang,
and the daemon's worker or the hot folder's watcher would stop for good. So every place that opens a file it
was given (audio, its BWF chunk, the cache's hash of it, a hot folder's drops and their JSON) first asks
:func:`special_kind`, and opens through :func:`open_regular`, which also catches a file swapped for a FIFO
between that check and the open (it opens without waiting and looks at what it opened).

Folders and missing paths are left to the caller: opening them fails at once, with the caller's own message.
"""

from __future__ import annotations

import errno
import io
import os
import stat

from bridge.errors import AudioReadError, StembridgeError

AUDIO_FIX = "give the path of an audio file"

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind_of(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is neither a regular file nor a folder, else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def special_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is (links followed) when it is a FIFO, a socket or a device: ``"a FIFO"``...; None for a
    regular file, a folder, or a path that cannot be looked at. Does not open it."""
    try:
        return kind_of(os.stat(path).st_mode)
    except (OSError, ValueError):  # missing, unreadable, or a name the OS cannot take: the opener says so
        return None


def not_regular(
    path: str | os.PathLike[str],
    kind: str,
    *,
    name: str | None = None,
    fix: str = AUDIO_FIX,
    error: type[StembridgeError] = AudioReadError,
) -> StembridgeError:
    """The error for a special file: ``<name> is not a regular file (it is a FIFO); <fix>``.

    Args:
        path: the file.
        kind: what it is (see :func:`special_kind`).
        name: how the message names it; its path by default.
        fix: what to do instead.
        error: the class to build.
    """
    return error(f"{path if name is None else name} is not a regular file (it is {kind}); {fix}")


def check_regular(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    fix: str = AUDIO_FIX,
    error: type[StembridgeError] = AudioReadError,
) -> None:
    """Raise :func:`not_regular`'s error when ``path`` is a FIFO, a socket or a device (links followed)."""
    kind = special_kind(path)
    if kind is not None:
        raise not_regular(path, kind, name=name, fix=fix, error=error)


def open_regular(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    fix: str = AUDIO_FIX,
    error: type[StembridgeError] = AudioReadError,
) -> io.BufferedReader:
    """``open(path, "rb")`` for a regular file, without ever waiting on a FIFO.

    Raises:
        StembridgeError: (``error``) ``path`` is a FIFO, a socket or a device; see :func:`not_regular`.
        IsADirectoryError: ``path`` is a folder, as ``open`` raises it.
        OSError: as ``open`` raises it (missing, not readable...).
    """
    check_regular(path, name=name, fix=fix, error=error)
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX: a FIFO swapped in meanwhile opens at once
    flags = os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        kind = kind_of(mode)
        if kind is not None:
            raise not_regular(path, kind, name=name, fix=fix, error=error)
        if nonblocking:
            os.set_blocking(fd, True)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
