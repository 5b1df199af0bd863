"""A band for the sound-card jam tests: a PortAudio client on the JACK server the test started.

Run as ``python -m tests.jack_band OUT.npy``. It opens a duplex stream (JACK names its client ``PortAudio``,
so the jam finds it as a device of that name and PortAudio connects the two at the jam's start), prints
``ready``, and until SIGINT or SIGTERM: plays a plucked A on its output 1 and echoes what it hears on its
input 1 to its output 2 in the same block (so the jam hears its own left channel back after exactly the
JACK graph's round trip), and records both inputs (what the jam played) into ``OUT.npy`` ``[frames, 2]``.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import numpy as np
import sounddevice as sd

RATE = 44100
SECONDS = 120


def main(out: Path) -> None:
    recording = np.zeros((RATE * SECONDS, 2), dtype=np.float32)
    t = np.arange(RATE) / RATE
    pluck = (0.3 * np.sin(2 * np.pi * 110.0 * t) * np.exp(-4.0 * (t % 0.5))).astype(np.float32)
    done = [0]
    stop = threading.Event()

    def callback(indata: np.ndarray, outdata: np.ndarray, frames: int, time: object, status: object) -> None:
        at = done[0]
        n = max(0, min(frames, len(recording) - at))
        recording[at : at + n] = indata[:n]
        outdata[:, 0] = pluck[(at + np.arange(frames)) % len(pluck)]
        outdata[:, 1] = indata[:, 0]
        done[0] = at + frames

    def ending(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, ending)
    signal.signal(signal.SIGTERM, ending)
    with sd.Stream(channels=2, samplerate=RATE, dtype="float32", callback=callback):
        print("ready", flush=True)
        stop.wait(SECONDS)
    np.save(out, recording[: min(done[0], len(recording))])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
