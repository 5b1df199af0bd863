"""What a killed job leaves in its output folder, removed when the daemon starts again.

The audio writer (:class:`bridge.audio.writer.Publisher`) encodes each file into a hidden temp file beside its
target, ``.<name>.stembridge-<pid>-<8 hex digits>.tmp``, reserves the final name with a claim file
``.<name>.stembridge-claim`` that holds its pid, and publishes the files under their names only when all of
them are complete. A job killed in the middle (``kill -9``, a crash, a power cut) can therefore leave:

- temp files and claims, but never a partial file under a visible name: :func:`remove_temp_files` removes
  those of processes that are gone (never a live process's, such as a CLI job writing into the same folder);
- some of its files published and others not, when it was killed during the publish pass. The daemon journals
  the planned paths before publishing, and :func:`undo_publish` removes those of a cut-off job again: only
  those exact paths, and only regular files that are provably this job's (the inode the writer recorded).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Keep in step with bridge.audio.writer.temp_file and claim_path (tests/test_daemon_crash.py checks that they
# agree).
_TARGET = r"\.(?P<target>[^/\\]+\.(?:wav|aif|aiff))"
TEMP_NAME = re.compile(rf"^{_TARGET}\.stembridge-(?P<pid>[0-9]{{1,10}})-[0-9a-f]{{8}}\.tmp$", re.IGNORECASE)
CLAIM_NAME = re.compile(rf"^{_TARGET}\.stembridge-claim$", re.IGNORECASE)


def is_writer_temp(name: str) -> bool:
    """Whether ``name`` is a temp file name the audio writer makes."""
    return TEMP_NAME.match(name) is not None


def is_writer_claim(name: str) -> bool:
    """Whether ``name`` is a claim file name the audio writer makes."""
    return CLAIM_NAME.match(name) is not None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts as running)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def _windows_process_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return bool(ctypes.get_last_error() == 5)  # type: ignore[attr-defined,unused-ignore]  # access denied
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _process_start_time() -> float | None:
    """When this process started (seconds since the epoch), where the system says (Linux); else None."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_gone(pid: int, mtime: float, started: float | None) -> bool:
    """Whether the process that wrote a file with ``pid`` and ``mtime`` is gone.

    A file carrying this process's own pid was written by an earlier process with the same pid (pids repeat,
    e.g. pid 1 in a container) when it is older than this process; where that cannot be known, it is kept.
    """
    if pid == os.getpid():
        return started is not None and mtime < started - 1.0
    return not process_alive(pid)


def _claim_pid(path: Path) -> int | None:
    """The pid in a claim file; None when it is missing, empty or unreadable."""
    try:
        text = path.read_bytes()[:32].decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def remove_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove the writer's temp files and claims directly inside each folder (not below) whose process is gone.

    Folders that do not exist, and files that cannot be removed, are skipped (the latter with a log line).

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    started = _process_start_time()
    for folder in sorted(set(folders)):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            temp = TEMP_NAME.match(entry.name)
            if temp is None and not is_writer_claim(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            pid = int(temp["pid"]) if temp is not None else _claim_pid(Path(entry.path))
            if pid is None or not _writer_gone(pid, mtime, started):
                continue  # a live writer's, or a claim being written this very moment
            if _unlink(Path(entry.path), "leftover temp file"):
                removed.append(Path(entry.path))
    return removed


def _unlink(path: Path, what: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove the %s %s: %s", what, path, exc)
        return False
    return True


def _entry(item: Mapping[str, Any]) -> tuple[Path, Path, Path | None, int, int] | None:
    try:
        target = Path(str(item["path"]))
        temp = Path(str(item["temp"]))
        claim = Path(str(item["claim"])) if item.get("claim") else None
        return target, temp, claim, int(item.get("inode", 0)), int(item.get("pid", 0))
    except (KeyError, TypeError, ValueError):
        return None


def undo_publish(plan: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Remove what a job cut off while publishing left: its published files, its temp files, its claims.

    Args:
        plan: the job's planned files as the journal recorded them (:meth:`bridge.audio.writer.Staged.to_dict`):
            ``path``, ``temp``, ``claim``, ``inode`` and ``pid`` each.

    A file at a planned path is removed only when it is a regular file and it is this job's: it has the inode
    the writer recorded (the publish links the temp file, so the inode carries over), or, where the file
    system gives no inodes or the publish had only created the name, the job's claim on that name is still
    there. A temp file is removed only when it has the writer's name with the job's pid, beside the path; a
    claim only when it is the path's and holds the job's pid.

    Returns:
        The published files removed.
    """
    removed: list[Path] = []
    for item in plan:
        entry = _entry(item)
        if entry is None:
            log.warning("ignored a malformed entry in a journaled publish plan: %r", item)
            continue
        target, temp, claim, inode, pid = entry
        folder = target.parent
        claim_ours = (
            claim is not None
            and claim.parent == folder
            and claim.name == f".{target.name}.stembridge-claim"
            and _claim_pid(claim) in (pid, None)
            and claim.is_file()
        )
        try:
            st = os.lstat(target)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            ours = (inode != 0 and st.st_ino == inode) or (claim_ours and (inode == 0 or st.st_size == 0))
            if ours and _unlink(target, "file of an interrupted job"):
                removed.append(target)
        match = TEMP_NAME.match(temp.name)
        if temp.parent == folder and match is not None and int(match["pid"]) == pid and temp.is_file():
            _unlink(temp, "leftover temp file")
        if claim_ours and claim is not None:
            _unlink(claim, "leftover claim file")
    return removed
