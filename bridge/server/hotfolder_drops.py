"""What lies in a hot folder's inboxes, whether each drop is complete, and the job it asks for (docs/LOGIC.md).

A *drop* is one unit of work: an audio file in ``separate/`` or ``vary/`` (with an optional JSON sidecar), and
in ``generate/`` a folder of context files with an optional ``request.json``, or a single file whose name (or
sidecar) says what to make. Its options come from the JSON and from the file-name convention
``<name>__<stem>__<bpm>bpm__<bars>bars`` (read with :mod:`bridge.naming`), and are validated by the same code
as an OSC request (:func:`bridge.server.protocol.pending_job`), so a bad value gets the same message, prefixed
with where it came from. A drop is complete when its audio headers are (:func:`audio_problem`) and a generate
folder has what it needs (:func:`waiting_reason`). Nothing here waits, watches or moves files:
:mod:`bridge.server.hotfolder` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.audio.headers import decodable, truncation
from bridge.audio.inputs import kind_of, not_regular, open_regular
from bridge.errors import InvalidArgument, StembridgeError
from bridge.jobs.spec import JobSpec
from bridge.naming import parse_tempo, split_source
from bridge.server import protocol

KINDS = ("separate", "vary", "generate")
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".bwf", ".aif", ".aiff", ".aifc", ".flac", ".mp3", ".ogg", ".oga", ".caf"}
)
# Files being written by a copier, a browser or an editor; never taken, and a folder holding one waits.
TEMP_SUFFIXES = (".partial", ".part", ".tmp", ".crdownload", ".download")
REQUEST_FILE = "request.json"
MAX_JSON_BYTES = 64 * 1024
EXAMPLE_JSON = '{"stem": "bass", "bpm": 120, "bars": 8}'

# JSON field -> the protocol key it is validated as (see bridge.server.protocol). "stem" is generate's
# positional argument.
_OUTPUT = {
    "engine": "engine",
    "model": "model",
    "format": "format",
    "bit_depth": "bitdepth",
    "sample_rate": "samplerate",
    "position": "position",
    "midi": "midi",
}
FIELDS: dict[str, dict[str, str]] = {
    "separate": {
        **_OUTPUT,
        "stems": "stems",
        "start": "start",
        "length": "length",
        "segment": "segment",
        "overlap": "overlap",
        "shifts": "shifts",
        "precision": "precision",
    },
    "generate": {
        **_OUTPUT,
        "stem": "stem",
        "bpm": "bpm",
        "bars": "bars",
        "time_signature": "timesig",
        "prompt": "prompt",
        "seed": "seed",
        "variations": "variations",
        "match_loudness": "loudness",
    },
    "vary": {
        **_OUTPUT,
        "start": "start",
        "length": "length",
        "variations": "variations",
        "strength": "strength",
        "seed": "seed",
        "bpm": "bpm",
        "bars": "bars",
        "time_signature": "timesig",
    },
}


def ignored(name: str) -> bool:
    """Whether a directory entry is never a drop: hidden files (``.DS_Store``, ``._*`` AppleDouble files, our
    own temp files), files still being downloaded or copied, and the macOS folder icon file."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES) or name == "Icon\r"


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


@dataclass(frozen=True)
class Convention:
    """What a name following ``<name>__<stem>__<bpm>bpm__<bars>bars`` says (None where it says nothing)."""

    name: str
    stem: str | None = None
    bpm: float | None = None
    bars: int | None = None


def parse_name(text: str) -> Convention:
    """Read the file-name convention from a file's stem or a folder's name.

    Example:
        >>> parse_name("song__bass__120bpm__8bars")
        Convention(name='song', stem='bass', bpm=120.0, bars=8)
        >>> parse_name("my take")
        Convention(name='my take', stem=None, bpm=None, bars=None)
    """
    bpm, bars = parse_tempo(text)
    if bpm is None:
        return Convention(text)
    name, stem = split_source(text)
    return Convention(name, stem, bpm, bars)


@dataclass(frozen=True)
class Drop:
    """One unit of work found in an inbox.

    Attributes:
        kind: ``separate``, ``vary`` or ``generate``: the inbox it lies in.
        path: the file or folder dropped.
        name: its results go to ``done/<name>/``; a failure is explained in ``failed/<name>.txt``.
        audio: its audio files (the file itself, or a folder's audio files in name order).
        request: its JSON: a file's sidecar or a folder's ``request.json``; None when it has none.
        refusal: why it can never be a job, known from its name alone (not an audio file...); empty if none.
        is_folder: a folder (generate's unit), not a file.
    """

    kind: str
    path: Path
    name: str
    audio: tuple[Path, ...] = ()
    request: Path | None = None
    refusal: str = ""
    is_folder: bool = False

    @property
    def label(self) -> str:
        """``separate/song.wav``: how messages name it."""
        return f"{self.kind}/{self.path.name}"

    def needs_request(self) -> bool:
        """A generate folder that has no ``request.json`` and whose name does not say stem, bpm and bars."""
        if self.kind != "generate" or not self.is_folder or self.request is not None:
            return False
        convention = parse_name(self.path.name)
        return convention.stem is None or convention.bpm is None


