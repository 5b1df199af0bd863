"""The job journal: one SQLite file in the state folder that records every job, its options and its outputs.

It lets ``status`` answer after a restart, turns a job cut off by a crash into ``failed`` with the error code
``interrupted`` on the next start (never silently lost), and lets the queue see that a request_id was already
used, and whether a repeat asks for the same job (the ``fingerprint`` of its kind and options). Right before a job publishes its files it records their planned paths (the ``plan``), so that the
files of a job cut off in the middle of publishing can be removed on the next start: a job writes all its
files or none. The database runs in WAL mode with ``synchronous=NORMAL``: a committed change survives the
process being killed; only a power cut can lose the last moments (a publish plan is written with
``synchronous=FULL``, so it survives that too).

One connection is shared by the event loop (submit, status) and the worker thread (state changes), behind a
lock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError, Interrupted, StembridgeError
from bridge.jobs.spec import fingerprint

log = logging.getLogger(__name__)

INTERRUPTED = Interrupted.code  # the error code of a job the daemon stopped in the middle of
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")
SCHEMA_VERSION = 3  # 2: the plan column; 3: the fingerprint column
FILE_NAME = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    client        TEXT    NOT NULL,
    request_id    TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    options       TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    fraction      REAL    NOT NULL DEFAULT 0,
    outputs       TEXT    NOT NULL DEFAULT '[]',
    detail        TEXT    NOT NULL DEFAULT '{}',
    error_code    TEXT    NOT NULL DEFAULT '',
    error_message TEXT    NOT NULL DEFAULT '',
    reply_host    TEXT    NOT NULL DEFAULT '',
    reply_port    INTEGER NOT NULL DEFAULT 0,
    plan          TEXT    NOT NULL DEFAULT '[]',
    fingerprint   TEXT    NOT NULL DEFAULT '',
    created       REAL    NOT NULL,
    updated       REAL    NOT NULL,
    PRIMARY KEY (client, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""
_COLUMNS = (
    "client, request_id, kind, options, state, fraction, outputs, detail, error_code, error_message, "
    "reply_host, reply_port, created, updated, plan, fingerprint"
)


@dataclass(frozen=True)
class JobRecord:
    """One job as the journal knows it; ``(client, request_id)`` is the key, ``client`` the requester's IP.

    ``fingerprint`` is :func:`bridge.jobs.spec.fingerprint` of ``kind`` and ``options``; empty only for a row
    an older stembridge wrote whose options could not be read back (no repeat ever matches it).
    """

    client: str
    request_id: str
    kind: str
    options: dict[str, Any]
    state: str
    fraction: float = 0.0
    outputs: tuple[str, ...] = ()
    detail: dict[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""
    reply_host: str = ""
    reply_port: int = 0
    created: float = 0.0
    updated: float = 0.0
    plan: tuple[dict[str, Any], ...] = ()
    fingerprint: str = ""


def _record(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        client=row[0],
        request_id=row[1],
        kind=row[2],
        options=json.loads(row[3]),
        state=row[4],
        fraction=float(row[5]),
        outputs=tuple(json.loads(row[6])),
        detail=json.loads(row[7]),
        error_code=row[8],
        error_message=row[9],
        reply_host=row[10],
        reply_port=int(row[11]),
        created=float(row[12]),
        updated=float(row[13]),
        plan=tuple(json.loads(row[14])),
        fingerprint=row[15],
    )


class Journal:
    """The SQLite journal at ``path`` (``":memory:"`` for tests); created with its folder if missing.

    Raises:
        ConfigError: the file cannot be opened, is not a journal, or was written by a newer stembridge.
    """

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the job journal {path} was written by a newer stembridge (schema {version}); "
                    f"upgrade stembridge or pass another --state-dir"
                )
            self._db.executescript(_SCHEMA)
            self._migrate(self._db, version)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"cannot open the job journal {path}: {exc}; move the file away or pass another --state-dir"
            ) from exc

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring a journal written by an older stembridge up to this schema (its jobs are kept).

        Schema 3 adds each job's fingerprint; the rows of older daemons get theirs from the kind and options
        they stored (the same validated options, so a repeat of such a job still matches it). A row whose
        options cannot be read keeps an empty fingerprint, which no request matches: its request_id is then
        refused for new jobs until the row is pruned, rather than risk answering with another job's files.
        """
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "plan" not in columns:  # schema 1
            db.execute("ALTER TABLE jobs ADD COLUMN plan TEXT NOT NULL DEFAULT '[]'")
        if "fingerprint" not in columns:  # schema 1 or 2
            db.execute("BEGIN")  # the column and its values together, or neither
            db.execute("ALTER TABLE jobs ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''")
            rows = db.execute("SELECT client, request_id, kind, options FROM jobs").fetchall()
            for client, request_id, kind, options in rows:
                try:
                    value = fingerprint(kind, json.loads(options))
                except (ValueError, TypeError):
                    log.warning(
                        "job %r in the journal has unreadable options; its id stays taken", request_id
                    )
                    continue
                db.execute(
                    "UPDATE jobs SET fingerprint = ? WHERE client = ? AND request_id = ?",
                    (value, client, request_id),
                )
            db.execute("COMMIT")
        if not {"plan", "fingerprint"} <= columns:
            log.info("upgraded the job journal %s from schema %d to %d", self.path, version, SCHEMA_VERSION)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            if self._db is None:
                raise StembridgeError(f"the job journal {self.path} is closed")
            try:
                return self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StembridgeError(
                    f"cannot write the job journal {self.path}: {exc}; check the disk space and permissions"
                ) from exc

    def add(
        self,
        client: str,
        request_id: str,
        kind: str,
        options: dict[str, Any],
        reply_host: str,
        reply_port: int,
    ) -> None:
        """Record a new job as ``queued``, with its fingerprint. The key ``(client, request_id)`` must be new."""
        now = self._clock()
        self._execute(
            "INSERT INTO jobs (client, request_id, kind, options, state, reply_host, reply_port, created, "
            "updated, fingerprint) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
            (
                client,
                request_id,
                kind,
                json.dumps(options, sort_keys=True),
                reply_host,
                int(reply_port),
                now,
                now,
                fingerprint(kind, options),
            ),
        )

    def update(
        self,
        client: str,
        request_id: str,
        state: str,
        *,
        fraction: float | None = None,
        outputs: Sequence[str] | None = None,
        detail: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
        plan: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Move a job to ``state``, with its ``outputs`` and ``detail`` or its ``(code, message)`` error, or the
        ``plan`` of files it is about to publish (JSON objects; see :func:`bridge.jobs.leftovers.undo_publish`)."""
        sets = ["state = ?", "updated = ?"]
        params: list[Any] = [state, self._clock()]
        if fraction is not None:
            sets.append("fraction = ?")
            params.append(float(fraction))
        if outputs is not None:
            sets.append("outputs = ?")
            params.append(json.dumps(list(outputs)))
        if detail is not None:
            sets.append("detail = ?")
            params.append(json.dumps(detail, default=str))
        if error is not None:
            sets += ["error_code = ?", "error_message = ?"]
            params += [error[0], error[1]]
        if plan is not None:
            sets.append("plan = ?")
            params.append(json.dumps(list(plan)))
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE client = ? AND request_id = ?"
        if plan is None:
            self._execute(sql, (*params, client, request_id))
            return
        # The files appear right after this: make the plan survive a power cut too, not only a killed process.
        self._execute("PRAGMA synchronous=FULL")
        try:
            self._execute(sql, (*params, client, request_id))
        finally:
            self._execute("PRAGMA synchronous=NORMAL")

    def get(self, client: str, request_id: str) -> JobRecord | None:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE client = ? AND request_id = ?", (client, request_id)
        ).fetchone()
        return None if row is None else _record(row)

    def recover(self) -> list[JobRecord]:
        """Mark every job left ``queued`` or ``running`` by a previous run as failed (``interrupted``).

        A job that had recorded a publish plan was cut off while publishing its files; the daemon removes the
        ones it had published (:func:`bridge.jobs.leftovers.undo_publish`), and the message says so.

        Returns:
            Those jobs as now recorded (with their plans), so the daemon can clean up and tell their clients.
        """
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN {ACTIVE_STATES} ORDER BY created"
        ).fetchall()
        cut = []
        for rec in map(_record, rows):
            doing = "writing its files (the files it had written were removed)" if rec.plan else rec.state
            error = (INTERRUPTED, f"the daemon stopped while this job was {doing}; send the request again")
            self.update(rec.client, rec.request_id, "failed", error=error)
            cut.append(replace(rec, state="failed", error_code=error[0], error_message=error[1]))
        if cut:
            log.warning(
                "%d job(s) were cut off when the daemon last stopped; marked failed (interrupted)", len(cut)
            )
        return cut

    def prune(self, max_age_s: float) -> int:
        """Forget finished jobs last changed more than ``max_age_s`` seconds ago; returns how many."""
        cursor = self._execute(
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND updated < ?",
            (self._clock() - max_age_s,),
        )
        return int(cursor.rowcount)

    def close(self) -> None:
        """Write everything into the main database file and close it. Safe to call twice."""
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("could not checkpoint the job journal %s: %s", self.path, exc)
            self._db.close()
            self._db = None
