"""Earlier outputs that a new result replaces: set aside while the new files are published, then removed.

When an item is done again (:attr:`bridge.batch.items.Item.identity`), each of its new files that wants the name
of one of the item's earlier outputs takes that name, instead of a ``-2`` copy beside it. The earlier file is
renamed to a hidden name beside it, ``.<name>.stembridge-aside-<8 hex digits>``, before the new names are
reserved; it is removed only once the new files are published and recorded, and put back if they are not (a
failed publish here, or a killed driver's plan undone by the next run). The state file records each such move
before it happens (:class:`Aside`), so nothing is ever lost between the two.

Only files still as the batch wrote them are moved (:func:`written`: same inode, size and modification time);
a file someone else put under an output's name stays where it is, and the new file gets a ``-2`` name.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def written(path: Path) -> dict[str, int]:
    """What tells the file at ``path`` from another put under its name later: inode, size and modification time
    (an inode alone is not enough: a file system gives a freed inode number to the next file)."""
    st = os.lstat(path)
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class Aside:
    """An earlier output set aside for a new file of the same name.

    Attributes:
        of: the key of the earlier result it belongs to.
        path: the output (absolute).
        aside: the hidden name it waits under (absolute).
        proof: :func:`written` of the file (a rename keeps all three).
    """

    of: str
    path: Path
    aside: Path
    proof: Mapping[str, int]

    @classmethod
    def of_output(cls, of: str, path: Path, proof: Mapping[str, int]) -> Aside:
        return cls(of, path, path.with_name(f".{path.name}.stembridge-aside-{secrets.token_hex(4)}"), proof)

    def to_dict(self) -> dict[str, Any]:
        return {"of": self.of, "path": str(self.path), "aside": str(self.aside), **self.proof}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Aside | None:
        """The entry a state file recorded; None when it is malformed."""
        try:
            proof = {k: int(record[k]) for k in ("inode", "size", "mtime_ns")}
            return cls(str(record["of"]), Path(str(record["path"])), Path(str(record["aside"])), proof)
        except (KeyError, TypeError, ValueError):
            return None

    def waiting(self) -> bool:
        """Whether the file set aside is still there, as it was."""
        try:
            return written(self.aside) == dict(self.proof)
        except OSError:
            return False


def set_aside(entries: Sequence[Aside]) -> None:
    """Rename each earlier output to its hidden name.

    Raises:
        OSError: one could not be moved; those moved already are put back first.
    """
    moved: list[Aside] = []
    try:
        for entry in entries:
            os.rename(entry.path, entry.aside)
            moved.append(entry)
    except BaseException:
        restore(moved)
        raise


def restore(entries: Iterable[Aside]) -> list[Path]:
    """Put back each file set aside that is still waiting, where its name is free again; returns those put back.

    One whose name was taken meanwhile (by another program) is left under its hidden name, with a warning.
    """
    restored = []
    for entry in entries:
        if not entry.waiting():
            continue  # never moved, or put back already
        if os.path.lexists(entry.path):
            log.warning(
                "could not put back %s: its name is taken; the earlier file is %s", entry.path, entry.aside
            )
            continue
        try:
            os.rename(entry.aside, entry.path)
        except OSError as exc:
            log.warning("could not put back %s (%s); the earlier file is %s", entry.path, exc, entry.aside)
            continue
        restored.append(entry.path)
    return restored


def discard(entries: Iterable[Aside]) -> None:
    """Remove the files set aside (their replacements are published and recorded)."""
    for entry in entries:
        if not entry.waiting():
            continue
        try:
            os.unlink(entry.aside)
        except OSError as exc:
            log.warning("could not remove the replaced file %s: %s", entry.aside, exc)
