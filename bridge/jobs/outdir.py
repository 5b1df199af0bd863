"""A daemon job's output folder: its real path (symlinks followed), inside the folders the daemon may write to.

A request's ``out`` is checked when the request comes (:func:`bridge.server.paths.output_folder`, so the client
gets an ``error`` reply) and again when its job starts (:func:`prepare`), because a link can appear in between:
in a render folder others can write to, or in the hot folder's ``failed/``, where dropped links are moved. When
the job starts its folder is opened one level at a time from the allowed root it lies in (made where missing),
never through a link (``O_NOFOLLOW`` at each level), and held open while the job runs: the job writes relative
to that handle (:class:`bridge.audio.folder.HeldFolder`), so a link put in the way later cannot redirect its
files either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePath

from bridge.audio.folder import HANDLES, HeldFolder, identity, is_link, open_level
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


def resolved(path: Path) -> Path:
    """``path`` with its symlinks followed and ``..`` collapsed (as :meth:`Path.resolve`, not strict).

    Raises:
        InvalidArgument: a link on the way loops (Python 3.11 raises RuntimeError for it, later ones OSError), or
            cannot be followed.
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise InvalidArgument(f"{path} is a symlink loop; fix the link") from None
        raise InvalidArgument(
            f"{path} could not be followed through its links: {exc.strerror or exc}; check the path"
        ) from None


def real_folder(path: Path, roots: Sequence[Path], text: str | None = None) -> Path:
    """``path`` (absolute) with its symlinks followed and ``..`` collapsed, checked to lie inside ``roots``.

    Args:
        path: the folder asked for.
        roots: resolved folders (see :func:`render_roots`).
        text: how the request wrote it, for the message (``path`` by default).

    Raises:
        InvalidArgument: it leads outside every root, as written or through a link, or a link on it loops.
    """
    real = resolved(path)
    if not inside(real, roots):
        raise outside(str(path) if text is None else text, roots)
    return real


def prepare(path: Path, roots: Sequence[Path], text: str | None = None) -> tuple[HeldFolder, list[Path]]:
    """Make and open the folder ``path`` inside ``roots`` for a job to write to.

    Returns:
        The folder held open (its real path, no link in it; the caller closes it), and the folders made,
        outermost first (for :func:`remove_empty` when the job fails).

    Raises:
        InvalidArgument: it leads outside ``roots`` (checked before anything is made), or a link is in the way.
        AudioWriteError: a part of it is a file, or a folder cannot be made.
    """
    real = real_folder(path, roots, text)
    made: list[Path] = []
    try:
        if not HANDLES:
            return _prepare_by_path(real, made, path, roots, text), made
        # from the top: the real path has no link in it, so a link met on the way has appeared since
        folder = Path(real.anchor)
        fd = _open_checked(str(folder), None, folder, path, roots, text)
        try:
            for part in real.relative_to(folder).parts:
                folder = folder / part
                if not _exists(part, fd):
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                        made.append(folder)
                    except FileExistsError:  # made meanwhile by someone else: opened like ours
                        pass
                    except OSError as exc:
                        raise _mkdir_error(exc, folder) from None
                child = _open_checked(part, fd, folder, path, roots, text)
                os.close(fd)
                fd = child
            return HeldFolder(real, fd, identity(os.fstat(fd))), made
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        remove_empty(made)
        raise


def _exists(name: str, parent: int) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:  # there, maybe: opening it says what is wrong
        pass
    return True


def _open_checked(
    name: str, parent: int | None, folder: Path, path: Path, roots: Sequence[Path], text: str | None
) -> int:
    """Open one level (see :func:`bridge.audio.folder.open_level`), turning errors into the job's."""
    try:
        return open_level(name, parent)
    except OSError as exc:
        if is_link(name, parent) or exc.errno == errno.ELOOP:  # appeared since the path was resolved
            raise outside(str(path) if text is None else text, roots) from None
        if isinstance(exc, NotADirectoryError):
            raise AudioWriteError(
                f"{folder} exists and is not a folder; choose another output folder"
            ) from None
        raise AudioWriteError(
            f"could not open the folder {folder}: {exc.strerror or exc}; check the output folder"
        ) from None


def _prepare_by_path(
    real: Path, made: list[Path], path: Path, roots: Sequence[Path], text: str | None
) -> HeldFolder:
    """:func:`prepare` where folders cannot be held open (Windows): each level checked by path as it is made."""
    missing: list[Path] = []
    existing = real
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
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
    return HeldFolder(real, None, identity(os.lstat(real)))


def remove_empty(made: Sequence[Path]) -> None:
    """Remove the folders :func:`prepare` made, innermost first, as long as they are empty; each one from its
    parent opened level by level from the top, never through a link (a link put in the way meanwhile cannot
    make this remove an empty folder somewhere else)."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty, gone, or a link in the way: it stays
            if not HANDLES:
                folder.rmdir()
                continue
            fd = open_level(folder.anchor, None)
            try:
                for part in folder.parent.relative_to(folder.anchor).parts:
                    child = open_level(part, fd)
                    os.close(fd)
                    fd = child
                os.rmdir(folder.name, dir_fd=fd)
            finally:
                os.close(fd)


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
