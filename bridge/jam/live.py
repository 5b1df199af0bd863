"""A jam on the sound card: the session thread between a duplex stream and a :class:`JamSession`.

The stream's callback (:class:`bridge.jam.duplex.Duplex`) only copies blocks. This module's session thread
waits for each cycle's audio, ``lead`` before the cycle's last bar line, answers it and hands the part over
for its bar line, which the callback keeps or drops at that very frame (a part never plays late).

Timing, all in stream frames counted from the first callback (output and input advance together):

- The count-in is output frames ``[0, C)``; bar 1 of the performance (cycle 0) is output frame ``C``, and
  cycle ``k`` starts at output frame ``C + k * L``.
- Latency compensation (``D``): the band hears output frame ``n`` ``out_latency`` after the callback wrote
  it and what they play reaches the callback ``in_latency`` after it sounded, so what they play against
  output frame ``n`` is input frame ``n + D``, with ``D = round((in_latency + out_latency) * rate)`` from
  the stream's reported latencies (sounddevice's ``Stream.latency``), or the round trip the user measured
  (``--latency``), which replaces them. A reported value outside 0..2 s is not believed (PortAudio's JACK
  host API reports nonsense between two programs' ports): then D is 0 and the user is told. Musical frame
  ``n`` of the band's recording (what the session hears, and ``humans.wav``) is therefore input frame
  ``C + D + n``. Latency the driver does not report (converters, a mixer in between) is not compensated.
- The performance (``JamSession.stop``) is the session's take: in the rare case a part the session counted
  on time still missed its line on the card, it is reported late here but stays in that file.
- Cycle ``k``'s audio (its first ``L - lead`` samples) is taken once the callback has input frame
  ``C + D + (k + 1) * L - lead``; the part it answers plays from output frame ``C + (k + 1 + lag) * L``.
  The session's budget is the time the stream has left before the callback reaches that line, less two
  blocks (the callback decides at the block that holds the line): a part the session says is on time is
  in its slot before that block is computed, and the callback's record (:meth:`Duplex.was_played`) is
  checked after the line, so a part that still missed it is reported late.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bridge.audio.writer import write_audio_unique
from bridge.errors import AudioDeviceError, InvalidArgument
from bridge.jam.duplex import Duplex, click_track
from bridge.jam.player import JamRun
from bridge.jam.session import JamPart, JamSession
from bridge.termination import Terminated

POLL = 0.005  # seconds the session thread sleeps at most between looks at the stream
GUARD_SECONDS = 0.005  # kept free before a line on top of two blocks
STALL = 5.0  # seconds without a callback before the jam gives up on the stream
MAX_LATENCY = 2.0  # seconds: a reported input or output latency above this is not believed


class Stream(Protocol):
    """What the live jam needs of a started duplex stream (sounddevice's ``Stream`` has it)."""

    @property
    def latency(self) -> Any: ...  # (input, output) seconds

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


OpenStream = Callable[[Duplex], Stream]  # opens (does not start) a stream calling the given callback


@dataclass(frozen=True)
class LiveOptions:
    """How the sound card is used.

    Attributes:
        channels: the input channels (0-based) that are the band.
        out_channels: 1 or 2.
        count_in: bars of click before bar 1 (0..8).
        cycles: stop after this many cycles of the performance (None: until stopped).
        latency: the round trip in seconds (output to input), instead of what the stream reports.
    """

    channels: tuple[int, ...]
    out_channels: int = 2
    count_in: int = 1
    cycles: int | None = None
    latency: float | None = None

    def __post_init__(self) -> None:
        if self.latency is not None and not 0.0 <= self.latency <= MAX_LATENCY:
            raise InvalidArgument(
                f"latency must be 0 to {MAX_LATENCY * 1000:g} ms (the round trip), got {self.latency * 1000:g}"
            )
        if not 0 <= self.count_in <= 8:
            raise InvalidArgument(f"count-in must be 0 to 8 bars, got {self.count_in}")
        if self.cycles is not None and self.cycles < 1:
            raise InvalidArgument(f"cycles must be 1 or more, got {self.cycles}")
        if not self.channels:
            raise InvalidArgument("name at least one input channel for the band, e.g. --channels 1,2")


class LiveJam:
    """One jam on a duplex stream: :meth:`run` blocks until the cycles are done or :meth:`request_stop`.

    Args:
        session: a fresh session (its options' rate is the stream's).
        options: channels, count-in, cycles.
        open_stream: opens the stream with the given callback.
        on_part: told each part once it is known whether it played (late ones too).
        on_note: told what the user should know about the sound card (e.g. an unbelievable latency).
    """

    def __init__(
        self,
        session: JamSession,
        options: LiveOptions,
        open_stream: OpenStream,
        on_part: Callable[[JamPart], None] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self.options = options
        o = session.options
        self.rate = o.sample_rate
        self.cycle = session.clock.samples(0)
        self.capture = session.clock.captured(0)
        self.duplex = Duplex(
            cycle=self.cycle,
            count_in=click_track(o.grid(), options.count_in, options.out_channels),
            channels=options.channels,
            out_channels=options.out_channels,
            slots=o.lag + 4,
            capture_frames=(o.lag + 3) * self.cycle + 2 * self.rate,
            cycles=options.cycles,
            repeat=o.on_late == "repeat",
        )
        self._open = open_stream
        self._on_part = on_part
        self._stop = threading.Event()
        self._recording = np.zeros((len(options.channels), 0), dtype=np.float32)
        self._recorded = 0
        self._delay = 0
        self._error: BaseException | None = None
        self._on_note = on_note
        self.run_result = JamRun()

    def request_stop(self) -> None:
        """Stop after the part being made (from any thread, e.g. on Ctrl-C)."""
        self._stop.set()

    def run(self) -> JamRun:
        """Open and start the stream, jam until done or stopped, then write the performance and the band's
        recording (``humans.wav``) and return what played.

        Raises:
            StembridgeError: from the session. Ctrl-C (KeyboardInterrupt) and SIGTERM/SIGHUP (Terminated)
                end the jam cleanly instead: the part being made is finished, the files are written.
        """
        stream = self._open(self.duplex)
        self._delay = self._round_trip(stream.latency)
        worker = threading.Thread(target=self._work, name=f"jam-{self.session.name}", daemon=True)
        try:
            stream.start()
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.1)
            except (KeyboardInterrupt, Terminated):
                self._stop.set()
                worker.join()
        finally:
            try:
                stream.stop()
            finally:
                stream.close()
                self._finish()
        if self._error is not None:
            raise self._error
        return self.run_result

    def _round_trip(self, reported: Any) -> int:
        """D in frames: the ``latency`` option, else the stream's input + output latency. A reported value
        outside 0..MAX_LATENCY seconds is not trusted (PortAudio's JACK host API reports nonsense between two
        programs' ports): D is 0 and ``on_note`` is told how to set it."""
        if self.options.latency is not None:
            return int(round(self.options.latency * self.rate))
        values = [float(v) for v in reported]
        if all(0.0 <= v <= MAX_LATENCY for v in values):
            return int(round(sum(values) * self.rate))
        if self._on_note is not None:
            self._on_note(
                f"the sound card reported a latency of {values[0]:g} s in and {values[1]:g} s out, which cannot be "
                f"right; the band is recorded without latency compensation: give the round trip with --latency MS"
            )
        return 0

    # ------------------------------------------------------------------------------ the session thread

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to run() on the main thread, raised there
            self._error = exc

    def _loop(self) -> None:
        lag = self.session.options.lag
        cycles = self.options.cycles
        waiting: list[tuple[JamPart, int, int]] = []
        k = 0
        while not self._stop.is_set() and (cycles is None or k + 1 + lag < cycles):
            if not self._wait_for(self.duplex.start + self._delay + k * self.cycle + self.capture):
                break
            humans = self._recording[:, k * self.cycle : k * self.cycle + self.capture].copy()
            line = self.duplex.line(k + 1 + lag)
            guard = 2 * self.duplex.block + int(GUARD_SECONDS * self.rate)
            budget = max(0.0, (line - self.duplex.frames - guard) / self.rate)
            part = self.session.answer(k, humans, budget=budget)
            if part.late or part.audio is None:
                self._tell(part)
            else:
                slot = self.duplex.hand_over(part.play_index, part.audio)
                waiting.append((part, slot, self.duplex.frames))
            waiting = self._confirm(waiting)
            k += 1
        if self.duplex.end is not None:
            self._wait_for(self.duplex.end + self._delay)  # the band's last cycle, heard D frames later
        self._drain()
        self._confirm(waiting, final=True)

    def _wait_for(self, frame: int) -> bool:
        """Record until the callback has input frame ``frame``; False when stopped first.

        Raises:
            AudioDeviceError: the stream stopped calling back (for STALL seconds).
        """
        seen, since = self.duplex.frames, time.monotonic()
        while not self._stop.is_set():
            self._drain()
            now = self.duplex.frames
            if now >= frame:
                return True
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > STALL:
                raise AudioDeviceError(
                    f"the sound card stopped delivering audio at frame {now}; check the device and run again"
                )
            time.sleep(min(POLL, max(0.0005, (frame - now) / self.rate)))
        return False

    def _drain(self) -> None:
        """Move what the callback captured into the band's recording (musical frame 0 = input frame C + D)."""
        first = self.duplex.start + self._delay
        begin, end = first + self._recorded, self.duplex.frames
        if end <= begin:
            return
        try:
            audio = self.duplex.captured(begin, end)
        except OverflowError as exc:
            raise InvalidArgument(
                f"the jam fell behind the sound card ({exc}); use a faster engine, more lead or fewer bars"
            ) from None
        if audio is None:
            return
        need = self._recorded + audio.shape[1]
        if need > self._recording.shape[1]:
            grown = np.zeros((audio.shape[0], max(need, 2 * self._recording.shape[1])), dtype=np.float32)
            grown[:, : self._recorded] = self._recording[:, : self._recorded]
            self._recording = grown
        self._recording[:, self._recorded : need] = audio
        self._recorded = need

    def _confirm(
        self, waiting: list[tuple[JamPart, int, int]], final: bool = False
    ) -> list[tuple[JamPart, int, int]]:
        """Report the parts whose line has passed (late if the callback did not play them); keep the rest.

        ``waiting`` holds each part with its slot and the frames the callback had done at the hand-over."""
        left = []
        for part, slot, at in waiting:
            played = self.duplex.was_played(part.play_index, slot)
            if played is None and not final:
                left.append((part, slot, at))
            elif played is False:
                past = (self.duplex.line(part.play_index) - at - self.duplex.block) / self.rate * 1000.0
                self._tell(dataclasses.replace(part, late=True, margin_ms=min(past, 0.0)))
            elif played:
                self._tell(part)
            # None at the end: the jam stopped before its line; it did not play and is not reported
        return left

    def _tell(self, part: JamPart) -> None:
        self.run_result.parts.append(part)
        if self._on_part is not None:
            self._on_part(part)

    # ------------------------------------------------------------------------------------ the files

    def _finish(self) -> None:
        self.run_result.performance = self.session.stop()
        cycles = self.duplex.cycle_now + 1
        if self.options.cycles is not None:
            cycles = min(cycles, self.options.cycles)
        length = min(self._recorded, max(0, cycles) * self.cycle)
        if length > 0:
            self.run_result.recording = write_audio_unique(
                self.session.folder / "humans.wav",
                self._recording[:, :length],
                self.rate,
                bit_depth=32,
                position=0,
            )