def sidecar(path: Path, names: set[str]) -> Path | None:
    """The JSON beside an audio file, if any: ``song.wav.json``, else ``song.json`` when no other audio file
    in the inbox is called ``song`` (``song.wav`` and ``song.aiff`` cannot share one)."""
    if f"{path.name}.json" in names:
        return path.with_name(f"{path.name}.json")
    if f"{path.stem}.json" in names:
        namesakes = [
            n for n in names if Path(n).stem == path.stem and n != f"{path.stem}.json" and not ignored(n)
        ]
        if namesakes == [path.name]:
            return path.with_name(f"{path.stem}.json")
    return None


def _folder_drop(kind: str, path: Path) -> Drop:
    if kind != "generate":
        return Drop(
            kind,
            path,
            path.name,
            is_folder=True,
            refusal=f"{kind}/ takes audio files, not folders; drop the audio files themselves (folders are for "
            f"generate/)",
        )
    names = sorted(os.listdir(path))
    audio = tuple(path / n for n in names if not ignored(n) and is_audio(path / n) and (path / n).is_file())
    request = path / REQUEST_FILE if REQUEST_FILE in names else None
    return Drop(kind, path, parse_name(path.name).name, audio, request, is_folder=True)


def list_drops(inbox: Path, kind: str) -> list[Drop]:
    """The drops in ``inbox`` (the ``kind`` folder), in name order. JSON files are sidecars, never drops.

    Raises:
        OSError: the inbox cannot be listed.
    """
    with os.scandir(inbox) as it:
        entries = sorted(it, key=lambda e: e.name)
    names = {e.name for e in entries}
    drops = []
    for entry in entries:
        path = Path(entry.path)
        if ignored(entry.name) or path.suffix.lower() == ".json":
            continue
        if entry.is_symlink():  # moving a link's target would empty a folder of the user's elsewhere
            drops.append(
                Drop(
                    kind,
                    path,
                    path.name,
                    refusal=f"{path.name} is a link; links are not taken (the files they point to would be "
                    "moved): copy the files in instead",
                )
            )
            continue
        if entry.is_dir():
            try:
                drops.append(_folder_drop(kind, path))
            except FileNotFoundError:  # removed since the inbox was listed
                continue
            except OSError as exc:
                refusal = f"the folder cannot be read ({exc.strerror or exc}); check its permissions"
                drops.append(Drop(kind, path, path.name, is_folder=True, refusal=refusal))
        elif not entry.is_file():  # a FIFO (opening it would hold the watcher for good), a socket, a device
            try:
                what = kind_of(entry.stat().st_mode) or "a special file"
            except FileNotFoundError:  # removed since the inbox was listed
                continue
            refusal = not_regular(path, what, name=path.name, fix="drop audio files").message
            drops.append(Drop(kind, path, path.name, refusal=refusal))
        elif not is_audio(path):
            drops.append(
                Drop(
                    kind,
                    path,
                    path.name,  # failed/notes.txt.txt explains failed/notes.txt
                    refusal=f"{path.name} is not an audio file stembridge reads; drop WAV, AIFF, FLAC, MP3 or "
                    f"OGG files",
                )
            )
        else:
            name = parse_name(path.stem).name if kind == "generate" else path.stem
            drops.append(Drop(kind, path, name, (path,), sidecar(path, names)))
    return drops


def audio_problem(path: Path) -> str | None:
    """Why an audio file cannot be taken yet (half-copied, unreadable header, no samples), or None."""
    import soundfile as sf

    try:
        with open_regular(path):  # a FIFO is refused, never waited on
            pass
        problem = truncation(path)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    except StembridgeError as exc:  # swapped for a FIFO since it was listed
        return exc.message
    if problem is not None:
        return problem
    try:
        with decodable(path) as source:
            info = sf.info(source)
    except (RuntimeError, OSError, ValueError) as exc:  # libsndfile's errors are RuntimeErrors
        return f"its header cannot be read ({str(exc).splitlines()[-1] if str(exc) else type(exc).__name__})"
    if info.frames <= 0:
        return "it holds no audio yet"
    return None


def waiting_reason(drop: Drop) -> str | None:
    """Why a drop whose files stopped changing is still not complete, or None when it can be taken."""
    if drop.is_folder:
        partial = sorted(
            n for n in os.listdir(drop.path) if n.lower().endswith(TEMP_SUFFIXES) and not n.startswith("._")
        )
        if partial:
            return f"{partial[0]} in it is still being copied"
        if drop.needs_request():
            return "it has no request.json yet"
    for audio in drop.audio:
        problem = audio_problem(audio)
        if problem is not None:
            return f"{audio.name}: {problem}"
    return None


