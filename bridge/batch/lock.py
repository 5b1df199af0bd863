"""One batch at a time per output folder: an exclusive lock on ``<out>/.stembridge-batch/lock``.

Two batches writing to the same ``--out`` would each read the other's unfinished plans in the state file as
left by a killed driver, and undo them. The driver therefore holds this lock for its whole run; a second one is
refused at once (it never waits) with the first one's pid, which the lock file holds.

The lock is the operating system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows), so it goes with the
process: a driver killed with ``kill -9`` holds nothing, and the next run needs no clean-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bridge.errors import Busy

FILE = "lock"
# Windows locks a byte range, which others then cannot read: lock a byte past the pid, so that it stays readable.
_WINDOWS_LOCK_OFFSET = 1 << 20


class OutputLock:
    """The lock of the batch state folder ``folder``, for the output folder ``out`` (which messages name)."""

    def __init__(self, folder: Path, out: Path) -> None:
        self.path = Path(folder) / FILE
        self.out = Path(out)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into the lock file.

        Raises:
            Busy: another process holds it.
            OSError: the lock file cannot be created.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                raise Busy(
                    f"another stembridge batch is writing to {self.out} (pid {_holder(fd)}); wait for it or "
                    "use another --out"
                )
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (closing the file does it). Safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """The pid the lock file holds, as text; ``unknown`` when it is not (yet) written."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


if sys.platform == "win32":  # pragma: no cover - Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
