"""Which floating-point precision a model runs in: float32, or bfloat16 on CPUs that do it in hardware.

On such CPUs (x86 with ``avx512_bf16`` or ``amx_bf16``) bfloat16 matrix products run about twice as fast as
float32; the engines then run their networks in bfloat16 by default and keep what touches the audio itself
(STFTs, codecs, overlap-add) in float32. Nothing here imports torch.
"""

from __future__ import annotations

import platform
from pathlib import Path

from bridge.errors import InvalidArgument

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (x86 ``avx512_bf16`` or ``amx_bf16``; read from
    Linux's /proc/cpuinfo: elsewhere float32 stays the default)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_precision(requested: str | None, device: str) -> str:
    """``auto`` (or ``None``): bfloat16 on a CPU with native bfloat16, else float32.

    Raises:
        InvalidArgument: not one of :data:`PRECISIONS`.
    """
    key = str(requested or "auto").strip().lower()
    if key not in PRECISIONS:
        raise InvalidArgument(f"precision must be auto, float32 or bfloat16, got {requested!r}")
    if key == "auto":
        return "bfloat16" if device == "cpu" and native_bfloat16() else "float32"
    return key
