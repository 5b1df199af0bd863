"""Build the Max for Live devices in m4l/ from their patcher sources: Stembridge.amxd from Stembridge.maxpat (the
jobs device) and StembridgeJam.amxd from StembridgeJam.maxpat (the live jam device).

An .amxd is a run of chunks, each a 4-byte ASCII tag, a 4-byte little-endian payload length and the payload:

    ampf  4  the device type: ``aaaa`` audio effect (``mmmm`` MIDI effect, ``iiii`` instrument)
    meta  4  four zero bytes
    ptch  n  the patcher JSON, UTF-8, ending in one NUL byte

The patcher carries what Max saves with a device: a ``parameters`` block and a ``project`` block whose
``amxdtype`` is the device type as a big-endian number (``aaaa`` is 1633771873); the build refuses a patch
whose project block says another type than the one it writes.

The build is deterministic (the same .maxpat always gives the same bytes), so the committed .amxd can be
checked against a fresh build: ``python m4l/build.py --check`` (tests/test_m4l_device.py runs it). The devices'
JavaScript (stembridge*.js) is not embedded: Max finds it beside the .amxd (each patch lists its scripts in its
``dependency_cache``). Standard library only.

Usage:
    python m4l/build.py            # write every device's .amxd
    python m4l/build.py --check    # exit 1 if a committed .amxd is not what its .maxpat builds
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEVICES = {"Stembridge": "audio", "StembridgeJam": "audio"}  # each m4l/<name>.maxpat and its device type
DEVICE_TYPES = {"audio": b"aaaa", "midi": b"mmmm", "instrument": b"iiii"}


def chunk(tag: bytes, payload: bytes) -> bytes:
    """One chunk: tag, little-endian length, payload."""
    if len(tag) != 4:
        raise ValueError(f"a chunk tag is 4 bytes, got {tag!r}")
    return tag + struct.pack("<I", len(payload)) + payload


def read_chunks(data: bytes) -> list[tuple[str, bytes]]:
    """The chunks of an .amxd as ``[(tag, payload)]``; raises ValueError on a truncated file."""
    chunks: list[tuple[str, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"truncated chunk header at byte {offset}")
        tag = data[offset : offset + 4].decode("ascii")
        (size,) = struct.unpack_from("<I", data, offset + 4)
        end = offset + 8 + size
        if end > len(data):
            raise ValueError(f"chunk {tag!r} at byte {offset} says {size} bytes but the file ends first")
        chunks.append((tag, data[offset + 8 : end]))
        offset = end
    return chunks


def patcher_text(maxpat: bytes, device_type: bytes) -> bytes:
    """The patcher JSON as it goes into ``ptch``: checked to parse and to be a device of ``device_type``, LF
    line endings, UTF-8."""
    text = maxpat.decode("utf-8").replace("\r\n", "\n")
    patch = json.loads(text)
    if "patcher" not in patch:
        raise ValueError("not a Max patcher: the JSON has no top-level 'patcher'")
    project = patch["patcher"].get("project")
    if not isinstance(project, dict) or "amxdtype" not in project:
        raise ValueError(
            "the patcher has no project block with an amxdtype; open it in Max and save it as a device"
        )
    expected = int.from_bytes(device_type, "big")
    if project["amxdtype"] != expected:
        found = project["amxdtype"]
        valid = isinstance(found, int) and 0 <= found < 2**32
        name = found.to_bytes(4, "big").decode("ascii", "replace") if valid else "?"
        raise ValueError(
            f"project.amxdtype is {found} ({name}), not {expected} ({device_type.decode()}): the patch is "
            "another kind of device; build it with its own type or fix the project block"
        )
    return text.encode("utf-8")


def build_amxd(maxpat: bytes, device: str = "audio") -> bytes:
    """The .amxd bytes for a patcher's JSON bytes."""
    device_type = DEVICE_TYPES[device]
    return (
        chunk(b"ampf", device_type)
        + chunk(b"meta", b"\x00\x00\x00\x00")
        + chunk(b"ptch", patcher_text(maxpat, device_type) + b"\x00")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed .amxd, write nothing"
    )
    args = parser.parse_args(argv)
    stale = 0
    for name, device in sorted(DEVICES.items()):
        source, target = HERE / f"{name}.maxpat", HERE / f"{name}.amxd"
        built = build_amxd(source.read_bytes(), device)
        if args.check:
            if not target.exists() or target.read_bytes() != built:
                print(
                    f"{target.name} is out of date with {source.name}; run: python m4l/build.py",
                    file=sys.stderr,
                )
                stale += 1
            continue
        target.write_bytes(built)
        print(f"wrote {target} ({len(built)} bytes)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
