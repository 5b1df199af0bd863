"""The jam over OSC: a real daemon on loopback, python-osc as the DAW, and liblo's oscsend/oscdump.

Assertions are on content (which play index, exact lengths, the take's samples, exact messages), never on how
fast anything was: a part that must be late comes from an engine that cannot finish (it waits for a release
that only comes after the deadline), and a part that must be on time has a budget of many seconds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.timing import TimeSignature
from bridge.config import Settings
from bridge.engines.base import GenerateSpec, ProgressCallback
from bridge.engines.builtin import BuiltinEngine
from bridge.errors import InvalidArgument
from bridge.jam import JamOptions, JamSession
from bridge.jam.worker import Cycle, JamEvent, JamWorker, Timing
from bridge.jobs.queue import ReplyTo
from bridge.server import jam as jam_service
from bridge.server import jam_protocol as jp
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.handlers import RequestHandler
from bridge.server.jam import MAX_SESSIONS, JamService
from bridge.server.lograte import LogLimiter
from bridge.server.osc import encode_message
from bridge.server.paths import allowed_roots, check_input, input_path
from tests.test_daemon import (  # noqa: F401 - no_leaked_threads fails a test that leaks threads
    WAIT,
    OscPeer,
    free_udp_port,
    need_liblo,
    no_leaked_threads,
)

SR = 8000
# One bar of 4/4 at 60 bpm is 4 s: 32000 samples at 8 kHz. With lag 2 a part has 1 s + 2 cycles = 9 s.
SLOW = ["bpm", 60, "bars", 1, "samplerate", SR, "lag", 2]
L_SLOW = 32000


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )


def cycle_file(folder: Path, index: int, samples: int, *, amp: float = 0.3, name: str = "") -> str:
    """The humans' audio of a cycle: an A minor chord struck on each beat (60 bpm), ``samples`` long."""
    t = np.arange(samples) / SR
    env = np.exp(-4.0 * (t % 1.0))
    tone = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 261.63, 329.63)) * env
    audio = (amp * tone / 4).astype(np.float32)
    path = folder / (name or f"humans-{index}.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([audio, audio]).T, SR, subtype="FLOAT")
    return str(path)


class Jam(OscPeer):
    """A DAW client: starts a session, sends cycles, keeps every reply."""

    def start(self, rid: str, *options: Any, stem: str = "bass") -> str:
        self.request(jp.START, rid, stem, *options)
        _, args = self.wait_for(rid, jp.STARTED, protocol.ERROR)
        assert args[:1] == [rid] and len(args) == 3, args
        assert isinstance(args[1], str) and args[2] > 0
        return str(args[1])

    def error(self, rid: str) -> tuple[str, str]:
        address, args = self.wait_for(rid, protocol.ERROR)
        return args[1], args[2]

    def answer(self, session: str) -> tuple[str, list[Any]]:
        return self.wait_for(session, jp.PART, jp.LATE)

    def takes(self, *sessions: str) -> dict[str, str]:
        """The ``stopped`` replies of ``sessions``, in whatever order they come: session -> take."""
        seen: dict[str, str] = {}
        while True:
            seen.update(
                {a[0]: a[1] for address, a in self.received if address == jp.STOPPED and a[0] in sessions}
            )
            missing = [s for s in sessions if s not in seen]
            if not missing:
                return seen
            self.wait_for(missing[0], jp.STOPPED)


@pytest.fixture()
def daemon(settings: Settings) -> Iterator[DaemonThread]:
    with DaemonThread(settings, discovery=False) as d:
        yield d


@pytest.fixture()
def jam(daemon: DaemonThread) -> Iterator[Jam]:
    peer = Jam(daemon.port)
    yield peer
    peer.close()


def frames(path: str) -> int:
    return int(sf.info(path).frames)


# --- a session's life ---------------------------------------------------------------------------------------


def test_cycles_get_their_parts_and_stop_writes_the_take(
    jam: Jam, tmp_path: Path, settings: Settings
) -> None:
    session = jam.start("s1", *SLOW)
    parts: dict[int, str] = {}
    for index in range(3):
        jam.request(jp.CYCLE, f"c{index}", session, index, cycle_file(tmp_path / "in", index, L_SLOW - 8000))
        address, args = jam.answer(session)
        assert address == jp.PART, args
        assert args[1] == index + 3  # play_index = index + 1 + lag
        assert args[3] > 0  # seconds spent
        parts[args[1]] = args[2]
    folder = settings.out_dir.resolve() / f"jam-{session}"
    for play, path in parts.items():
        assert path == str(folder / f"part-{play}.wav")
        assert frames(path) == L_SLOW and sf.info(path).samplerate == SR
    jam.request(jp.STOP, "x1", session)
    address, args = jam.wait_for(session, jp.STOPPED)
    take = args[1]
    assert take == str(folder / "performance.wav")
    audio, rate = sf.read(take, dtype="float32", always_2d=True)
    assert rate == SR and audio.shape[0] == 6 * L_SLOW  # cycles 0..5, the AI from cycle 3 on
    assert not np.any(audio[: 3 * L_SLOW])
    for play, path in parts.items():
        part, _ = sf.read(path, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(audio[play * L_SLOW : (play + 1) * L_SLOW], part)
    assert sorted(p.name for p in folder.iterdir()) == [
        "part-3.wav",
        "part-4.wav",
        "part-5.wav",
        "performance.wav",
    ]
    # a repeated stop (a UDP retry) gets the same answer; a cycle now is refused
    jam.request(jp.STOP, "x2", session)
    assert jam.wait_for(session, jp.STOPPED)[1] == [session, take]
    jam.request(jp.CYCLE, "c9", session, 9, cycle_file(tmp_path / "in", 9, 100))
    code, message = jam.error("c9")
    assert code == "invalid_argument"
    assert message == (
        f"session {session} is stopped (its take is {take}); a cycle belongs to a running session: start a "
        f"new one with /stembridge/jam/start"
    )


def test_a_new_bpm_changes_the_next_parts_length(jam: Jam, tmp_path: Path) -> None:
    session = jam.start("s1", *SLOW)
    jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 1000), "bpm", 120)
    address, args = jam.answer(session)
    assert address == jp.PART and frames(args[2]) == L_SLOW // 2  # one bar at 120 bpm
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


