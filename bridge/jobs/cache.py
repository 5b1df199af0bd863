"""A content-hash cache of separations: identical separations of identical audio are served from it.

The key is the SHA-256 of the input file's bytes together with everything else that changes what the engine
returns: the engine's name, the model, the stems asked for (in order), the engine's own settings that matter
(its working rate, its device) and the stembridge version (whose built-in engine may change between
releases), plus :data:`CACHE_VERSION`. The value is the engine's output, not files: one ``.npy`` file per stem
(float32 ``[C, T]`` at the input's rate) and a ``meta.json`` with their shapes and SHA-256 sums, in
``<state_dir>/cache/<key>/``. A hit therefore still writes new files with the names, format, bit depth, rate
and position the request asks for.

The file is always hashed (in 1 MiB chunks; about 1.5 GB/s, so a few tenths of a second for a long song,
next to seconds to minutes of separation). A key on ``(path, size, mtime)`` would save that, but mtimes are
coarse on some disks (1 s on HFS+, 2 s on FAT), and a DAW that bounces the same file again within a second
would then be served the stems of the old one.

Entries are written into a temp folder and renamed into place, so a reader never sees half an entry; an entry
that does not check out (missing or truncated file, wrong sum, wrong shape) is ignored and removed. The cache
is bounded (``cache_max_mb`` in the settings, 2 GiB by default): after each store the least recently used
entries are evicted until it fits.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bridge.audio.inputs import open_regular
from bridge.errors import StembridgeError
from bridge.jobs.leftovers import process_alive

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_MAX_BYTES = 2 << 30
_CHUNK = 1 << 20
_META = "meta.json"


@dataclass(frozen=True)
class Digest:
    """A file's content hash and the file's state when it was taken."""

    sha256: str
    size: int
    mtime_ns: int
    inode: int


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def file_digest(path: Path) -> Digest | None:
    """SHA-256 of the file's bytes, read in 1 MiB chunks.

    Returns:
        None when the file cannot be read or is not a regular file (the caller's reading reports why), or
        changed while it was hashed.
    """
    h = hashlib.sha256()
    try:
        with open_regular(path) as f:  # a FIFO is refused, never waited on
            before = os.fstat(f.fileno())
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
        after = os.stat(path)
    except (OSError, StembridgeError):
        return None
    if _stat_key(before) != _stat_key(after):
        return None
    return Digest(h.hexdigest(), *_stat_key(after))


def unchanged(path: Path, digest: Digest) -> bool:
    """Whether the file still looks as it did when ``digest`` was taken (size, mtime and inode)."""
    try:
        return _stat_key(os.stat(path)) == (digest.size, digest.mtime_ns, digest.inode)
    except OSError:
        return False


def separation_key(
    digest: Digest, *, engine: str, model: str, stems: Sequence[str], settings: Mapping[str, Any]
) -> str:
    """The cache key of separating the file with ``digest`` into ``stems`` by ``engine``/``model``.

    Args:
        settings: the engine's other settings that change its output (JSON-compatible values).
    """
    payload = {
        "format": CACHE_VERSION,
        "audio": digest.sha256,
        "engine": engine,
        "model": model,
        "stems": list(stems),
        "settings": dict(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class _HashingWriter:
    """A write-only file object that also hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self._f.write(data)


class _Corrupt(Exception):
    pass


def _load_npy(path: Path, sha256: str, shape: Sequence[int]) -> np.ndarray:
    """Read a ``.npy`` file whole, check its sum and shape, and return its array (no second copy)."""
    size = path.stat().st_size
    buf = bytearray(size)
    with open(path, "rb") as f:
        if f.readinto(buf) != size:
            raise _Corrupt(f"{path.name} is shorter than it was")
    if hashlib.sha256(buf).hexdigest() != sha256:
        raise _Corrupt(f"{path.name} does not match its checksum")
    header = io.BytesIO(memoryview(buf)[:4096])
    version = np.lib.format.read_magic(header)
    if version != (1, 0):
        raise _Corrupt(f"{path.name} has an unexpected .npy version {version}")
    dims, fortran, dtype = np.lib.format.read_array_header_1_0(header)
    if fortran or dtype not in (np.dtype("<f4"), np.dtype("<f8")) or list(dims) != list(shape):
        raise _Corrupt(f"{path.name} holds {dtype} {dims}, not float {tuple(shape)}")
    return np.frombuffer(buf, dtype=dtype, offset=header.tell()).reshape(dims)


class ResultCache:
    """Separated stems by :func:`separation_key`, in ``folder``, at most ``max_bytes`` in all.

    Creating one removes what a killed process left half-written there. Reading and storing never fail a
    job: a broken entry is a miss, a store that fails (disk full) is logged and skipped.
    """

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._remove_leftovers()

    def get(
        self, key: str, stems: Sequence[str], shape: tuple[int, int], sample_rate: int
    ) -> dict[str, np.ndarray] | None:
        """The cached ``{stem: [C, T]}`` for ``key``, or None on a miss.

        Args:
            stems: the stems wanted (all must be in the entry).
            shape: the input's ``(channels, samples)``, which every stem must have.
            sample_rate: the input's rate, which the entry must be at.
        """
        entry = self.folder / key
        meta_path = entry / _META
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != CACHE_VERSION or meta.get("key") != key:
                raise _Corrupt("its meta.json is not this entry's")
            if meta.get("sample_rate") != sample_rate:
                raise _Corrupt(f"it is at {meta.get('sample_rate')} Hz, the input at {sample_rate} Hz")
            out = {}
            for stem in stems:
                info = meta["stems"][stem]
                if not isinstance(info.get("file"), str) or "/" in info["file"] or "\\" in info["file"]:
                    raise _Corrupt(f"bad file name {info.get('file')!r}")
                out[stem] = _load_npy(entry / info["file"], str(info["sha256"]), shape)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, _Corrupt) as exc:
            log.warning("ignored and removed a broken cache entry %s: %s", entry, exc)
            self._remove(entry)
            return None
        try:
            os.utime(meta_path)  # most recently used
        except OSError:
            pass
        return out

    def put(self, key: str, stems: Mapping[str, np.ndarray], sample_rate: int) -> bool:
        """Store ``{stem: [C, T]}`` (float32 or float64, kept as is) under ``key``; evict to fit.

        Returns:
            True when stored; False when it is off, too big for the cache, already there, or the store failed.
        """
        arrays = {
            s: np.ascontiguousarray(a if a.dtype in (np.float32, np.float64) else a.astype(np.float32))
            for s, a in stems.items()
        }
        size = sum(a.nbytes for a in arrays.values())
        if self.max_bytes <= 0 or size > self.max_bytes:
            return False
        entry = self.folder / key
        if (entry / _META).is_file():
            return False
        tmp = self.folder / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(parents=True)
            files = {}
            for i, (stem, array) in enumerate(arrays.items()):
                name = f"{i}.npy"
                with open(tmp / name, "wb") as f:
                    writer = _HashingWriter(f)
                    np.lib.format.write_array(writer, array, version=(1, 0), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                files[stem] = {"file": name, "sha256": writer.sha256.hexdigest(), "shape": list(array.shape)}
            meta = {"format": CACHE_VERSION, "key": key, "sample_rate": int(sample_rate), "stems": files}
            with open(tmp / _META, "w", encoding="utf-8") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, entry)  # atomic; fails when another process stored the same entry meanwhile
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (entry / _META).is_file():
                log.warning("could not store a separation in the cache %s: %s", self.folder, exc)
            return False
        self.evict(keep=key)
        return True

    def entries(self) -> list[tuple[Path, float, int]]:
        """Every complete entry as ``(folder, last used, bytes)``, least recently used first. Incomplete
        folders found on the way are removed."""
        found = []
        try:
            children = list(self.folder.iterdir())
        except OSError:
            return []
        for child in children:
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                used = (child / _META).stat().st_mtime
                size = sum(f.stat().st_size for f in child.iterdir())
            except OSError:
                self._remove(child)  # no meta.json: never a complete entry
                continue
            found.append((child, used, size))
        return sorted(found, key=lambda e: e[1])

    def evict(self, keep: str | None = None) -> list[Path]:
        """Remove the least recently used entries until the cache fits in ``max_bytes``; returns them."""
        entries = self.entries()
        total = sum(size for _, _, size in entries)
        evicted = []
        for folder, _, size in entries:
            if total <= self.max_bytes:
                break
            if folder.name == keep:
                continue
            self._remove(folder)
            evicted.append(folder)
            total -= size
        return evicted

    def _remove(self, entry: Path) -> None:
        """Rename ``entry`` out of the way (so it is no longer found), then delete it."""
        trash = self.folder / f".trash-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        try:
            children = list(self.folder.iterdir())
        except OSError:
            return
        for child in children:
            parts = child.name.split("-")
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            # a dead process's half-written entry; anyone's trash (deleting it twice is harmless)
            if parts[0] == ".trash" or (parts[0] == ".tmp" and pid != os.getpid() and not process_alive(pid)):
                shutil.rmtree(child, ignore_errors=True)
