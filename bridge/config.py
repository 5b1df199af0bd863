"""One settings object: folders, defaults and (for the daemon) network options.

Values come from, in order of precedence: explicit arguments (the CLI's flags), environment variables
(``STEMBRIDGE_OUT``, ``STEMBRIDGE_MODELS_DIR``, ``STEMBRIDGE_STATE_DIR``, ``STEMBRIDGE_ENGINE``), a TOML file
(``$STEMBRIDGE_CONFIG`` or the per-user ``config.toml``), then the built-in defaults below.

Example ``config.toml``::

    out_dir = "~/Music/Stembridge"
    models_dir = "~/stembridge-models"
    engine = "auto"
    allow_download = false
    device = "auto"           # or cpu, cuda, cuda:1, mps
    threads = 0               # CPU threads for models (0: one per core)
    # the daemon (`stembridge serve`)
    host = "127.0.0.1"
    port = 9977
    allowed_roots = ["~/Projects/Renders"]

The daemon also reads ``STEMBRIDGE_HOST``, ``STEMBRIDGE_PORT``, ``STEMBRIDGE_TOKEN``,
``STEMBRIDGE_QUEUE_SIZE``, ``STEMBRIDGE_ALLOWED_ROOTS`` (folders separated by ``os.pathsep``),
``STEMBRIDGE_CACHE_MAX_MB``, ``STEMBRIDGE_MODEL_MEMORY_MB``, ``STEMBRIDGE_TCP_MAX_CONNECTIONS``,
``STEMBRIDGE_TCP_MAX_PER_ADDRESS`` and ``STEMBRIDGE_TCP_IDLE_TIMEOUT_S``; every command reads
``STEMBRIDGE_DEVICE``, ``STEMBRIDGE_THREADS`` and ``STEMBRIDGE_ALLOW_DOWNLOAD``.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def user_config_dir() -> Path:
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / "Stembridge"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", _home() / "AppData" / "Roaming")) / "Stembridge"
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config") / "stembridge"


def user_data_dir() -> Path:
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / "Stembridge"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", _home() / "AppData" / "Local")) / "Stembridge"
    return Path(os.environ.get("XDG_DATA_HOME") or _home() / ".local" / "share") / "stembridge"


def default_out_dir() -> Path:
    """Renders go to the user's music folder, as DAWs' own bounces do: ``~/Music/Stembridge``."""
    return _home() / "Music" / "Stembridge"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, in one place.

    Attributes:
        out_dir: where renders are written unless a request names another folder.
        models_dir: where local checkpoints live (``<models_dir>/<model>/...``); see models/README.md.
        state_dir: the daemon's journal, port file and caches.
        engine: the default engine name (``auto`` picks the best available).
        allow_download: whether engines may fetch weights from the network.
        host: the daemon's address; anything but loopback needs ``token``.
        port: the daemon's UDP and TCP port (0 picks a free one).
        token: a shared secret every request must carry (``token <secret>``); ``None``: none needed.
        allowed_roots: folders besides ``out_dir`` where requests may ask for renders to go.
        queue_size: how many jobs may wait behind the running one before requests are refused as busy.
        discovery: whether the daemon advertises itself over mDNS (zeroconf).
        cache_max_mb: the size limit of the daemon's separation cache (``<state_dir>/cache``) in MiB; 0 turns
            it off.
        device: where models run: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: CPU threads a model may use (0: torch's default, one per core).
        model_memory_mb: how much memory the daemon may keep in loaded models between jobs, in MiB (0: half of
            this machine's memory); the least recently used model is unloaded first.
        watch_dir: the daemon's hot folder (``stembridge serve --watch DIR``, docs/LOGIC.md); ``None``: none.
        watch_settle_s: how many seconds a file dropped into the hot folder must stay unchanged before it is taken.
        tcp_max_connections: TCP connections the daemon holds at once; when all are taken, one is closed for a
            new one (first one that never sent an accepted request, never one with a job in flight).
        tcp_max_per_address: TCP connections one IP address (one IPv6 /64) may hold at once; more are refused.
        tcp_idle_timeout_s: seconds a TCP connection may go without an accepted request or a reply before it
            is closed (not while a job it sent is in flight).
    """

    out_dir: Path = field(default_factory=default_out_dir)
    models_dir: Path = field(default_factory=lambda: user_data_dir() / "models")
    state_dir: Path = field(default_factory=lambda: user_data_dir() / "state")
    engine: str = "auto"
    allow_download: bool = False
    host: str = "127.0.0.1"
    port: int = 9977
    token: str | None = None
    allowed_roots: tuple[Path, ...] = ()
    queue_size: int = 16
    discovery: bool = True
    cache_max_mb: int = 2048
    device: str = "auto"
    threads: int = 0
    model_memory_mb: int = 0
    watch_dir: Path | None = None
    watch_settle_s: float = 2.0
    tcp_max_connections: int = 64
    tcp_max_per_address: int = 16
    tcp_idle_timeout_s: float = 300.0

    def engine_options(self) -> dict[str, Any]:
        """What every engine is loaded with from here: the device, CPU threads (``None``: torch's default) and
        whether weights may be downloaded."""
        return {"device": self.device, "threads": self.threads or None, "allow_download": self.allow_download}

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-None ``overrides`` applied (paths expanded)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **_coerce(clean, source="arguments"))


