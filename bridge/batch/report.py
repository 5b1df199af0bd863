"""What a batch did: :class:`Summary` (text or JSON) and :class:`BatchBar`, the progress bar with counts,
rate and ETA (tqdm; on a terminal only, so scripts and logs get clean output)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Summary:
    """``done``: items finished by this run; ``skipped``: items a previous run finished; ``failed``: ``[{"input",
    "error"}]``; ``outputs``: ``[{"input", "stem", "path"}]`` of every finished item, done now or before."""

    done: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "outputs": self.outputs}

    def lines(self) -> list[str]:
        """The summary for people: the counts, then each failure (input and its one-line error)."""
        head = f"batch: {self.done} done, {self.skipped} skipped (done before), {len(self.failed)} failed"
        return [head, *(f"  failed  {f['input']}: {f['error']}" for f in self.failed)]


class BatchBar:
    """Items done out of the total, with rate and ETA; items skipped count as done from the start."""

    def __init__(self, total: int, skipped: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        from tqdm import tqdm

        stream = stream or sys.stderr
        self._failed = 0
        self._bar = tqdm(
            total=total,
            initial=skipped,
            unit="item",
            desc="batch",
            file=stream,
            dynamic_ncols=True,
            disable=not (enabled and stream.isatty()),
        )

    def advance(self, failed: bool = False) -> None:
        if failed:
            self._failed += 1
            self._bar.set_postfix_str(f"{self._failed} failed", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