def test_a_client_silent_for_four_cycles_is_stopped_and_its_take_written(jam: Jam, tmp_path: Path) -> None:
    # one bar of 4/4 at 400 bpm: a 0.6 s cycle, so the session gives up after 2.4 s without a word
    session = jam.start("s1", "bpm", 400, "bars", 1, "samplerate", SR, "lag", 2)
    jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 2000))
    assert jam.answer(session)[1][1] == 3  # a part, or late on a very busy machine: either way for cycle 3
    _, args = jam.wait_for(session, jp.STOPPED)
    assert frames(args[1]) == 4 * 4800  # cycles 0..3: its part plays in cycle 3
    jam.request(jp.CYCLE, "c1", session, 1, cycle_file(tmp_path, 1, 2000))
    assert jam.error("c1")[1].startswith(f"session {session} is stopped")


def test_silence_counts_from_started_not_from_the_engine_loading(settings: Settings, tmp_path: Path) -> None:
    def slow_load(
        session: str, options: dict[str, Any], engine: str, model: str | None, out: str
    ) -> JamSession:
        time.sleep(3.0)  # a model loading: longer than 4 cycles of 0.6 s
        return JamSession(JamOptions(**options), BuiltinEngine(), Path(out), session)

    with DaemonThread(settings, discovery=False, jam=slow_load) as d:
        jam = Jam(d.port)
        try:
            session = jam.start("s1", "bpm", 400, "bars", 1, "samplerate", SR, "lag", 2)
            jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 2000))
            address, args = jam.answer(session)  # not `stopped`: the session waited for its first cycle
            assert args[1] == 3
            assert not [a for a, _ in jam.received if a == jp.STOPPED]
        finally:
            jam.close()


