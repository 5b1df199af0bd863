"""Reading OSC argument values: numbers that may come as int, float or text, strings and flags (paths: see
:mod:`bridge.server.paths`).

Each function names the argument and the value it got when it refuses one, e.g. ``bars must be a whole number
between 1 and 256, got the float 8.5``.
"""

from __future__ import annotations

import math
from typing import Any

from bridge.errors import InvalidArgument

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
