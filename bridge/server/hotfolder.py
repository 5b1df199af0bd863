"""The hot folder (``stembridge serve --watch DIR``): drop audio in, find stems, parts and variations in ``done/``.

Layout (created on start)::

    DIR/separate/   audio files to split into stems      (optional sidecar song.wav.json or song.json)
    DIR/vary/       audio files to make variations of    (optional sidecar)
    DIR/generate/   a folder per request: context audio + request.json, or one file named
                    <name>__<stem>__<bpm>bpm__<bars>bars.wav (or with a sidecar)
    DIR/done/<name>/    the results, then the source moved in beside them
    DIR/failed/         <name>.txt saying why, and the source moved here so it is not tried again

A watcher thread polls the inboxes with ``os.scandir`` (no dependency, works on network volumes). A drop is
taken once its signature (size and modification time of the file and its sidecar, or of every entry of a
folder) has not changed for ``settle`` seconds across scans, its audio headers are complete (a WAV or AIFF no
shorter than its header says, readable by libsndfile, with samples) and, for a generate folder, it has a
``request.json`` or a name that says stem, bpm and bars. A drop that is still incomplete after ``give_up``
seconds of no change fails with the reason. Hidden and temp files are never taken.

Jobs go through the daemon's queue like OSC requests (client ``127.0.0.1``, request ids ``hotfolder-...``), so
progress, cancel, ``status``, the journal and all-or-nothing publishing apply. Results are written straight into
``done/<name>/`` (a name not in use: ``<name>-2`` otherwise). When a job ends, the watcher thread (not the
queue's worker) moves the source: to ``done/<name>/``, or to ``failed/``. A job cut off by a shutdown or a crash
leaves its source where it was, so the next start takes it again; one that finished was moved out of the inbox,
so it is never redone.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from bridge.errors import Busy, ConfigError, StembridgeError
from bridge.jobs.queue import JobEvent, ReplyTo, Submission
from bridge.jobs.spec import JobSpec
from bridge.server.hotfolder_drops import KINDS, Drop, job_for, list_drops, signature, waiting_reason
from bridge.server.lograte import LogLimiter

log = logging.getLogger(__name__)

DONE, FAILED = "done", "failed"
CLIENT = "127.0.0.1"  # local clients can ask for `status` and `cancel` of hot-folder jobs by their ids
ID_PREFIX = "hotfolder-"
SETTLE_S = 2.0
GIVE_UP_S = 60.0
MAX_NUMBERED = 1000


class Submitter(Protocol):
    """What the watcher needs of the job queue (:class:`bridge.jobs.queue.JobQueue`)."""

    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission: ...


def prepare_folders(root: Path) -> Path:
    """Create ``root`` and its inboxes, ``done`` and ``failed``; returns ``root`` made absolute.

    Raises:
        ConfigError: a folder cannot be created or written to.
    """
    root = Path(os.path.abspath(os.path.expanduser(root)))
    for sub in (*KINDS, DONE, FAILED):
        folder = root / sub
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the hot folder {folder}: {exc.strerror or exc}; pass --watch a folder you can "
                f"write to"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"the hot folder {folder} is not writable; fix its permissions or pass another --watch"
            )
    return root


class Settle:
    """How long each thing has looked the same: ``observe`` returns the seconds since its signature changed."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[Any, float]] = {}

    def observe(self, key: Path, sig: Any, now: float) -> float:
        old = self._seen.get(key)
        if old is None or old[0] != sig:
            self._seen[key] = (sig, now)
            return 0.0
        return now - old[1]

    def keep_only(self, keys: Iterable[Path]) -> None:
        keep = set(keys)
        for key in [k for k in self._seen if k not in keep]:
            del self._seen[key]


def move_unique(src: Path, folder: Path, name: str | None = None) -> Path:
    """Move ``src`` into ``folder`` as ``name`` (its own name by default), never replacing anything: ``x-2.wav``,
    ``x-3.wav``... when taken. A file moves atomically (a hard link, then the old name removed; a plain rename
    where the file system has no hard links); a folder is renamed.

    Raises:
        OSError: it could not be moved.
    """
    name = name or src.name
    stem, suffix = (name, "") if src.is_dir() else (Path(name).stem, Path(name).suffix)
    for n in range(1, MAX_NUMBERED + 1):
        target = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
        if os.path.lexists(target):
            continue
        if src.is_dir():
            os.rename(src, target)  # only the watcher thread creates entries here
            return target
        try:
            os.link(src, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT, exFAT, some network shares)
            os.rename(src, target)
            return target
        os.unlink(src)
        return target
    raise OSError(f"{folder} holds {MAX_NUMBERED} files named like {name}; empty it")