def test_stopping_the_daemon_stops_every_session_and_writes_their_takes(
    settings: Settings, tmp_path: Path
) -> None:
    with DaemonThread(settings, discovery=False) as d:
        jam = Jam(d.port)
        try:
            first, second = jam.start("s1", *SLOW), jam.start("s2", *SLOW, stem="drums")
            jam.request(jp.CYCLE, "c0", first, 0, cycle_file(tmp_path, 0, 4000))
            assert jam.answer(first)[0] == jp.PART
            d.stop()
            takes = set(jam.takes(first, second).values())
        finally:
            jam.close()
    root = settings.out_dir.resolve()
    assert takes == {
        str(root / f"jam-{first}" / "performance.wav"),
        str(root / f"jam-{second}" / "performance.wav"),
    }
    assert frames(str(root / f"jam-{first}" / "performance.wav")) == 4 * L_SLOW
    assert frames(str(root / f"jam-{second}" / "performance.wav")) == L_SLOW  # cycle 0, silence
    leftovers = [p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".wav")]
    assert leftovers == []


# --- late parts and the mailbox ----------------------------------------------------------------------------


class GatedEngine(BuiltinEngine):
    """The builtin engine behind a gate: a cycle's generation waits (reporting progress, so the session's
    deadline and cancel can stop it) until ``release`` is set. The start's estimate (no progress callback)
    passes at once."""

    def __init__(self, release: threading.Event, entered: threading.Semaphore) -> None:
        super().__init__()
        self.release = release
        self.entered = entered

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        if progress is not None:
            self.entered.release()
            while not self.release.wait(0.005):
                progress(0.5, "waiting at the gate")
        return super().generate(context, sample_rate, spec, progress)


class Gate:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def factory(
        self, session: str, options: dict[str, Any], engine: str, model: str | None, out: str
    ) -> JamSession:
        return JamSession(JamOptions(**options), GatedEngine(self.release, self.entered), Path(out), session)


@pytest.fixture()
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


def test_a_part_not_ready_by_its_bar_line_is_reported_late_and_the_next_cycle_goes_on(
    settings: Settings, gate: Gate, tmp_path: Path
) -> None:
    with DaemonThread(settings, discovery=False, jam=gate.factory) as d:
        jam = Jam(d.port)
        try:
            # lag 0 at 400 bpm: a part has one beat, 0.15 s, and the gate stays shut past it
            session = jam.start("s1", "bpm", 400, "bars", 2, "samplerate", SR)
            jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 3000))
            address, args = jam.answer(session)
            assert (address, args[1]) == (jp.LATE, 1) and args[2] >= 0
            gate.release.set()
            jam.request(jp.CYCLE, "c1", session, 1, cycle_file(tmp_path, 1, 3000))
            address, args = jam.answer(session)  # on time or late, the session answers the next cycle
            assert args[1] == 2
            jam.request(jp.STOP, "x", session)
            jam.wait_for(session, jp.STOPPED)
        finally:
            gate.release.set()
            jam.close()
    folder = settings.out_dir.resolve() / f"jam-{session}"
    assert not (folder / "part-1.wav").exists()


def test_a_newer_cycle_replaces_a_waiting_one_which_is_answered_late(
    settings: Settings, gate: Gate, tmp_path: Path
) -> None:
    with DaemonThread(settings, discovery=False, jam=gate.factory) as d:
        jam = Jam(d.port)
        try:
            session = jam.start("s1", *SLOW)
            jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 4000))
            assert gate.entered.acquire(timeout=WAIT)  # cycle 0 is being computed
            jam.request(jp.CYCLE, "c1", session, 1, cycle_file(tmp_path, 1, 4000))
            jam.request(jp.CYCLE, "c2", session, 2, cycle_file(tmp_path, 2, 4000))
            address, args = jam.answer(session)
            assert (address, args[1]) == (jp.LATE, 4)  # cycle 1 (for cycle 4) never computed
            gate.release.set()
            answers = sorted((a, args[1]) for a, args in (jam.answer(session), jam.answer(session)))
            assert answers == [(jp.PART, 3), (jp.PART, 5)]
            jam.request(jp.STOP, "x", session)
            jam.wait_for(session, jp.STOPPED)
        finally:
            gate.release.set()
            jam.close()


# --- errors --------------------------------------------------------------------------------------------------


