"""The sound card through sounddevice (PortAudio: CoreAudio, WASAPI, ALSA, JACK): find devices, open the
duplex stream a live jam runs on. sounddevice is imported here only, when a jam uses the sound card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bridge.errors import AudioDeviceError
from bridge.jam.duplex import Duplex

INSTALL = "pip install 'stembridge[jam]'"
PORTAUDIO = "install libportaudio2 / PortAudio (Debian, Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio)"


def sounddevice() -> ModuleType:
    """The sounddevice module.

    Raises:
        AudioDeviceError: sounddevice is not installed, or PortAudio (the library under it) is not.
    """
    try:
        import sounddevice as sd
    except ImportError:
        raise AudioDeviceError(
            f"the sound card needs the sounddevice package: {INSTALL} (or play a file with --input FILE)"
        ) from None
    except OSError:  # sounddevice raises it when the PortAudio library cannot be loaded
        raise AudioDeviceError(f"PortAudio is not installed: {PORTAUDIO}") from None
    module: ModuleType = sd
    return module


def describe_devices() -> str:
    """Every device PortAudio sees, one a line, with its host API and channels (``> ``/``< ``: default
    input/output), as ``stembridge jam --list-devices`` prints them."""
    return str(sounddevice().query_devices())


@dataclass(frozen=True)
class Card:
    """The devices and channels a live jam uses.

    Attributes:
        input: the input device's index; output: the output device's.
        channels: the band's input channels, 0-based.
        out_channels: 2, or 1 on a mono output.
        sample_rate: of the stream.
    """

    input: int
    output: int
    channels: tuple[int, ...]
    out_channels: int
    sample_rate: int

    def open(self, callback: Duplex) -> Any:
        """A duplex ``sounddevice.Stream`` (not started) calling ``callback`` with float32 blocks, at
        PortAudio's default ("high") latency: a Python callback shares the interpreter with the engine.

        Raises:
            AudioDeviceError: PortAudio refused the stream (busy device, rate the device cannot run at...).
        """
        sd = sounddevice()
        try:
            return sd.Stream(
                device=(self.input, self.output),
                channels=(max(self.channels) + 1, self.out_channels),
                samplerate=self.sample_rate,
                dtype="float32",
                callback=callback,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioDeviceError(
                f"the sound card refused the stream ({exc}); check the devices with --list-devices "
                f"and the rate with --samplerate"
            ) from None


def _device(sd: ModuleType, spec: str | None, kind: str) -> dict[str, Any]:
    target: Any = spec
    if spec is not None and spec.strip().isdigit():
        target = int(spec)
    try:
        info = sd.query_devices(target, kind)
    except (ValueError, sd.PortAudioError) as exc:
        what = f"no default {kind} device" if spec is None else f"no {kind} device {spec!r} ({exc})"
        raise AudioDeviceError(
            f"{what}; `stembridge jam --list-devices` shows them, pass one with --{kind}-device"
        ) from None
    if int(info[f"max_{kind}_channels"]) < 1:
        raise AudioDeviceError(
            f"{info['name']!r} has no {kind} channels; pick another with --{kind}-device (see --list-devices)"
        )
    return dict(info)


def parse_channels(text: str) -> tuple[int, ...]:
    """``"1,2"`` or ``"3-4"`` (1-based, as on the interface) -> ``(0, 1)`` / ``(2, 3)``.

    Raises:
        AudioDeviceError: not channel numbers.
    """
    channels: list[int] = []
    try:
        for piece in str(text).split(","):
            low, _, high = piece.strip().partition("-")
            first, last = int(low), int(high or low)
            if first < 1 or last < first:
                raise ValueError
            channels.extend(range(first - 1, last))
    except ValueError:
        raise AudioDeviceError(
            f"channels must be input channel numbers from 1, like 1,2 or 3-4, got {text!r}"
        ) from None
    return tuple(dict.fromkeys(channels))


def find_card(
    input_device: str | None,
    output_device: str | None,
    channels: Sequence[int] | None,
    sample_rate: int | None,
) -> Card:
    """The devices by index or name (a part of it, as ``--list-devices`` shows; default: the system's),
    the band's channels (default: the input's first two) and the rate (default: the input's).

    Raises:
        AudioDeviceError: no such device, a channel the device does not have, sounddevice or PortAudio
            missing.
    """
    sd = sounddevice()
    source = _device(sd, input_device, "input")
    sink = _device(sd, output_device, "output")
    have = int(source["max_input_channels"])
    chosen = tuple(channels) if channels else tuple(range(min(2, have)))
    missing = [c + 1 for c in chosen if c >= have]
    if missing:
        raise AudioDeviceError(
            f"input channel {missing[0]} is not on {source['name']!r}, which has {have}; "
            f"use --channels between 1 and {have}"
        )
    rate = int(sample_rate or round(float(source["default_samplerate"])))
    return Card(
        input=int(source["index"]),
        output=int(sink["index"]),
        channels=chosen,
        out_channels=min(2, int(sink["max_output_channels"])),
        sample_rate=rate,
    )
