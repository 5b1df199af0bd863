"""Reading OSC argument values: numbers that may come as int, float or text, strings, flags and paths.

Each function names the argument and the value it got when it refuses one, e.g. ``bars must be a whole number
between 1 and 256, got the float 8.5``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from bridge.config import Settings
from bridge.errors import AudioReadError, InvalidArgument
from bridge.naming import safe_name

MAX_TEXT_LENGTH = 4096


def describe(value: Any) -> str:
    """How a received OSC value reads in an error message: ``the string 'fast'``, ``the float 9000.5``."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the int {value}"
    if isinstance(value, float):
        return f"the float {value:g}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, (bytes, bytearray)):
        return f"a blob of {len(value)} bytes"
    if value is None:
        return "nil"
    return f"a value of OSC type {type(value).__name__}"


def number_of(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number (booleans, blobs, words)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_int(name: str, value: Any, low: int, high: int) -> int:
    """A whole number in ``low..high``; ``120`` and ``120.0`` (and ``"120"``) all read as 120."""
    number = number_of(value)
    if number is None or number != int(number) or not low <= number <= high:
        raise InvalidArgument(
            f"{name} must be a whole number between {low} and {high}, got {describe(value)}"
        )
    return int(number)


def as_float(name: str, value: Any, low: float, high: float) -> float:
    number = number_of(value)
    if number is None or not low <= number <= high:
        raise InvalidArgument(f"{name} must be a number between {low:g} and {high:g}, got {describe(value)}")
    return number


def as_text(name: str, value: Any, max_len: int = MAX_TEXT_LENGTH) -> str:
    """A string; a number is taken as its text (``7`` and ``7.0`` read as ``"7"``) since some clients send ids
    and names as numbers."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        text = str(int(value)) if float(value).is_integer() else repr(value)
    else:
        raise InvalidArgument(f"{name} must be a string, got {describe(value)}")
    if not text.strip() or len(text) > max_len or any(ord(c) < 32 for c in text):
        raise InvalidArgument(f"{name} must be 1 to {max_len} printable characters, got {describe(value)}")
    return text


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    number = number_of(value)
    if number in (0.0, 1.0):
        return number == 1.0
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
        return value.strip().lower() in ("true", "yes", "on")
    raise InvalidArgument(f"{name} must be 1 or 0 (true or false), got {describe(value)}")


def native_path(text: str) -> Path:
    """A path as the OS spells it: ``~`` expanded, and Max's ``Volume:/dir/file`` form turned into
    ``/dir/file`` (or ``/Volumes/Volume/dir/file`` when that is where the file is)."""
    match = re.match(r"^([^/:\\]{2,}):(/.*)$", text)
    if match and os.name != "nt":
        volume, rest = match.groups()
        on_volume = Path("/Volumes") / volume / rest.lstrip("/")
        return on_volume if on_volume.exists() and not Path(rest).exists() else Path(rest)
    return Path(os.path.expanduser(text))


def allowed_roots(settings: Settings) -> list[Path]:
    """The folders requests may name: the render folder and the configured allowed roots, resolved."""
    return [
        settings.out_dir.expanduser().resolve(),
        *(r.expanduser().resolve() for r in settings.allowed_roots),
    ]


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def input_file(name: str, value: Any, roots: Sequence[Path] | None = None) -> str:
    """An absolute path to a readable file, as a string; AudioReadError when it is missing or unreadable.

    Args:
        name: the argument's name, for messages.
        value: the received value.
        roots: when given (a request from another machine), the file must lie inside one of these folders.
    """
    path = native_path(as_text(name, value))
    what = "file" if name == "path" else f"{name} file"
    if not path.is_absolute():
        raise InvalidArgument(
            f"{name} must be an absolute path (the daemon does not know your working folder), "
            f"got {str(path)!r}"
        )
    if not path.exists():
        raise AudioReadError(f"{what} not found: {path}; check the path")
    if not path.is_file():
        raise AudioReadError(f"{what} is not a file: {path}; give the path of an audio file")
    if not os.access(path, os.R_OK):
        raise AudioReadError(f"{what} is not readable: {path}; check its permissions")
    if roots is not None and not _inside(path.resolve(), roots):
        raise InvalidArgument(
            f"{name} must lie inside the render folder or an allowed root ({', '.join(map(str, roots))}) when "
            f"the request comes from another machine, got {str(path)!r}; add its folder to allowed_roots in the "
            f"daemon's config file"
        )
    return str(path)


def output_folder(value: Any, settings: Settings) -> str:
    """Resolve the ``out`` option to an absolute folder inside the render folder or an allowed root.

    A relative ``out`` is a subfolder of the render folder, each part sanitised; an absolute one must resolve
    (symlinks and ``..`` followed) inside ``settings.out_dir`` or one of ``settings.allowed_roots``.
    """
    root = settings.out_dir.expanduser().resolve()
    if value is None:
        return str(root)
    text = as_text("out", value)
    path = native_path(text)
    if not path.is_absolute():
        parts = [p for p in PurePath(text).parts if p not in ("", ".")]
        if ".." in parts:
            raise InvalidArgument(f"out must not climb out of the render folder with '..', got {text!r}")
        return str(root.joinpath(*(safe_name(p) for p in parts)))
    resolved = path.resolve()
    roots = allowed_roots(settings)
    if _inside(resolved, roots):
        return str(resolved)
    allowed = ", ".join(str(r) for r in roots)
    raise InvalidArgument(
        f"out must be a folder inside the render folder or an allowed root ({allowed}), got {text!r}; "
        f"add it to allowed_roots in the config file to allow it"
    )
