"""Many clients at once: 20 clients (half by UDP, half by TCP) each send 5 jobs at the same moment, and every
job request is answered exactly once: ``accepted`` then exactly one ``done``, or one ``busy`` error when the
bounded queue is full. A fake quick runner does the jobs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pythonosc import slip
from pythonosc.osc_message import OscMessage

from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.jobs.journal import Journal
from bridge.jobs.spec import JobSpec, Outcome, PublishHook
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.osc import encode_message
from tests.test_daemon import WAIT, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads

N_CLIENTS = 20
JOBS_EACH = 5
QUEUE_SIZE = 16
GRACE_S = 0.3  # how long a client keeps listening after its last job ended, to catch a second answer


def quick_runner(spec: JobSpec, progress: ProgressCallback, on_publish: PublishHook | None = None) -> Outcome:
    progress(0.3, "working")
    time.sleep(0.002)
    progress(1.0, "done")
    return Outcome([str(Path(spec.options["out"]) / (Path(spec.options["path"]).stem + ".wav"))])


class LoadClient(threading.Thread):
    """Sends its jobs when the barrier opens, then records every reply until each job has ended."""

    def __init__(self, index: int, port: int, audio: str, barrier: threading.Barrier) -> None:
        super().__init__(name=f"load-client-{index}")
        self.index, self.port, self.audio, self.barrier = index, port, audio, barrier
        self.tcp = index % 2 == 1
        self.rids = [f"c{index}-j{k}" for k in range(JOBS_EACH)]
        self.replies: dict[str, list[tuple[str, list[Any]]]] = {rid: [] for rid in self.rids}
        self.strays: list[tuple[str, list[Any]]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the reply port (TCP clients get theirs on
        udp.bind(("127.0.0.1", 0))  # the connection, but a request names one all the same)
        stream = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) if self.tcp else None
        try:
            reply_port = udp.getsockname()[1]
            packets = [encode_message(protocol.VARY, [reply_port, rid, self.audio]) for rid in self.rids]
            self.barrier.wait(WAIT)
            for data in packets:
                if stream is not None:
                    stream.sendall(slip.encode(data))
                else:
                    udp.sendto(data, ("127.0.0.1", self.port))
            self._collect(udp, stream)
        except BaseException as exc:  # handed to the test's thread
            self.error = exc
        finally:
            udp.close()
            if stream is not None:
                stream.close()

    def _ended(self) -> bool:
        return all(
            any(a in (protocol.DONE, protocol.ERROR) for a, _ in replies) for replies in self.replies.values()
        )

    def _collect(self, udp: socket.socket, stream: socket.socket | None) -> None:
        deadline, grace_until = time.monotonic() + WAIT, None
        buffer = b""
        sock = stream or udp
        while True:
            now = time.monotonic()
            if grace_until is None and self._ended():
                grace_until = now + GRACE_S
            until = grace_until if grace_until is not None else deadline
            if now >= until:
                return
            sock.settimeout(until - now)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if stream is None:
                self._record(data)
                continue
            if not data:
                raise AssertionError("the daemon closed the connection")
            buffer += data
            while (end := buffer.find(slip.END, 1)) >= 0:
                frame, buffer = buffer[: end + 1], buffer[end + 1 :]
                if frame.strip(slip.END):
                    self._record(slip.decode(frame))

    def _record(self, data: bytes) -> None:
        msg = OscMessage(data)
        reply = (msg.address, list(msg.params))
        self.replies.get(str(msg.params[0]), self.strays).append(reply)


def test_twenty_clients_with_five_jobs_each_get_every_answer_exactly_once(tmp_path: Path) -> None:
    audio = tmp_path / "in" / "loop.wav"
    audio.parent.mkdir()
    audio.write_bytes(b"RIFF")  # the fake runner never reads it
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0, queue_size=QUEUE_SIZE
    )
    with DaemonThread(settings, quick_runner, discovery=False) as d:
        barrier = threading.Barrier(N_CLIENTS)
        clients = [LoadClient(i, d.port, str(audio), barrier) for i in range(N_CLIENTS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(WAIT * 2)
    assert not [c.name for c in clients if c.is_alive()]
    assert [c.error for c in clients if c.error] == []

    outcomes: Counter[str] = Counter()
    for client in clients:
        assert client.strays == []
        for rid, replies in client.replies.items():
            addresses = [a for a, _ in replies]
            ends = [(a, args) for a, args in replies if a in (protocol.DONE, protocol.ERROR)]
            assert len(ends) == 1, (rid, replies)  # exactly one end, never none, never two
            assert addresses[-1] in (protocol.DONE, protocol.ERROR), (rid, replies)  # nothing after it
            if addresses[0] == protocol.ERROR:  # refused: one error, no accepted
                assert replies == [(protocol.ERROR, [rid, "busy", replies[0][1][2]])], replies
                assert "the queue is full" in replies[0][1][2]
                outcomes["busy"] += 1
            else:
                assert addresses[0] == protocol.ACCEPTED and addresses.count(protocol.ACCEPTED) == 1, replies
                assert set(addresses[1:-1]) <= {protocol.PROGRESS}, replies
                assert ends[0] == (protocol.DONE, [rid, str(settings.out_dir.resolve() / "loop.wav")])
                fractions = [args[1] for a, args in replies if a == protocol.PROGRESS]
                assert fractions == sorted(fractions) and fractions[-1] == 1.0
                outcomes["done"] += 1
    assert outcomes["done"] + outcomes["busy"] == N_CLIENTS * JOBS_EACH
    assert outcomes["done"] > QUEUE_SIZE  # at least a full queue and the running job were served

    journal = Journal(settings.state_dir / "journal.sqlite3")
    states = Counter(
        rec.state for c in clients for rid in c.rids if (rec := journal.get("127.0.0.1", rid)) is not None
    )
    journal.close()
    assert states == {"done": outcomes["done"]}  # refused jobs were never recorded
