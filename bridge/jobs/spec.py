"""What a job is: its kind and its validated options, in a form the journal can store as JSON.

The protocol builds a :class:`JobSpec` from a request once every option has been checked; the runner turns it
into a pipeline call. Nothing here touches files or samples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.engines.base import ProgressCallback

JOB_KINDS = ("separate", "generate", "vary")


def fingerprint(kind: str, options: dict[str, Any]) -> str:
    """What a job asks for, as a SHA-256 of its kind and canonical JSON options (keys sorted, tuples as lists).

    Two requests with the same fingerprint ask for the same job; the journal keeps it to tell a client's repeat of
    a request from a new job that reuses its request_id.
    """
    canonical = json.dumps([kind, options], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class JobSpec:
    """A validated job.

    Attributes:
        kind: ``separate``, ``generate`` or ``vary``.
        options: JSON-compatible values, already checked and normalised by :mod:`bridge.server.protocol`:
            ``path`` (separate, vary) or ``stem`` and ``context`` (generate), ``out`` (an absolute folder),
            ``format``, ``bit_depth``, ``sample_rate``, ``position``, ``engine``, ``model`` and the job's own
            keys (``stems``; ``bpm``, ``bars``, ``time_signature``, ``prompt``, ``seed``, ``variations``,
            ``match_loudness``; ``strength``).
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.kind, self.options)

    def to_json(self) -> str:
        return json.dumps(self.options, sort_keys=True)

    @classmethod
    def from_json(cls, kind: str, text: str) -> JobSpec:
        return cls(kind, dict(json.loads(text)))


@dataclass(frozen=True)
class Outcome:
    """What a finished job produced: the files, and the pipeline's own description of the result."""

    paths: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


# Called by a job right before it publishes its files, with the planned files as JSON objects (see
# bridge.audio.writer.Staged.to_dict); the queue journals them. Raising stops the job before anything is
# visible (Cancelled when a cancel came in meanwhile).
PublishHook = Callable[[list[dict[str, Any]]], None]

# Runs one job to the end, calling the progress callback between chunks (Cancelled raised there stops it) and
# the publish hook before its files appear.
Runner = Callable[[JobSpec, ProgressCallback, PublishHook], Outcome]