def test_bad_cycles_get_errors_and_the_session_goes_on(jam: Jam, tmp_path: Path) -> None:
    session = jam.start("s1", *SLOW)
    folder = tmp_path / "in"
    jam.request(jp.CYCLE, "c0", session, 0, cycle_file(folder, 0, 4000))
    assert jam.answer(session)[0] == jp.PART
    cases = [
        (
            [session, 0, cycle_file(folder, 0, 4000, name="again.wav")],
            "invalid_argument",
            "index 0 does not follow the session's last cycle, 0; number the cycles 0, 1, 2... from the "
            "jam's start, never going back",
        ),
        (
            [session, 1, str(folder / "missing.wav")],
            "unreadable_audio",
            f"file not found: {folder / 'missing.wav'}; check the path",
        ),
        (
            [session, 2, cycle_file(folder, 2, 4000, amp=0.0)],
            "unreadable_audio",
            f"cycle 2's file {folder / 'humans-2.wav'} is silent (peak under -80 dBFS); is the track's input "
            "armed and receiving the band? send the cycle's recording",
        ),
        (
            [session, 3, cycle_file(folder, 3, L_SLOW + 1)],
            "invalid_argument",
            f"cycle 3's file {folder / 'humans-3.wav'} holds {L_SLOW + 1} samples at {SR} Hz, more than the "
            f"cycle's {L_SLOW}; send the cycle's audio from its first bar line, at most one cycle long",
        ),
        (
            [session, 4, cycle_file(folder, 4, 4000), "bpm", 500],
            "invalid_argument",
            "bpm must be between 20 and 400, got 500",
        ),
        (
            ["nosuch", 5, cycle_file(folder, 5, 4000)],
            "invalid_argument",
            "unknown session 'nosuch'; use the session that /stembridge/jam/started named, or start one",
        ),
        (
            [session, 6, "relative.wav"],
            "invalid_argument",
            "path must be an absolute path (the daemon does not know your working folder), got 'relative.wav'",
        ),
    ]
    for n, (args, code, message) in enumerate(cases):
        jam.request(jp.CYCLE, f"bad{n}", *args)
        assert jam.error(f"bad{n}") == (code, message)
    jam.request(jp.CYCLE, "c7", session, 7, cycle_file(folder, 7, 4000))
    address, args = jam.answer(session)
    assert (address, args[1]) == (jp.PART, 10)
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


def test_bad_starts_get_errors(jam: Jam, tmp_path: Path, settings: Settings) -> None:
    session = jam.start("s1", *SLOW)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = settings.out_dir / "link"
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    cases: list[tuple[list[Any], str, str | None]] = [
        (
            ["bass", *SLOW],
            "invalid_argument",
            f"request_id 's1' already started session {session}; send each jam/start with a new request_id",
        ),
        (["bass", "bpm", 401], "invalid_argument", "bpm must be between 20 and 400, got 401"),
        (
            ["bass", "bars", 17],
            "invalid_argument",
            "bars must be a whole number between 1 and 16, got the int 17",
        ),
        (["bass", "lag", 3], "invalid_argument", "lag must be a whole number between 0 and 2, got the int 3"),
        (
            ["flute"],
            "invalid_argument",
            "stem must be one of bass, drums, keys, pad, lead, vocals, guitar, piano, other, got 'flute'",
        ),
        (
            ["bass", "bars", 1, "lead", 4],
            "invalid_argument",
            "lead must be shorter than the cycle (2 s, 88200 samples), got 4 quarter notes (2 s); send a smaller lead or more bars",
        ),
        (["bass", "out", "link"], "invalid_argument", None),
        (
            ["bass", "engine", "nosuch"],
            "unknown_engine",
            "unknown engine 'nosuch'; choose one of: auto, audiocraft, builtin, demucs, musicgen",
        ),
        (
            ["bass", "volume", 3],
            "invalid_argument",
            "unknown option 'volume' for jam/start; use bars, bpm, engine, lag, lead, memory, model, on_late, "
            "out, prompt, samplerate, seed, timesig, token",
        ),
    ]
    for n, (args, code, message) in enumerate(cases):
        rid = "s1" if n == 0 else f"bad{n}"
        jam.request(jp.START, rid, *args)
        got = jam.error(rid)
        assert got[0] == code, got
        if message is not None:
            assert got[1] == message
    assert "out must be a folder inside the render folder" in _last_error(jam, "bad6")
    assert not list(outside.iterdir())
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


