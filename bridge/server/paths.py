"""Paths in requests, the input files and the output folder, checked in two steps.

1. **On the event loop, without touching the disk** (:func:`input_path`, :func:`out_text`): the text is a path,
   an absolute one; for a request from another machine, it lies inside the render folder or an allowed root as
   written (``~`` expanded, ``..`` collapsed); a relative ``out`` does not climb out with ``..``.
2. **In a worker thread** (:func:`check_input`, :func:`output_folder`), because a disk can take seconds to
   answer (a network volume waking up) and the daemon must keep answering meanwhile: which path Max's
   ``Volume:/dir/file`` means, symlinks followed and the roots checked again, and only then whether the file
   exists, is a regular file (a FIFO would hold the job's worker in ``open()``) and is readable. The output
   folder, relative or absolute, is resolved the same way: a link inside the render folder that leads out of
   it is refused.

The job checks its output folder once more when it starts (:mod:`bridge.jobs.outdir`), since a link can appear
while it waits in the queue.

So a client on another machine learns nothing about a path outside the roots: it gets the same refusal whether
the path exists or not, and the daemon never looks at it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from bridge.audio.inputs import not_regular, special_kind
from bridge.config import Settings
from bridge.errors import AudioReadError, InvalidArgument
from bridge.jobs.outdir import inside, real_folder, render_roots, resolved
from bridge.naming import safe_name
from bridge.server.values import as_text

_MAX_VOLUME = re.compile(r"^([^/:\\]{2,}):(/.*)$")


@dataclass(frozen=True)
class InputPath:
    """An input file named by a request, checked as text only (step 1).

    Attributes:
        name: the argument, ``path`` or ``context``, for messages.
        text: what the request sent.
        candidates: the absolute paths it may mean: one, or for Max's ``Volume:/dir/file`` form
            ``/Volumes/Volume/dir/file`` and ``/dir/file`` (for a remote request, only those inside the roots).
    """

    name: str
    text: str
    candidates: tuple[Path, ...]


def candidates(text: str) -> tuple[Path, ...]:
    """The paths ``text`` may mean, with ``~`` expanded; no disk access (see :func:`native_path`)."""
    match = _MAX_VOLUME.match(text)
    if match and os.name != "nt":
        volume, rest = match.groups()
        return (Path("/Volumes") / volume / rest.lstrip("/"), Path(rest))
    return (Path(os.path.expanduser(text)),)


def native_path(text: str) -> Path:
    """A path as the OS spells it: ``~`` expanded, and Max's ``Volume:/dir/file`` form turned into
    ``/dir/file`` (or ``/Volumes/Volume/dir/file`` when that is where the file is). Touches the disk."""
    return _choose(candidates(text))


def _choose(paths: Sequence[Path]) -> Path:
    if len(paths) == 2:
        on_volume, rest = paths
        return on_volume if on_volume.exists() and not rest.exists() else rest
    return paths[0]


def lexical_roots(settings: Settings) -> list[Path]:
    """The render folder and the allowed roots as configured, ``~`` expanded and ``..`` collapsed, symlinks not
    followed: no disk access."""
    roots = (settings.out_dir, *settings.allowed_roots)
    return [Path(os.path.abspath(os.path.expanduser(r))) for r in roots]


def allowed_roots(settings: Settings) -> list[Path]:
    """The folders requests may name: the render folder and the configured allowed roots, resolved (symlinks
    followed, so this touches the disk)."""
    return render_roots(settings)


def string_roots(settings: Settings) -> list[Path]:
    """The roots a remote path is checked against as text: as configured and as resolved (once, at start), so
    that a client may name a file through either spelling of a root."""
    found: list[Path] = []
    for root in (*lexical_roots(settings), *allowed_roots(settings)):
        if root not in found:
            found.append(root)
    return found


def _outside(name: str, text: str, roots: Sequence[Path]) -> InvalidArgument:
    listed = ", ".join(dict.fromkeys(map(str, roots)))
    return InvalidArgument(
        f"{name} must lie inside the render folder or an allowed root ({listed}) when the request comes from "
        f"another machine, got {text!r}; add its folder to allowed_roots in the daemon's config file"
    )


def input_path(name: str, value: Any, roots: Sequence[Path] | None = None) -> InputPath:
    """Step 1 for an input file, no disk access: a string naming an absolute path.

    Args:
        name: the argument's name, for messages.
        value: the received value.
        roots: for a request from another machine, the roots (see :func:`string_roots`): the path, with ``..``
            collapsed, must lie inside one as written.

    Raises:
        InvalidArgument: not a string, a relative path, or (remote) a path outside the roots.
    """
    text = as_text(name, value)
    paths = candidates(text)
    if not paths[-1].is_absolute():
        raise InvalidArgument(
            f"{name} must be an absolute path (the daemon does not know your working folder), "
            f"got {str(paths[-1])!r}"
        )
    if roots is not None:
        paths = tuple(p for p in paths if inside(Path(os.path.normpath(p)), roots))
        if not paths:
            raise _outside(name, text, roots)
    return InputPath(name, text, paths)


def check_input(item: InputPath, roots: Sequence[Path] | None = None) -> str:
    """Step 2 for an input file, on the disk: the path it means, as a string.

    Args:
        item: what :func:`input_path` made of the request's value.
        roots: for a request from another machine, the resolved roots (:func:`allowed_roots`): the path, with
            its symlinks followed, must lie inside one. This is checked before the file itself is looked at.

    Raises:
        InvalidArgument: (remote) the path leads outside the roots, or a link on it loops.
        AudioReadError: the file is missing, not a regular file (a folder, a FIFO...), or not readable.
    """
    path = _choose(item.candidates)
    if roots is not None and not inside(resolved(path), roots):
        raise _outside(item.name, item.text, roots)
    what = "file" if item.name == "path" else f"{item.name} file"
    if not path.exists():
        raise AudioReadError(f"{what} not found: {path}; check the path")
    kind = special_kind(path)
    if kind is not None:  # a FIFO would hold the job's worker in open() for good
        raise not_regular(path, kind, name=str(path) if item.name == "path" else f"{what} {path}")
    if not path.is_file():
        raise AudioReadError(f"{what} is not a file: {path}; give the path of an audio file")
    if not os.access(path, os.R_OK):
        raise AudioReadError(f"{what} is not readable: {path}; check its permissions")
    return str(path)


def input_file(name: str, value: Any, roots: Sequence[Path] | None = None) -> str:
    """Both steps at once (blocking): an absolute path to a readable file, as a string.

    Args:
        name: the argument's name, for messages.
        value: the received value.
        roots: when given (a request from another machine), the resolved roots the file must lie inside.
    """
    return check_input(input_path(name, value, roots), roots)


def out_text(value: Any) -> str | None:
    """Step 1 for the ``out`` option, no disk access: its text, or None for the render folder.

    Raises:
        InvalidArgument: not a string, or a relative folder that climbs out with ``..``.
    """
    if value is None:
        return None
    text = as_text("out", value)
    if not candidates(text)[-1].is_absolute():
        parts = [p for p in PurePath(text).parts if p not in ("", ".")]
        if ".." in parts:
            raise InvalidArgument(f"out must not climb out of the render folder with '..', got {text!r}")
    return text


def output_folder(value: Any, settings: Settings) -> str:
    """Step 2 for the ``out`` option (and step 1 again): the real path of a folder inside the render folder or
    an allowed root. Touches the disk (symlinks are followed).

    A relative ``out`` is a subfolder of the render folder, each part sanitised; an absolute one is taken as it
    is. Either way the path, with its symlinks followed and ``..`` collapsed, must lie inside
    ``settings.out_dir`` or one of ``settings.allowed_roots``: a link inside the render folder that leads out
    of it is refused. The job checks again when it starts (:func:`bridge.jobs.outdir.prepare`).

    Raises:
        InvalidArgument: not a string, a relative folder that climbs out with ``..``, or a folder that leads
            outside the roots.
    """
    text = out_text(value)
    roots = allowed_roots(settings)
    if text is None:
        return str(roots[0])
    path = native_path(text)
    if not path.is_absolute():
        parts = [p for p in PurePath(text).parts if p not in ("", ".")]
        path = roots[0].joinpath(*(safe_name(p) for p in parts))
    return str(real_folder(path, roots, text))