def signature(drop: Drop) -> tuple[Any, ...]:
    """What changes while a drop is being written: sizes and modification times (``OSError`` if it vanished)."""
    if drop.refusal and drop.is_folder:  # a refused folder waits only for the settle time
        return (drop.refusal,)
    if drop.is_folder:
        with os.scandir(drop.path) as it:
            entries = [(e.name, e.stat()) for e in it if e.name != ".DS_Store"]
        return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in entries))
    files = [drop.path] if drop.request is None else [drop.path, drop.request]
    return tuple((p.name, (st := os.stat(p)).st_size, st.st_mtime_ns) for p in files)


def read_request(path: Path, kind: str) -> dict[str, Any]:
    """The JSON object in ``path``, its null values dropped.

    Raises:
        InvalidArgument: not readable, not a regular file (a FIFO...), not JSON, not an object, or a field the
            ``kind`` does not know.
    """
    try:
        with open_regular(
            path, name=path.name, fix="write the JSON into a plain file", error=InvalidArgument
        ) as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(
            f"cannot read {path.name}: {exc.strerror or exc}; check its permissions"
        ) from None
    if len(raw) > MAX_JSON_BYTES:
        raise InvalidArgument(f"{path.name} is over {MAX_JSON_BYTES // 1024} KiB; a request is a few lines")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path.name} is not UTF-8 text; save it as plain UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); write it "
            f"like {EXAMPLE_JSON}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"{path.name} must hold one JSON object like {EXAMPLE_JSON}, got {_json_type(data)}"
        )
    known = FIELDS[kind]
    for key in data:
        if key not in known:
            raise InvalidArgument(
                f"{path.name}: unknown field {key!r} for {kind}; use {', '.join(sorted(known))}"
            )
    return {k: v for k, v in data.items() if v is not None}


def _json_type(value: Any) -> str:
    names = {list: "a list", dict: "an object", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def _options(data: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """JSON fields as the protocol's options (``stems`` as a list, the others single values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        osc = FIELDS[kind][key]
        if osc == "stems":
            out[osc] = value if isinstance(value, list) else [value]
        elif isinstance(value, (list, dict)):
            raise InvalidArgument(f"{where}: {key} must be a single value, got {_json_type(value)}")
        else:
            out[osc] = value
    return out


def job_for(drop: Drop, out: Path) -> JobSpec:
    """The job a drop asks for, writing into ``out``.

    Raises:
        StembridgeError: a bad or missing value; the message names the field, where it came from, and the fix.
    """
    data = read_request(drop.request, drop.kind) if drop.request is not None else {}
    where = drop.request.name if drop.request is not None else drop.label
    options = _options(data, drop.kind, where)
    positional: Any = None
    if drop.kind == "generate":
        convention = parse_name(drop.path.name if drop.is_folder else drop.path.stem)
        positional = options.pop("stem", convention.stem)
        if convention.bpm is not None:
            options.setdefault("bpm", convention.bpm)
            options.setdefault("bars", convention.bars)
        missing = [
            k
            for k, v in (("stem", positional), ("bpm", "bpm" in options), ("bars", "bars" in options))
            if not v
        ]
        if missing:
            raise InvalidArgument(_missing_message(drop, missing))
    else:
        positional = str(drop.audio[0])
    try:
        pending = protocol.pending_job(drop.kind, positional, options)
    except StembridgeError as exc:
        raise type(exc)(f"{where}: {_json_names(exc.message, drop.kind)}") from None
    spec = {"out": str(out), **pending.options}
    if drop.kind == "generate":
        spec["context"] = [str(p) for p in drop.audio]
    else:
        spec["path"] = str(drop.audio[0])
    return JobSpec(drop.kind, spec)


def _json_names(message: str, kind: str) -> str:
    """A protocol message in the words of the JSON file: ``bitdepth must ...`` -> ``bit_depth must ...``."""
    for field, key in FIELDS[kind].items():
        if field != key and message.startswith(f"{key} "):
            return field + message[len(key) :]
    return message.replace("a value of OSC type", "a JSON value of type")


def _missing_message(drop: Drop, missing: list[str]) -> str:
    what = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    if drop.is_folder:
        return (
            f"{drop.label} does not say its {what}; put a request.json like {EXAMPLE_JSON} in the folder, or "
            f"name the folder like {drop.name}__bass__120bpm__8bars"
        )
    if drop.request is not None:
        return f"{drop.request.name} does not say the {what}; write it like {EXAMPLE_JSON}"
    return (
        f"{drop.label} does not say its {what}; name it like {drop.path.stem}__bass__120bpm__8bars"
        f"{drop.path.suffix}, or put a {drop.path.name}.json like {EXAMPLE_JSON} beside it"
    )