def test_a_start_the_engine_cannot_serve_is_refused_and_its_request_id_stays_free(jam: Jam) -> None:
    jam.request(jp.START, "s1", "vocals", *SLOW)
    assert jam.error("s1") == (
        "unsupported",
        "the builtin engine cannot generate 'vocals'; it knows bass, drums, keys, pad, lead (vocals, guitar, "
        "piano and other need the musicgen engine: pip install 'stembridge[models]', then stembridge models "
        "pull musicgen-small)",
    )
    session = jam.start("s1", *SLOW)  # the failed start took no session
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


@pytest.mark.parametrize(
    ("address", "args", "message"),
    [
        (jp.START, [], "/stembridge/jam/start needs the stem after reply_port and request_id"),
        (jp.START, ["bass", "bpm"], "options must come as key value pairs; the string 'bpm' has no value"),
        (jp.START, [b"\x00\x01", "bpm", 120], "stem must be a string, got a blob of 2 bytes"),
        (jp.START, ["bass", "bpm", 120, "bpm", 90], "option 'bpm' given twice; give it once"),
        (
            jp.CYCLE,
            ["abc"],
            "/stembridge/jam/cycle needs the index and the path after reply_port and request_id",
        ),
        (
            jp.CYCLE,
            ["abc", 1.5, "/x.wav"],
            "index must be a whole number between 0 and 2147483647, got the float 1.5",
        ),
        (
            jp.CYCLE,
            ["abc", -1, "/x.wav"],
            "index must be a whole number between 0 and 2147483647, got the int -1",
        ),
        (jp.CYCLE, ["abc", 0, "/x.wav", "seed", 3], "unknown option 'seed' for jam/cycle; use bpm, token"),
        (jp.STOP, [], "/stembridge/jam/stop needs the session after reply_port and request_id"),
        (jp.STOP, [True], "session must be a string, got the boolean true"),
    ],
)
def test_malformed_jam_requests_get_one_error_each(
    jam: Jam, address: str, args: list[Any], message: str
) -> None:
    jam.request(address, "r1", *args)
    assert jam.error("r1") == ("invalid_argument", message)
    jam.request(protocol.PING, "p1")
    jam.wait_for("p1", protocol.PONG)


def _last_error(jam: Jam, rid: str) -> str:
    return next(
        str(args[2]) for address, args in jam.received if address == protocol.ERROR and args[0] == rid
    )


class Recorder:
    """Stands in for the replier and the job queue."""

    def __init__(self) -> None:
        self.sent: list[tuple[ReplyTo, tuple[str, list[Any]]]] = []

    def send(self, to: ReplyTo, reply: tuple[str, list[Any]]) -> None:
        self.sent.append((to, reply))

    async def wait(self, address: str) -> tuple[ReplyTo, list[Any]]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for to, (addr, args) in self.sent:
                if addr == address:
                    return to, args
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {address} in {self.sent}")


def test_a_session_belongs_to_the_host_that_started_it(settings: Settings, tmp_path: Path) -> None:
    rec = Recorder()
    settings.out_dir.mkdir(parents=True)
    inside = cycle_file(settings.out_dir, 0, 4000)

    async def run() -> None:
        service = JamService(settings, rec)  # type: ignore[arg-type]
        logs = LogLimiter(logging.getLogger("test.jam"))
        handler = RequestHandler(settings, rec, rec, logs, jam=service)  # type: ignore[arg-type]
        handler.on_packet(encode_message(jp.START, [9001, "s1", "bass", *SLOW]), "127.0.0.1", 5000, None)
        _, (rid, session, _) = await rec.wait(jp.STARTED)
        for address, args in ((jp.CYCLE, [9002, "c0", session, 0, inside]), (jp.STOP, [9002, "x", session])):
            handler.on_packet(encode_message(address, args), "192.0.2.7", 5000, None)
        await service.close(WAIT)
        replies = [(to.host, to.port, reply) for to, reply in rec.sent[1:]]
        unknown = (
            f"unknown session {session!r}; use the session that /stembridge/jam/started named, or start one"
        )
        assert replies[:2] == [
            ("192.0.2.7", 9002, (protocol.ERROR, ["c0", "invalid_argument", unknown])),
            ("192.0.2.7", 9002, (protocol.ERROR, ["x", "invalid_argument", unknown])),
        ]
        take = settings.out_dir.resolve() / f"jam-{session}" / "performance.wav"
        assert replies[2:] == [("127.0.0.1", 9001, (jp.STOPPED, [session, str(take)]))]

    asyncio.run(run())