@dataclass(frozen=True)
class _Running:
    drop: Drop
    out: Path


class HotFolder:
    """Watches ``root``'s inboxes on a thread and runs what is dropped there through ``queue``.

    Args:
        root: the hot folder (created, with its subfolders, by :func:`prepare_folders`).
        queue: where jobs go.
        settle: seconds a drop must stay unchanged before it is taken.
        interval: seconds between scans (default: a quarter of ``settle``, at most 0.5).
        give_up: seconds an unchanged but incomplete drop waits before it fails.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        root: Path,
        queue: Submitter,
        *,
        settle: float = SETTLE_S,
        interval: float | None = None,
        give_up: float = GIVE_UP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = prepare_folders(root)
        self.settle = float(settle)
        self.interval = interval if interval is not None else min(0.5, max(0.1, self.settle / 4))
        self.give_up = max(float(give_up), self.settle)
        self._queue = queue
        self._clock = clock
        self._settle = Settle()
        self._running: dict[str, _Running] = {}  # request_id -> its drop; the watcher thread's alone
        self._claimed: set[Path] = set()  # done/<name> folders of running jobs
        self._stuck: set[Path] = set()  # drops that could not be moved out: not taken again in this run
        self._logs = LogLimiter(log, interval=60.0)  # a folder that cannot be read fails every scan
        self._events: collections.deque[JobEvent] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle (the daemon's side) ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the watcher thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="stembridge-hotfolder", daemon=True)
            self._thread.start()
            log.info("watching the hot folder %s (separate/, vary/, generate/; results in done/)", self.root)

    def stop_scanning(self) -> None:
        """Take no new drops; jobs that end from now on with an error leave their source in place (the next start
        takes it again). Call before the queue shuts down."""
        self._stopping.set()
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Handle the job events that came in, then stop the thread. Call after the queue has shut down."""
        self._stopping.set()
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the hot folder watcher did not stop within %g s", timeout)

    def on_job_event(self, event: JobEvent) -> None:
        """The queue's listener calls this (on the worker thread) with every job event; quick and thread-safe."""
        if not event.request_id.startswith(ID_PREFIX):
            return
        if event.kind == "made":  # which engine made a drop's files, and its notes: nobody watches a console
            for note in event.made_by[2:]:
                log.warning("hot folder: job %s (%s %s): %s", event.request_id, *event.made_by[:2], note)
        elif event.kind in ("done", "error"):
            self._events.append(event)
            self._wake.set()

    def _main(self) -> None:
        while True:
            closing = self._closing.is_set()
            try:
                self.tick(self._clock())
            except Exception:  # a bug must not stop the watching: log it and scan again
                self._logs.log(logging.ERROR, "bug", "the hot folder watcher failed a scan", exc_info=True)
            if closing:
                return
            self._wake.wait(self.interval)
            self._wake.clear()

    # --- the watcher thread --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One round: finish the jobs that ended, then (unless stopping) scan the inboxes."""
        while self._events:
            self._ended(self._events.popleft())
        if not self._stopping.is_set():
            self.scan(now)

    def scan(self, now: float) -> None:
        """Look at every inbox once; take the drops that have settled."""
        seen: list[Path] = []
        running = {r.drop.path for r in self._running.values()}
        for kind in KINDS:
            inbox = self.root / kind
            try:
                drops = list_drops(inbox, kind)
            except FileNotFoundError:  # removed by hand: put it back
                with contextlib.suppress(OSError):  # the next scan reports what stops it
                    inbox.mkdir(parents=True, exist_ok=True)
                continue
            except OSError as exc:
                self._logs.warning(f"list-{kind}", "hot folder: cannot list %s: %s", inbox, exc)
                continue
            for drop in drops:
                seen.append(drop.path)
                if drop.path not in running and drop.path not in self._stuck:
                    self._consider(drop, now)
        self._settle.keep_only(seen)

    def _consider(self, drop: Drop, now: float) -> None:
        try:
            still_for = self._settle.observe(drop.path, signature(drop), now)
        except OSError:  # it vanished or changed shape between the listing and now: next scan
            return
        if still_for < self.settle:
            return
        if drop.refusal:
            self._fail(drop, drop.refusal)
            return
        reason = waiting_reason(drop)
        if reason is None:
            self._submit(drop)
        elif still_for >= self.give_up:
            if drop.needs_request():
                self._fail(drop, _no_request_message(drop, self.give_up))
            else:
                self._fail(
                    drop,
                    f"{drop.label} was still incomplete after {self.give_up:g} s without changing: {reason}; copy "
                    f"or export it again",
                )

    def _claim_done(self, name: str) -> Path:
        done = self.root / DONE
        for n in range(1, MAX_NUMBERED + 1):
            out = done / (name if n == 1 else f"{name}-{n}")
            if out in self._claimed:
                continue
            if not os.path.lexists(out):
                return out
            # an empty one is what a job cut off before it published left behind: use it again
            if out.is_dir() and not any(not e.startswith(".") for e in os.listdir(out)):
                return out
        raise OSError(f"{done} holds {MAX_NUMBERED} folders named like {name}; empty it")

    def _submit(self, drop: Drop) -> None:
        try:
            out = self._claim_done(drop.name)
            spec = job_for(drop, out)
        except StembridgeError as exc:
            self._fail(drop, exc.message)
            return
        except OSError as exc:
            self._stuck.add(drop.path)
            log.error("hot folder: cannot take %s: %s", drop.label, exc)
            return
        rid = f"{ID_PREFIX}{drop.kind}-{secrets.token_hex(6)}"
        try:
            submission = self._queue.submit(CLIENT, rid, spec, ReplyTo(CLIENT, 0))
        except Busy as exc:  # tried again on the next scan
            self._logs.log(logging.INFO, "busy", "hot folder: %s waits: %s", drop.label, exc.message)
            return
        except StembridgeError as exc:
            self._fail(drop, exc.message)
            return
        self._running[rid] = _Running(drop, out)
        self._claimed.add(out)
        log.info(
            "hot folder: %s queued as job %r at position %d; results go to %s",
            drop.label,
            rid,
            submission.status.position,
            out,
        )

    def _ended(self, event: JobEvent) -> None:
        running = self._running.pop(event.request_id, None)
        if running is None:
            return
        self._claimed.discard(running.out)
        drop = running.drop
        if event.kind == "done":
            self._finish(drop, running.out, event)
            return
        _remove_if_empty(running.out)
        if self._stopping.is_set():
            log.info(
                "hot folder: %s stays in %s/ for the next start (%s)", drop.label, drop.kind, event.message
            )
            return
        self._fail(drop, event.message, event.request_id)

    def _finish(self, drop: Drop, out: Path, event: JobEvent) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if drop.is_folder:
                for name in sorted(os.listdir(drop.path)):
                    move_unique(drop.path / name, out)
                drop.path.rmdir()
            else:
                for path in (drop.path, drop.request):
                    if path is not None:
                        move_unique(path, out)
        except OSError as exc:
            self._stuck.add(drop.path)
            log.error("hot folder: %s is done, but moving it into %s failed: %s", drop.label, out, exc)
            return
        log.info("hot folder: %s done: %d file(s) in %s", drop.label, len(event.paths), out)

    def _fail(self, drop: Drop, reason: str, request_id: str = "") -> None:
        failed = self.root / FAILED
        where = ""
        try:
            sources = [drop.path] if drop.is_folder or drop.request is None else [drop.path, drop.request]
            moved = [move_unique(p, failed) for p in sources]
            where = f"{drop.label} was moved to {', '.join(f'failed/{p.name}' for p in moved)}"
        except OSError as exc:
            self._stuck.add(drop.path)
            where = f"{drop.label} could not be moved out of {drop.kind}/ ({exc}); remove it by hand"
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        job = f"job {request_id}, " if request_id else ""
        text = f"{reason}\n\n{where}. Fix the problem and drop it into {drop.kind}/ again.\n({job}{stamp})\n"
        try:
            note = _write_note(failed, f"{drop.name}.txt", text)
        except OSError as exc:
            log.error(
                "hot folder: %s failed (%s), and writing failed/%s.txt failed: %s",
                drop.label,
                reason,
                drop.name,
                exc,
            )
            return
        log.warning("hot folder: %s failed: %s (see %s)", drop.label, reason, note)


def _no_request_message(drop: Drop, waited: float) -> str:
    return (
        f"{drop.label} got no request.json within {waited:g} s and its name does not say the stem, bpm and "
        f'bars; put a request.json like {{"stem": "bass", "bpm": 120, "bars": 8}} in it, or name the folder '
        f"like {drop.name}__bass__120bpm__8bars"
    )


def _write_note(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to a new file ``folder/name`` (numbered when taken), all at once."""
    tmp = folder / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        return move_unique(tmp, folder, name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remove_if_empty(folder: Path) -> None:
    """Remove a results folder that a failed job left empty (one with files in it stays)."""
    with contextlib.suppress(OSError):  # missing, or not empty: both mean there is nothing to tidy
        folder.rmdir()
