"""A daemon job's output folder: its real path (symlinks followed), inside the folders the daemon may write to.

A request's ``out`` is checked when the request comes (:func:`bridge.server.paths.output_folder`, so the client
gets an ``error`` reply) and again when its job starts (:func:`prepare`), because a link can appear in between:
in a render folder others can write to, or in the hot folder's ``failed/``, where dropped links are moved. When
the job starts its folder is made one level at a time, each level checked to be a real folder and not a link,
and the job writes to that real path, which has no link in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath

from bridge.config import Settings
from bridge.errors import AudioWriteError, InvalidArgument


def inside(path: PurePath, roots: Sequence[PurePath]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies under one (as written: resolve both first)."""
    return any(path == r or r in path.parents for r in roots)


def render_roots(settings: Settings) -> list[Path]:
    """The folders requests may render into: the render folder and the configured allowed roots, resolved
    (symlinks followed, so this touches the disk). The render folder comes first."""
    return [
        settings.out_dir.expanduser().resolve(),
        *(r.expanduser().resolve() for r in settings.allowed_roots),
    ]


def job_roots(settings: Settings) -> list[Path]:
    """The folders jobs may write to: :func:`render_roots` and, with ``watch_dir`` set, the hot folder (whose
    jobs write to its ``done/``)."""
    roots = render_roots(settings)
    if settings.watch_dir is not None:
        roots.append(Path(os.path.abspath(settings.watch_dir.expanduser())).resolve())
    return roots


def outside(text: str, roots: Sequence[Path]) -> InvalidArgument:
    """The error for an ``out`` that leads outside ``roots``."""
    listed = ", ".join(dict.fromkeys(map(str, roots)))
    return InvalidArgument(
        f"out must be a folder inside the render folder or an allowed root ({listed}), symlinks followed, "
        f"got {text!r}; add it to allowed_roots in the config file to allow it"
    )


def real_folder(path: Path, roots: Sequence[Path], text: str | None = None) -> Path:
    """``path`` (absolute) with its symlinks followed and ``..`` collapsed, checked to lie inside ``roots``.

    Args:
        path: the folder asked for.
        roots: resolved folders (see :func:`render_roots`).
        text: how the request wrote it, for the message (``path`` by default).

    Raises:
        InvalidArgument: it leads outside every root, as written or through a link.
    """
    real = path.resolve()
    if not inside(real, roots):
        raise outside(str(path) if text is None else text, roots)
    return real


def prepare(path: Path, roots: Sequence[Path], text: str | None = None) -> tuple[Path, list[Path]]:
    """Make the folder ``path`` inside ``roots`` for a job to write to; returns its real path (no link in it)
    and the folders made, outermost first (for :func:`remove_empty` when the job fails).

    Raises:
        InvalidArgument: it leads outside ``roots`` (checked before anything is made, and again after).
        AudioWriteError: a part of it is a file, or a folder cannot be made.
    """
    real = real_folder(path, roots, text)
    missing: list[Path] = []
    existing = real
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    made: list[Path] = []
    try:
        _check_folder(existing, path, roots, text)
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
                made.append(folder)
            except FileExistsError:  # made meanwhile (by someone else): checked like our own
                pass
            except OSError as exc:
                raise _mkdir_error(exc, folder) from None
            _check_folder(folder, path, roots, text)
        if real.resolve() != real:  # a level above was swapped for a link meanwhile
            raise outside(str(path) if text is None else text, roots)
    except BaseException:
        remove_empty(made)
        raise
    return real, made


def remove_empty(made: Sequence[Path]) -> None:
    """Remove the folders :func:`prepare` made, innermost first, as long as they are empty."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty (or gone): it stays
            folder.rmdir()


def _check_folder(folder: Path, path: Path, roots: Sequence[Path], text: str | None) -> None:
    mode = os.lstat(folder).st_mode
    if stat.S_ISLNK(mode):  # appeared since the path was resolved
        raise outside(str(path) if text is None else text, roots)
    if not stat.S_ISDIR(mode):
        raise AudioWriteError(f"{folder} exists and is not a folder; choose another output folder")


def _mkdir_error(exc: OSError, folder: Path) -> AudioWriteError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AudioWriteError(
            f"folder {folder.parent} is not writable; choose another output folder or fix its permissions"
        )
    return AudioWriteError(
        f"could not make the folder {folder}: {exc.strerror or exc}; check the output folder"
    )