def test_a_token_daemon_refuses_a_jam_without_it(settings: Settings) -> None:
    with DaemonThread(settings.with_overrides(token="sesame"), discovery=False) as d:
        jam = Jam(d.port)
        try:
            jam.request(jp.START, "s1", "bass")
            assert jam.error("s1")[0] == "unauthorized"
            session = jam.start("s2", *SLOW, "token", "sesame")
            jam.request(jp.STOP, "x", session)
            assert jam.error("x")[0] == "unauthorized"
            jam.request(jp.STOP, "x2", session, "token", "sesame")
            jam.wait_for(session, jp.STOPPED)
        finally:
            jam.close()


def test_a_remote_cycle_file_must_lie_inside_the_roots(settings: Settings, tmp_path: Path) -> None:
    roots = [settings.out_dir]
    request = jp.parse_jam(
        jp.CYCLE, [9000, "c", "abc", 0, str(settings.out_dir / "a.wav")], settings, remote=True, roots=roots
    )
    assert isinstance(request, jp.JamCycle)
    with pytest.raises(Exception) as exc:
        jp.parse_jam(
            jp.CYCLE, [9000, "c", "abc", 0, str(tmp_path / "a.wav")], settings, remote=True, roots=roots
        )
    assert "path must lie inside the render folder or an allowed root" in str(exc.value)


# --- liblo as an independent peer ---------------------------------------------------------------------------


def test_oscsend_and_oscdump_jam(daemon: DaemonThread, tmp_path: Path, settings: Settings) -> None:
    need_liblo()
    port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []

    def until(word: str) -> str:
        assert dump.stdout is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = dump.stdout.readline().strip()
            lines.append(line)
            if f" {word} " in line:
                return line.split(" ", 1)[1]
        raise AssertionError(f"no {word} in {lines}")

    try:
        time.sleep(0.2)  # let oscdump bind before the replies come
        send = ["oscsend", "127.0.0.1", str(daemon.port)]
        options = ["bpm", "60", "bars", "1", "lag", "2", "samplerate", str(SR)]
        subprocess.run([*send, jp.START, "isssisisisi", str(port), "liblo-1", "bass", *options], check=True)
        started = shlex.split(until(jp.STARTED))
        assert started[:3] == [jp.STARTED, "ssf", "liblo-1"] and float(started[4]) > 0
        session = started[3]
        for index in range(2):
            path = cycle_file(tmp_path, index, 6000)
            subprocess.run(
                [*send, jp.CYCLE, "issis", str(port), f"liblo-c{index}", session, str(index), path],
                check=True,
            )
            part = shlex.split(until(jp.PART))
            folder = settings.out_dir.resolve() / f"jam-{session}"
            assert part[:5] == [
                jp.PART,
                "sisf",
                session,
                str(index + 3),
                str(folder / f"part-{index + 3}.wav"),
            ]
            assert frames(part[4]) == L_SLOW
        subprocess.run([*send, jp.STOP, "iss", str(port), "liblo-x", session], check=True)
        stopped = shlex.split(until(jp.STOPPED))
        assert stopped == [jp.STOPPED, "ss", session, str(folder / "performance.wav")]
        assert frames(stopped[3]) == 5 * L_SLOW
    finally:
        dump.kill()
        dump.wait()