_ENV = {
    "out_dir": "STEMBRIDGE_OUT",
    "models_dir": "STEMBRIDGE_MODELS_DIR",
    "state_dir": "STEMBRIDGE_STATE_DIR",
    "engine": "STEMBRIDGE_ENGINE",
    "allow_download": "STEMBRIDGE_ALLOW_DOWNLOAD",
    "host": "STEMBRIDGE_HOST",
    "port": "STEMBRIDGE_PORT",
    "token": "STEMBRIDGE_TOKEN",
    "allowed_roots": "STEMBRIDGE_ALLOWED_ROOTS",
    "queue_size": "STEMBRIDGE_QUEUE_SIZE",
    "discovery": "STEMBRIDGE_DISCOVERY",
    "cache_max_mb": "STEMBRIDGE_CACHE_MAX_MB",
    "watch_dir": "STEMBRIDGE_WATCH_DIR",
    "watch_settle_s": "STEMBRIDGE_WATCH_SETTLE_S",
    "device": "STEMBRIDGE_DEVICE",
    "threads": "STEMBRIDGE_THREADS",
    "model_memory_mb": "STEMBRIDGE_MODEL_MEMORY_MB",
    "tcp_max_connections": "STEMBRIDGE_TCP_MAX_CONNECTIONS",
    "tcp_max_per_address": "STEMBRIDGE_TCP_MAX_PER_ADDRESS",
    "tcp_idle_timeout_s": "STEMBRIDGE_TCP_IDLE_TIMEOUT_S",
}
_BOOLS = ("allow_download", "discovery")

# Whole-number settings and their ranges.
_INT_RANGES = {
    "port": (0, 65535),
    "queue_size": (1, 1000),
    "cache_max_mb": (0, 1_000_000),
    "threads": (0, 1024),
    "model_memory_mb": (0, 16_000_000),
    "tcp_max_connections": (1, 10_000),
    "tcp_max_per_address": (1, 10_000),
}

# Settings in seconds and their ranges.
_SECONDS_RANGES = {"watch_settle_s": (0.0, 3600.0), "tcp_idle_timeout_s": (0.1, 86400.0)}


def _whole_number(key: str, value: Any, source: str) -> int:
    low, high = _INT_RANGES[key]
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or not low <= number <= high:
        raise ConfigError(f"{key} in {source} must be a whole number between {low} and {high}, got {value!r}")
    return number


def _seconds(key: str, value: Any, source: str) -> float:
    low, high = _SECONDS_RANGES[key]
    number: float | None = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not low <= number <= high:  # NaN fails the range too
        raise ConfigError(
            f"{key} in {source} must be a number of seconds between {low:g} and {high:g}, got {value!r}"
        )
    return number


def _roots(value: Any, source: str) -> tuple[Path, ...]:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    elif isinstance(value, (str, Path)):
        items = str(value).split(os.pathsep)
    else:
        raise ConfigError(f"allowed_roots in {source} must be a list of folders, got {value!r}")
    return tuple(Path(os.path.expanduser(item.strip())) for item in items if item.strip())


def _device(value: Any, source: str) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise ConfigError(f"device in {source} must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return text


def _coerce(values: dict[str, Any], source: str) -> dict[str, Any]:
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown setting {key!r} in {source}; known settings: {', '.join(sorted(known))}"
            )
        if key.endswith("_dir"):
            out[key] = Path(os.path.expanduser(str(value)))
        elif key in _BOOLS:
            if isinstance(value, bool):
                out[key] = value
            elif str(value).strip().lower() in ("1", "true", "yes", "on"):
                out[key] = True
            elif str(value).strip().lower() in ("0", "false", "no", "off", ""):
                out[key] = False
            else:
                raise ConfigError(f"{key} in {source} must be true or false, got {value!r}")
        elif key in _INT_RANGES:
            out[key] = _whole_number(key, value, source)
        elif key in _SECONDS_RANGES:
            out[key] = _seconds(key, value, source)
        elif key == "allowed_roots":
            out[key] = _roots(value, source)
        elif key == "token":
            out[key] = str(value) or None
        elif key == "device":
            out[key] = _device(value, source)
        else:
            out[key] = str(value)
    return out


def config_file() -> Path:
    return Path(os.environ.get("STEMBRIDGE_CONFIG") or user_config_dir() / "config.toml")


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the TOML file and the environment."""
    environ = dict(os.environ) if environ is None else environ
    path = path or config_file()
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                values.update(_coerce(tomllib.load(fh), source=str(path)))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"cannot read config file {path}: {exc}; fix the TOML or remove the file"
            ) from exc
    for key, var in _ENV.items():
        if environ.get(var):
            values.update(_coerce({key: environ[var]}, source=f"${var}"))
    return Settings(**values)
