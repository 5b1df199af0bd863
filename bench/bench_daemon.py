"""Benchmark the daemon: ping round trips at a paced rate, and what a separation costs through the daemon.

1. Ping: one client sends ``/stembridge/ping`` at a fixed rate (500 a second by default) for a few seconds and
   waits for each ``pong``; prints the round trip p50 / p90 / p99 / max. Target: p99 <= 5 ms.
2. Separation: a synthetic stereo song (30 s by default) is separated by the built-in engine through the daemon
   (``stembridge request``'s client, from the send of ``separate`` to the ``done``) and in this process with
   ``bridge.pipeline.separate_file`` (the same engine, the same files written); the first run of each is a warm-up
   and is discarded, then the best of ``--repeat`` runs each, interleaved. Target: daemon / in-process <= 1.10.

The daemon runs as ``python -m bridge.cli serve`` in a process of its own (as users run it), with discovery off,
in a temporary folder, and with its separation cache off (``STEMBRIDGE_CACHE_MAX_MB=0``): the same song is
separated every run, and a cache hit would skip the engine, so the comparison would no longer measure the
separation. A run that still reports the ``cache`` stage stops the benchmark. Usage::

    python bench/bench_daemon.py
    python bench/bench_daemon.py --rate 500 --seconds 5 --song 30 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import cpu_model  # noqa: E402
from bridge.client import Client, Endpoint  # noqa: E402
from bridge.pipeline import OutputOptions, separate_file  # noqa: E402
from bridge.server import protocol  # noqa: E402
from bridge.server.daemon import read_port_file  # noqa: E402
from bridge.server.osc import decode_packet, encode_message  # noqa: E402
from tests import synth  # noqa: E402


def start_daemon(work: Path) -> tuple[subprocess.Popen[bytes], Endpoint]:
    state = work / "state"
    cmd = [sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--no-discovery", "-q"]
    cmd += ["--state-dir", str(state), "--out", str(work / "renders"), "--models-dir", str(work / "models")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMBRIDGE_")}
    env["STEMBRIDGE_CONFIG"] = str(work / "no-config.toml")
    env["STEMBRIDGE_CACHE_MAX_MB"] = "0"  # every run separates: see the module doc
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while (info := read_port_file(state) or {}).get("pid") != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the daemon did not start")
        time.sleep(0.02)
    return proc, Endpoint("127.0.0.1", int(info["port"]))


def bench_ping(endpoint: Endpoint, rate: float, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    reply_port = sock.getsockname()[1]
    target = (endpoint.host, endpoint.port)
    for i in range(50):  # warm-up, not counted
        sock.sendto(encode_message(protocol.PING, [reply_port, f"w{i}"]), target)
        sock.recv(65536)
    count = int(rate * seconds)
    rtts: list[float] = []
    lost = 0
    start = time.perf_counter()
    for i in range(count):
        slot = start + i / rate
        wait = slot - time.perf_counter()
        if wait > 0:  # sleep, never spin: a spinning client would take a core from the daemon
            time.sleep(wait)
        rid = f"p{i}"
        packet = encode_message(protocol.PING, [reply_port, rid])
        sent = time.perf_counter()
        sock.sendto(packet, target)
        try:
            while True:
                address, args = decode_packet(sock.recv(65536))[0]
                if address == protocol.PONG and args[0] == rid:
                    rtts.append(time.perf_counter() - sent)
                    break
        except TimeoutError:
            lost += 1
    elapsed = time.perf_counter() - start
    sock.close()
    ms = np.array(rtts) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(
        f"ping: {len(rtts)} round trips in {elapsed:.2f} s ({len(rtts) / elapsed:.0f}/s asked {rate:g}/s), {lost} lost"
    )
    print(f"ping round trip ms: p50 {p50:.3f}  p90 {p90:.3f}  p99 {p99:.3f}  max {ms.max():.3f}")
    print(f"ping target p99 <= 5 ms: {'met' if p99 <= 5 else 'MISSED'}")


def write_song(path: Path, seconds: float, sr: int = 44100) -> None:
    bars = max(1, int(np.ceil(seconds * 120 / 240)))
    mixture = synth.mix(synth.song_stems(bpm=120, bars=bars, sr=sr))[:, : int(seconds * sr)]
    sf.write(path, mixture.T, sr, subtype="PCM_24")


def bench_separate(endpoint: Endpoint, work: Path, seconds: float, repeat: int) -> None:
    song = work / "song.wav"
    write_song(song, seconds)
    through_daemon: list[float] = []
    in_process: list[float] = []
    fixed: list[float] = []  # send -> "started", plus the final progress -> "done": the daemon's own share
    with Client(endpoint, answer_timeout=10) as client:
        for run in range(repeat + 1):  # run 0 warms both up and is discarded
            marks: dict[str, float] = {}

            stages: set[str] = set()

            def mark(
                fraction: float, stage: str, marks: dict[str, float] = marks, stages: set[str] = stages
            ) -> None:
                marks.setdefault("started", time.perf_counter())
                stages.add(stage)
                if fraction >= 1.0:
                    marks["last"] = time.perf_counter()

            start = time.perf_counter()
            result = client.run("separate", [str(song)], {"out": f"daemon-{run}"}, on_progress=mark)
            end = time.perf_counter()
            if "cache" in stages:
                raise SystemExit(
                    "the daemon served the separation from its cache; the benchmark needs it off"
                )
            if run:
                through_daemon.append(end - start)
                fixed.append((marks["started"] - start) + (end - marks["last"]))
            assert len(result.paths) == 4, result.paths
            start = time.perf_counter()
            local = separate_file(
                song, OutputOptions(out_dir=work / "renders" / f"local-{run}"), models_dir=work / "models"
            )
            if run:
                in_process.append(time.perf_counter() - start)
            assert len(local.outputs) == 4
    best_d, best_p = min(through_daemon), min(in_process)
    print(
        f"separate {seconds:g} s stereo 44.1 kHz, built-in engine, cache off, best of {repeat} "
        f"(first run discarded):"
    )
    print(f"  through the daemon: {best_d:.3f} s (all: {', '.join(f'{t:.3f}' for t in through_daemon)})")
    print(f"  in-process:         {best_p:.3f} s (all: {', '.join(f'{t:.3f}' for t in in_process)})")
    ratio = best_d / best_p
    verdict = "met" if ratio <= 1.10 else "MISSED"
    print(f"  overhead ratio daemon / in-process: {ratio:.3f} (target <= 1.10: {verdict})")
    print(f"  ratio of the medians: {float(np.median(through_daemon) / np.median(in_process)):.3f}")
    print(
        f"  the daemon's own share per job (send -> started, then 1.0 -> done): median "
        f"{np.median(fixed) * 1000:.1f} ms, max {max(fixed) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="pings per second (500)")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to ping (4)")
    parser.add_argument("--song", type=float, default=30.0, help="seconds of audio to separate (30)")
    parser.add_argument("--repeat", type=int, default=5, help="timed separations each way; best reported (5)")
    args = parser.parse_args()

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"date: {datetime.date.today().isoformat()}")
    print(
        f"machine: {cpu_model()}, cpu_count={os.cpu_count()}, usable cores={affinity}, {platform.platform()}"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-") as tmp:
        work = Path(tmp)
        proc, endpoint = start_daemon(work)
        try:
            bench_ping(endpoint, args.rate, args.seconds)
            bench_separate(endpoint, work, args.song, max(1, args.repeat))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