def test_a_cycle_whose_file_check_ends_after_a_newer_cycle_was_taken_is_late(
    gate: Gate, tmp_path: Path
) -> None:
    """Cycle 0's file is checked after cycle 1's and reaches the worker while it computes cycle 1: cycle 0 can
    only be later still, so it is answered ``late`` (not "index does not follow"), and cycle 1 goes on."""
    events: queue.Queue[JamEvent] = queue.Queue()
    timing = Timing(1, 60.0, TimeSignature(4, 4), SR, 1.0, 2)
    options = {"stem": "bass", "bars": 1, "bpm": 60.0, "sample_rate": SR, "lag": 2}

    def opener() -> JamSession:
        return gate.factory("w1", options, "builtin", None, str(tmp_path))

    worker = JamWorker("w1", timing, opener, events.put, "start", "s1")
    worker.start()
    try:
        assert events.get(timeout=WAIT).kind == "started"
        path = cycle_file(tmp_path / "in", 0, 4000)
        worker.offer(Cycle(1, path, None, time.monotonic(), "to-1", "c1"))
        assert gate.entered.acquire(timeout=WAIT)  # cycle 1 is being computed
        worker.offer(Cycle(0, path, None, time.monotonic(), "to-0", "c0"))
        late = events.get(timeout=WAIT)
        assert (late.kind, late.reply, late.play_index) == ("late", "to-0", 3)
        gate.release.set()
        part = events.get(timeout=WAIT)
        assert (part.kind, part.reply, part.play_index) == ("part", "to-1", 4)
    finally:
        gate.release.set()
        assert worker.close(WAIT)
    assert events.get(timeout=WAIT).kind == "stopped"


# --- starts and cycles that fail in an unexpected way --------------------------------------------------------


def test_starts_naming_a_symlink_loop_get_errors_and_take_no_slot(jam: Jam, settings: Settings) -> None:
    """Following a link loop raises RuntimeError (Python 3.11) or OSError, not a StembridgeError: each start gets
    an error naming the loop, and none keeps a slot (more starts than the daemon runs at once)."""
    settings.out_dir.mkdir(parents=True)
    loop = settings.out_dir / "loop"
    loop.symlink_to(loop)
    for n in range(MAX_SESSIONS + 1):
        jam.request(jp.START, f"loop{n}", "bass", *SLOW, "out", "loop")
        assert jam.error(f"loop{n}") == (
            "invalid_argument",
            f"{settings.out_dir.resolve() / 'loop'} is a symlink loop; fix the link",
        )
    session = jam.start("loop0", *SLOW)  # a failed start leaves its request id free too
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


def test_a_start_or_a_cycle_whose_check_fails_unexpectedly_gets_an_internal_error(
    jam: Jam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a check costs that request, never a session slot or the reply."""

    def broken(*args: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jam_service, "output_folder", broken)
    for n in range(MAX_SESSIONS + 1):
        jam.request(jp.START, f"s{n}", "bass", *SLOW)
        assert jam.error(f"s{n}") == (
            "error",
            "internal error starting the session: RuntimeError; see the daemon log",
        )
    monkeypatch.undo()
    session = jam.start("s0", *SLOW)
    monkeypatch.setattr(jam_service, "check_input", broken)
    jam.request(jp.CYCLE, "c0", session, 0, cycle_file(tmp_path, 0, 4000))
    assert jam.error("c0") == (
        "error",
        "internal error checking cycle 0's file: RuntimeError; see the daemon log",
    )
    monkeypatch.undo()
    jam.request(jp.CYCLE, "c1", session, 1, cycle_file(tmp_path, 1, 4000))
    address, args = jam.answer(session)
    assert (address, args[1]) == (jp.PART, 4)
    jam.request(jp.STOP, "x", session)
    jam.wait_for(session, jp.STOPPED)


def test_a_remote_cycle_file_through_a_symlink_loop_is_refused_by_name(settings: Settings) -> None:
    settings.out_dir.mkdir(parents=True)
    roots = allowed_roots(settings)
    loop = roots[0] / "loop.wav"
    loop.symlink_to(loop)
    with pytest.raises(InvalidArgument) as exc:
        check_input(input_path("path", str(loop), roots), roots)
    assert str(exc.value) == f"{loop} is a symlink loop; fix the link"
