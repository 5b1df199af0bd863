"""Benchmark a jam through the daemon: a simulated DAW client plays a song in real time, cycle by cycle.

The band is a synthetic 4-minute song at 120 bpm without its bass (drums, chords, a voice); the AI plays bass
with the builtin engine, 4-bar cycles, ``lag`` 0, one beat of ``lead``. The client does what a DAW device does:
the jam's bar 1 is a moment on its clock; each cycle's recording (written to a file beforehand, as a DAW writes
it while it records) is sent ``lead`` before the cycle's last bar line, and the part for the next cycle must be
back before that bar line. For each cycle it records:

- on time: a ``part`` arrived before its bar line (target: 100 %);
- the margin: how long before the bar line the part arrived (p50 / p1, ms);
- the daemon's overhead: the round trip (send -> ``part``) minus the session's own compute time (the
  ``seconds_spent`` the reply carries): parsing, the file check, the mailbox, reading the file, the reply.

The daemon runs as ``python -m bridge.cli serve`` in a process of its own (as users run it), with discovery off,
in a temporary folder. Usage::

    python bench/bench_jam_daemon.py                 # 4 minutes of real time
    python bench/bench_jam_daemon.py --minutes 1 --bars 2 --lead 0.5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import cpu_model  # noqa: E402
from bench.bench_daemon import start_daemon  # noqa: E402
from bridge.audio.timing import Grid, TimeSignature  # noqa: E402
from bridge.server import jam_protocol as jp  # noqa: E402
from bridge.server import protocol  # noqa: E402
from bridge.server.osc import decode_packet, encode_message  # noqa: E402
from tests import synth  # noqa: E402

SR = 44100


def band(minutes: float, bpm: float) -> np.ndarray:
    """The humans: the synthetic song without its bass, ``[2, T]``."""
    bars = int(np.ceil(minutes * bpm / 4))
    stems = synth.song_stems(bpm=bpm, bars=bars, sr=SR)
    stems.pop("bass")
    return synth.mix(stems)[:, : int(minutes * 60 * SR)]


class Peer:
    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.reply_port = self.sock.getsockname()[1]

    def send(self, address: str, *args: object) -> None:
        self.sock.sendto(encode_message(address, [self.reply_port, *args]), self.target)

    def receive(self, until: float, *addresses: str) -> tuple[str, list[object], float] | None:
        """The next reply at one of ``addresses`` before the clock reads ``until`` (others are skipped)."""
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            at = time.monotonic()
            for address, args in decode_packet(data):
                if address in addresses:
                    return address, list(args), at
        return None


def run(args: argparse.Namespace) -> None:
    grid = Grid(args.bpm, TimeSignature(4, 4), SR)
    length = grid.samples_for_bars(args.bars)
    cycle_s = length / SR
    lead_n = round(args.lead * 60 / args.bpm * SR)
    humans = band(args.minutes, args.bpm)
    cycles = humans.shape[1] // length
    with tempfile.TemporaryDirectory(prefix="stembridge-jam-bench-") as tmp:
        work = Path(tmp)
        files = []
        for k in range(cycles):  # what the DAW records of each cycle: up to `lead` before its last bar line
            path = work / "in" / f"cycle-{k}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, humans[:, k * length : (k + 1) * length - lead_n].T, SR, subtype="PCM_24")
            files.append(str(path))
        proc, endpoint = start_daemon(work)
        peer = Peer(endpoint.port)
        try:
            options = ["bpm", args.bpm, "bars", args.bars, "lead", args.lead, "lag", 0, "samplerate", SR]
            peer.send(jp.START, "bench", "bass", *options)
            got = peer.receive(time.monotonic() + 60, jp.STARTED, protocol.ERROR)
            if got is None or got[0] != jp.STARTED:
                raise SystemExit(f"the session did not start: {got}")
            session, estimate = str(got[1][1]), float(got[1][2])  # type: ignore[arg-type]
            print(f"session {session}: the engine's estimate {estimate * 1000:.0f} ms per cycle")
            bar_one = time.monotonic() + 1.0
            rows: list[tuple[int, bool, float, float, float]] = []
            for k in range(cycles):
                line = bar_one + (k + 1) * cycle_s  # the bar line the part for cycle k+1 must beat
                send_at = line - lead_n / SR
                time.sleep(max(0.0, send_at - time.monotonic()))
                sent = time.monotonic()
                peer.send(jp.CYCLE, f"c{k}", session, k, files[k])
                reply = peer.receive(line + cycle_s - lead_n / SR - 0.05, jp.PART, jp.LATE, protocol.ERROR)
                if reply is None:
                    rows.append((k, False, float("nan"), float("nan"), float("nan")))
                    continue
                address, values, at = reply
                if address == jp.PART:
                    spent = float(values[3])  # type: ignore[arg-type]
                    rows.append((k, at < line, (line - at) * 1000, (at - sent - spent) * 1000, spent * 1000))
                else:
                    rows.append((k, False, (line - at) * 1000, float("nan"), float("nan")))
                    print(f"cycle {k}: {address} {values}")
            stop_sent = time.monotonic()
            peer.send(jp.STOP, "stop", session)
            stopped = peer.receive(time.monotonic() + 60, jp.STOPPED)
            stop_ms = (stopped[2] - stop_sent) * 1000 if stopped else float("nan")
        finally:
            peer.sock.close()
            proc.terminate()
            proc.wait(30)
    report(args, rows, cycles, cycle_s, stop_ms)


def report(
    args: argparse.Namespace,
    rows: list[tuple[int, bool, float, float, float]],
    cycles: int,
    cycle_s: float,
    stop_ms: float,
) -> None:
    on_time = sum(1 for r in rows if r[1])
    margins = np.array([r[2] for r in rows if r[1]])
    overhead = np.array([r[3] for r in rows if np.isfinite(r[3])])
    compute = np.array([r[4] for r in rows if np.isfinite(r[4])])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cpu_model()}; {cores} core(s) usable; load average {os.getloadavg()[0]:.2f}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"{datetime.date.today().isoformat()}"
    )
    print(
        f"jam: {args.minutes:g} min at {args.bpm:g} bpm, {args.bars}-bar cycles ({cycle_s:g} s), lead "
        f"{args.lead:g} quarter ({args.lead * 60 / args.bpm * 1000:.0f} ms), lag 0, builtin bass, {cycles} cycles"
    )
    print(f"on time: {on_time}/{len(rows)} ({100 * on_time / max(1, len(rows)):.1f} %; target 100 %)")
    if margins.size:
        print(
            f"margin before the line ms: p50 {np.percentile(margins, 50):.0f}  p1 {np.percentile(margins, 1):.0f}  min {margins.min():.0f}"
        )
    if overhead.size:
        p50, p99 = np.percentile(overhead, [50, 99])
        print(
            f"daemon overhead per cycle ms (round trip - session compute): p50 {p50:.2f}  p99 {p99:.2f}  max {overhead.max():.2f}"
        )
    if compute.size:
        p50, p99 = np.percentile(compute, [50, 99])
        print(
            f"session compute per cycle ms (the part's seconds_spent): p50 {p50:.0f}  p99 {p99:.0f}  max {compute.max():.0f}"
        )
    print(f"stop -> stopped (the take written): {stop_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="song length (default 4)")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--bars", type=int, default=4, help="bars per cycle (default 4)")
    parser.add_argument("--lead", type=float, default=1.0, help="quarter notes before the line (default 1)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
