"""The state file that makes a batch resumable: ``<out>/.stembridge-batch/state.jsonl``.

Each item has a key: the SHA-256 of its task, its options, the resolved engine, the content hash of each input
(:func:`bridge.jobs.cache.file_digest`, the daemon's cache hashing), the inputs' names and the output folder
(both name the outputs) and the stembridge version. The file is an append-only log of JSON lines, each written
in one ``write`` and flushed to disk before the driver goes on:

- ``{"plan": KEY, "files": [...]}``: the item's files are about to be published (the names reserved; each
  file as :meth:`bridge.audio.writer.Staged.to_dict` gives it);
- ``{"done": KEY, "input": ..., "outputs": [{"stem", "path", "inode", "size", "mtime_ns"}, ...]}``: they are (paths relative to the
  folder);
- ``{"failed": KEY, "input": ..., "error": ...}``: the item failed (it is tried again next time);
- ``{"retired": KEY}``: the item's files were removed, superseded by a new result for the same input.

An input done again (its content or the options changed, or one of its outputs was deleted) supersedes its
earlier result: :meth:`State.retire` removes the earlier files that are still the ones the batch wrote (same
inode, size and modification time), so the new ones take their names instead of ``-2`` copies beside them.

A driver killed at any point leaves a log whose last line may be torn (ignored). The next run
(:meth:`State.recover`) removes what a plan without its ``done`` left (:func:`bridge.jobs.leftovers.undo_publish`:
only those files, only when provably that plan's) and the temp files of writers that are gone, so an item is
published once and never half.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.audio.writer import Staged
from bridge.batch.items import Item
from bridge.errors import InvalidArgument
from bridge.jobs.cache import file_digest
from bridge.jobs.leftovers import remove_temp_files, undo_publish

log = logging.getLogger(__name__)

STATE_VERSION = 1
FOLDER = ".stembridge-batch"
FILE = "state.jsonl"


def item_key(item: Item, engine: str) -> str | None:
    """The item's key (see the module doc), or None when an input cannot be hashed (unreadable, missing, not a
    regular file): such an item is never skipped, and running it reports why."""
    digests = []
    for path in item.inputs:
        digest = file_digest(path)
        if digest is None:
            return None
        digests.append(digest.sha256)
    payload = {
        "state": STATE_VERSION,
        "stembridge": __version__,
        "task": item.task,
        "engine": engine,
        "options": dict(item.options),
        "inputs": digests,
        "names": [p.name for p in item.inputs],
        "folder": item.folder,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def written(path: Path) -> dict[str, int]:
    """What tells the file at ``path`` from another put under its name later: inode, size and modification time
    (an inode alone is not enough: a file system gives a freed inode number to the next file)."""
    st = os.lstat(path)
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class State:
    """The state file of the output folder ``out``; one driver writes it at a time.

    Attributes:
        done: ``{key: outputs}`` of the items finished (as recorded; see :meth:`finished`).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / FOLDER / FILE
        self.done: dict[str, list[dict[str, Any]]] = {}
        self._inputs: dict[str, str] = {}  # key -> the input it was done for
        self._open_plans: dict[str, list[dict[str, Any]]] = {}
        self._fd: int | None = None

    def __enter__(self) -> State:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Read the log (a torn last line is ignored) and open it for appending.

        Raises:
            InvalidArgument: the folder cannot be created or the file cannot be written.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._read()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size and not self._ends_with_newline():
                os.write(self._fd, b"\n")  # end a torn line, so the next record starts on its own
        except OSError as exc:
            raise InvalidArgument(
                f"cannot keep the batch state in {self.path}: {exc}; choose another --out"
            ) from None

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _read(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a torn last line: the record was never complete
            if not isinstance(record, dict):
                continue
            if "plan" in record:
                self._open_plans[str(record["plan"])] = list(record.get("files") or [])
            elif "done" in record:
                key = str(record["done"])
                self._open_plans.pop(key, None)
                self.done[key] = list(record.get("outputs") or [])
                self._inputs[key] = str(record.get("input", ""))
            elif "retired" in record:
                self.done.pop(str(record["retired"]), None)
            elif "failed" in record:
                self._open_plans.pop(str(record["failed"]), None)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def recover(self, folders: Iterable[Path]) -> list[Path]:
        """Undo the publishing that a killed driver left unfinished, and remove the temp files of writers that
        are gone in ``folders`` (the output folders). Returns the published files removed."""
        removed: list[Path] = []
        for key, files in self._open_plans.items():
            removed += undo_publish(files)
            self.done.pop(key, None)
            log.info("removed the files of an item cut off while publishing: %s", key[:12])
        self._open_plans.clear()
        remove_temp_files(folders)
        return removed

    def finished(self, key: str | None) -> list[dict[str, Any]] | None:
        """The recorded outputs of the item ``key`` when it is done and they are all still there; else None."""
        if key is None or key not in self.done:
            return None
        outputs = self.done[key]
        if all((self.out / o["path"]).is_file() for o in outputs):
            return outputs
        return None

    def retire(self, label: str, keep: Collection[str] = ()) -> list[Path]:
        """Remove the files of earlier results for the input ``label`` (before its new result is published),
        only those still as the batch wrote them (:func:`written`); returns them.

        Args:
            keep: keys whose results stay whatever their input (the other items of the running batch: a
                manifest line that moved keeps its result).
        """
        removed = []
        done_for = [k for k, was in self._inputs.items() if was == label and k in self.done and k not in keep]
        for key in done_for:
            for output in self.done.pop(key):
                path = self.out / output["path"]
                try:
                    ours = all(output.get(k) == v for k, v in written(path).items())
                except OSError:
                    continue
                if ours:
                    path.unlink()
                    removed.append(path)
            self._append({"retired": key})
        return removed

    def planned(self, key: str, files: Sequence[Staged]) -> None:
        self._append({"plan": key, "files": [f.to_dict() for f in files]})

    def finish(self, key: str, item: Item, outputs: Sequence[Mapping[str, Any]]) -> None:
        self.done[key] = [dict(o) for o in outputs]
        self._inputs[key] = item.label
        self._append({"done": key, "input": item.label, "outputs": self.done[key]})

    def fail(self, key: str | None, item: Item, error: str) -> None:
        if key is not None:
            self._append({"failed": key, "input": item.label, "error": error})

    def _append(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("the batch state is not open")
        os.write(self._fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(self._fd)
