"""The state file that makes a batch resumable: ``<out>/.stembridge-batch/state.jsonl``.

Each item has a key: the SHA-256 of its task, its options, the resolved engine, the content hash of each input
(:func:`bridge.jobs.cache.file_digest`, the daemon's cache hashing), the inputs' names and the output folder
(both name the outputs) and the stembridge version. The file is an append-only log of JSON lines, each written
in one ``write`` and flushed to disk before the driver goes on:

- ``{"plan": KEY, "files": [...], "aside": [...]}``: the item's files are about to be published (the names
  reserved; each file as :meth:`bridge.audio.writer.Staged.to_dict` gives it), and the earlier outputs they
  replace are set aside (:class:`bridge.batch.supersede.Aside`); a plan with ``aside`` and no ``files`` yet is
  recorded before those are moved;
- ``{"done": KEY, "input": ..., "item": ..., "outputs": [{"stem", "path", "inode", "size", "mtime_ns"}, ...],
  "replaced": [...]}``: they are (paths relative to the folder; ``item``: :attr:`Item.identity`), and the
  earlier outputs in ``replaced`` are gone (their results no longer complete);
- ``{"failed": KEY, "input": ..., "error": ...}``: the item failed (it is tried again next time);
- ``{"retired": KEY}`` (written by earlier versions): the item's files were removed.

**The same input done again.** A later result supersedes an earlier one only for the same item
(:attr:`bridge.batch.items.Item.identity`): for ``batch separate`` the same input file (its resolved path), for
``batch run`` the same manifest (resolved path), line and request but for its seed. Even then, only the earlier
files that a new file replaces, the ones with its name, are removed: ``batch separate song.wav --stems drums``
then ``--stems bass`` keeps the drums; a changed song done again replaces its stems instead of adding ``-2``
copies. Other items' files are never touched (a manifest's ``jobs.jsonl:1`` is not another folder's
``jobs.jsonl:1``), nor a file someone put under an output's name (:func:`bridge.batch.supersede.written`: only
files with the inode, size and modification time the batch recorded). The replaced files are set aside while
the new ones are published and removed only once the new ones are recorded (:mod:`bridge.batch.supersede`),
so a publish that fails, or a killed driver, leaves the earlier files in place.

A driver killed at any point leaves a log whose last line may be torn (ignored). The next run
(:meth:`State.recover`) removes what a plan without its ``done`` left (:func:`bridge.jobs.leftovers.undo_publish`:
only those files, only when provably that plan's) and puts back what it set aside, removes what a finished plan
had set aside, and the temp files of writers that are gone, so an item is published once and never half.

One driver writes to an output folder at a time: :class:`State` holds :class:`bridge.batch.lock.OutputLock` from
:meth:`State.open` to :meth:`State.close`, and a second driver is refused (:class:`bridge.errors.Busy`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.audio.writer import Staged
from bridge.batch.items import Item
from bridge.batch.lock import OutputLock
from bridge.batch.supersede import Aside, discard, restore, written
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


class State:
    """The state file of the output folder ``out``; one driver writes it at a time (it holds the folder's lock
    while open).

    Attributes:
        done: ``{key: outputs}`` of the items finished (as recorded; see :meth:`finished`).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / FOLDER / FILE
        self.done: dict[str, list[dict[str, Any]]] = {}
        self._owned: dict[str, list[dict[str, Any]]] = {}  # key -> its outputs not replaced since
        self._items: dict[str, str] = {}  # key -> the identity of the item it was done for
        self._open_plans: dict[str, tuple[list[dict[str, Any]], list[Aside]]] = {}
        self._aside_done: list[Aside] = []  # what finished plans set aside, removed unless it is gone already
        self._this_run: set[str] = set()
        self._lock = OutputLock(self.path.parent, self.out)
        self._fd: int | None = None

    def __enter__(self) -> State:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Take the folder's lock, read the log (a torn last line is ignored) and open it for appending.

        Raises:
            Busy: another driver writes to this folder.
            InvalidArgument: the folder cannot be created or the file cannot be written.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            self._read()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size and not self._ends_with_newline():
                os.write(self._fd, b"\n")  # end a torn line, so the next record starts on its own
        except OSError as exc:
            self.close()
            raise InvalidArgument(
                f"cannot keep the batch state in {self.path}: {exc}; choose another --out"
            ) from None
        except BaseException:
            self.close()
            raise

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
                self._open_plans[str(record["plan"])] = (
                    list(record.get("files") or []),
                    _asides(record, "aside"),
                )
            elif "done" in record:
                key = str(record["done"])
                self._open_plans.pop(key, None)
                replaced = _asides(record, "replaced")
                self._replaced(replaced)
                self._aside_done += replaced
                self.done[key] = list(record.get("outputs") or [])
                self._owned[key] = list(self.done[key])
                self._items[key] = str(record.get("item") or "")
            elif "retired" in record:
                self.done.pop(str(record["retired"]), None)
                self._owned.pop(str(record["retired"]), None)
            elif "failed" in record:
                self._open_plans.pop(str(record["failed"]), None)

    def _replaced(self, entries: Iterable[Aside]) -> None:
        """Forget the outputs ``entries`` replaced: their results are no longer complete."""
        for entry in entries:
            self.done.pop(entry.of, None)
            self._owned[entry.of] = [
                o for o in self._owned.get(entry.of, []) if self.out / o["path"] != entry.path
            ]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def recover(self, folders: Iterable[Path]) -> list[Path]:
        """Undo the publishing that a killed driver left unfinished (putting back what it had set aside), remove
        what finished plans set aside, and the temp files of writers that are gone in ``folders`` (the output
        folders). Returns the published files removed."""
        removed: list[Path] = []
        for key, (files, aside) in self._open_plans.items():
            removed += undo_publish(files)
            restore(aside)
            self.done.pop(key, None)
            log.info("removed the files of an item cut off while publishing: %s", key[:12])
        self._open_plans.clear()
        discard(self._aside_done)
        self._aside_done.clear()
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

    def replaceable(self, item: Item, key: str | None, targets: Iterable[Path]) -> list[Aside]:
        """The earlier outputs of ``item`` (the same :attr:`Item.identity`, done by an earlier run) that its new
        files, wanting the names ``targets``, replace: those at one of these paths, still as the batch wrote
        them (:func:`bridge.batch.supersede.written`). None when ``key`` is None (nothing is recorded then)."""
        if key is None or not item.identity:
            return []
        wanted = set(targets)
        found: list[Aside] = []
        for earlier, outputs in self._owned.items():
            if self._items.get(earlier) != item.identity or earlier in self._this_run:
                continue
            for output in outputs:
                path = self.out / output["path"]
                if path not in wanted:
                    continue
                try:
                    proof = written(path)
                except OSError:
                    continue
                if all(output.get(k) == v for k, v in proof.items()):
                    found.append(Aside.of_output(earlier, path, proof))
        return found

    def planned(self, key: str, files: Sequence[Staged], aside: Sequence[Aside] = ()) -> None:
        self._append(
            {"plan": key, "files": [f.to_dict() for f in files], "aside": [a.to_dict() for a in aside]}
        )

    def finish(
        self, key: str, item: Item, outputs: Sequence[Mapping[str, Any]], replaced: Sequence[Aside] = ()
    ) -> None:
        self._replaced(replaced)
        self.done[key] = [dict(o) for o in outputs]
        self._owned[key] = list(self.done[key])
        self._items[key] = item.identity
        self._this_run.add(key)
        self._append(
            {
                "done": key,
                "input": item.label,
                "item": item.identity,
                "outputs": self.done[key],
                "replaced": [a.to_dict() for a in replaced],
            }
        )

    def fail(self, key: str | None, item: Item, error: str) -> None:
        if key is not None:
            self._append({"failed": key, "input": item.label, "error": error})

    def _append(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("the batch state is not open")
        os.write(self._fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(self._fd)


def _asides(record: Mapping[str, Any], field: str) -> list[Aside]:
    entries = record.get(field)
    if not isinstance(entries, list):
        return []
    return [a for a in (Aside.from_dict(e) for e in entries if isinstance(e, dict)) if a is not None]
