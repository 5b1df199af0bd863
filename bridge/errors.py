"""The one exceptions module.

Every error stembridge raises on purpose is a :class:`StembridgeError`. Each subclass carries a stable ``code``
that the OSC protocol sends in ``/stembridge/error`` replies and that the CLI maps to exit code 2. Messages name
the bad value and say how to fix it: ``bpm must be between 20 and 400, got 0``.
"""

from __future__ import annotations


class StembridgeError(Exception):
    """Base class: an error the user can act on."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(StembridgeError):
    """A request's argument is out of range or of the wrong kind (bpm, bars, stem name, strength...)."""

    code = "invalid_argument"


class AudioReadError(StembridgeError):
    """An input file is missing, unreadable, empty, corrupt or holds non-finite samples."""

    code = "unreadable_audio"


class AudioWriteError(StembridgeError):
    """An output could not be written (folder not writable, disk full...)."""

    code = "write_failed"


class UnknownEngine(StembridgeError):
    """No engine is registered under that name."""

    code = "unknown_engine"


class EngineUnavailable(StembridgeError):
    """The engine is registered but cannot run here (a dependency is missing)."""

    code = "engine_unavailable"


class UnsupportedOperation(StembridgeError):
    """The engine cannot do what was asked (a stem it does not know, a capability it lacks)."""

    code = "unsupported"


class AudioDeviceError(StembridgeError):
    """The sound card cannot be used: PortAudio or sounddevice missing, no such device or channel."""

    code = "audio_device"


class ModelNotFound(StembridgeError):
    """The model's weights are not on this machine."""

    code = "model_not_found"


class OutOfMemory(StembridgeError):
    """A job needs more memory than this machine has free (the message says what to try instead)."""

    code = "out_of_memory"


class ConfigError(StembridgeError):
    """The configuration file or an environment variable holds a bad value."""

    code = "bad_config"


class Busy(StembridgeError):
    """The daemon cannot take a job now (its queue is full or it is shutting down), or another batch is writing
    to the same output folder."""

    code = "busy"


class Unauthorized(StembridgeError):
    """The daemon needs a token and the request carried none, or the wrong one."""

    code = "unauthorized"


class DaemonUnreachable(StembridgeError):
    """No daemon answered at the address, or it stopped answering."""

    code = "unreachable"


class Interrupted(StembridgeError):
    """The daemon stopped (crash, kill, power cut) while the job was queued or running."""

    code = "interrupted"


class Cancelled(StembridgeError):
    """The job was cancelled; raised from a progress callback and honoured between chunks."""

    code = "cancelled"

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
