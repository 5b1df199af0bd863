"""Temp files a killed job left behind in its output folder, removed when the daemon starts again.

The audio writer (:func:`bridge.audio.writer.write_audio`) encodes each file into a hidden temp file beside its
target, ``.<name>.<8 hex digits>.tmp``, and publishes it under its final name only when it is complete, so a
job killed in the middle (``kill -9``, a crash, a power cut) can leave such a temp file but never a partial
file under a visible name. The daemon removes these leftovers in the folders of the jobs the journal reports
cut off, and only files named exactly as the writer names them for the formats it writes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Keep in step with bridge.audio.writer.temp_file (tests/test_daemon_crash.py checks that they agree).
TEMP_NAME = re.compile(r"^\.(?P<target>[^/\\]+\.(?:wav|aif|aiff))\.[0-9a-f]{8}\.tmp$", re.IGNORECASE)


def is_writer_temp(name: str) -> bool:
    """Whether ``name`` is a temp file name the audio writer makes."""
    return TEMP_NAME.match(name) is not None


def remove_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove the writer's temp files directly inside each folder (not below). Folders that do not exist, and
    files that cannot be removed, are skipped (the latter with a log line).

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    for folder in sorted(set(folders)):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not is_writer_temp(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove the leftover temp file %s: %s", entry.path, exc)
                continue
            removed.append(Path(entry.path))
    return removed
