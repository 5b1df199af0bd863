"""What a batch does: the audio files under folders and globs, or the requests of a manifest, as :class:`Item`.

An item's outputs go to ``--out`` under its :attr:`Item.folder`: for ``batch separate`` the folder the file sits
in, relative to the folder or glob base it was found under (so the output mirrors the input tree); for a
manifest line, its first input's folder relative to the manifest's folder (the top when it lies elsewhere).

A manifest holds one JSON object per line, with the options of the single commands under their long option
names (``-`` as ``_``)::

    {"task": "separate", "file": "songs/a.wav", "stems": ["drums", "bass"]}
    {"task": "generate", "stem": "bass", "context": ["drums.wav"], "bpm": 120, "bars": 8, "seed": 3}
    {"task": "vary", "file": "loop.wav", "variations": 4, "strength": 0.6}

Lines are checked as the single commands check their arguments before anything runs: a malformed line (not
JSON, an unknown task or key, a value of the wrong type or out of range) is an :class:`InvalidArgument` naming
the line. A file that is missing or unreadable is not: that item fails when it runs, and the rest goes on.

Each item has an :attr:`Item.identity`, what makes a later run's item "the same input done again" (whose new
files then replace the earlier files of the same names, :mod:`bridge.batch.state`): for ``batch separate`` the
input file's resolved path; for a manifest line the manifest's resolved path, the line's number and a hash of
the request without its ``seed`` (a new seed renders the same request again; another stem, tempo or file is
another request, whose files never replace these).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.errors import InvalidArgument, StembridgeError

TASKS = ("separate", "generate", "vary")
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wave", ".bwf", ".aif", ".aiff", ".aifc", ".flac", ".mp3", ".ogg", ".oga", ".caf"}
)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Item:
    """One request of a batch.

    Attributes:
        task: ``separate``, ``generate`` or ``vary``.
        inputs: the audio files it reads (absolute): the file, or the context files.
        options: the task's options, JSON-compatible, unset ones left out (see :data:`FIELDS`).
        folder: where its outputs go under ``--out``, a relative POSIX path (``""``: the top).
        label: how reports name it: the input's path, or ``manifest.jsonl:3``.
        identity: what tells a later run that it is the same item done again (see the module doc); ``""``:
            never the same as another.
    """

    task: str
    inputs: tuple[Path, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    folder: str = ""
    label: str = ""
    identity: str = ""


# --- batch separate: files under folders and globs ------------------------------------------------------------


def is_audio(path: Path) -> bool:
    """An audio file by its name: a known suffix, not hidden (temp files and macOS ``._`` files are)."""
    return path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".")


def _under(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def find_audio(paths: Sequence[str], exclude: Path | None = None) -> list[tuple[Path, str]]:
    """The audio files ``paths`` name, each with the folder it mirrors to: ``[(file, "sub/folder"), ...]``.

    A file is taken as it is (folder ``""``); a folder is searched recursively and each file keeps its folder
    relative to it; a glob (``"songs/**/*.wav"``) is expanded (``**`` recursive) relative to the part before
    its first wildcard. Files under ``exclude`` (the output folder) are left out. Sorted, without duplicates.

    Raises:
        InvalidArgument: a path does not exist, or a glob or folder holds no audio file.
    """
    found: dict[Path, str] = {}
    for text in paths:
        matches = _expand(text)
        kept = [(f, rel) for f, rel in matches if not _under(f, exclude)]
        if not kept:
            raise InvalidArgument(
                f"no audio files under {text} (looked for {', '.join(sorted(AUDIO_SUFFIXES))}); "
                "give folders, audio files or globs such as 'songs/**/*.wav'"
            )
        for f, rel in kept:
            found.setdefault(f, rel)
    return sorted(found.items(), key=lambda pair: (pair[1], pair[0].name))


def _expand(text: str) -> list[tuple[Path, str]]:
    if any(c in _GLOB_CHARS for c in text):
        base = _glob_base(text)
        hits = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        return [(p.resolve(), _rel_folder(p, base)) for p in hits if p.is_file() and is_audio(p)]
    path = Path(text).expanduser()
    if path.is_dir():
        return [
            (p.resolve(), _rel_folder(p, path))
            for p in sorted(path.rglob("*"))
            if p.is_file()
            and is_audio(p)
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
    if path.exists():
        return [(path.resolve(), "")]
    raise InvalidArgument(f"{text} does not exist; give folders, audio files or globs")


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard: ``songs/**/*.wav`` -> ``songs``."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if any(c in _GLOB_CHARS for c in part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _rel_folder(path: Path, base: Path) -> str:
    try:
        return path.parent.resolve().relative_to(base.resolve()).as_posix().strip(".")
    except ValueError:
        return ""


def separate_items(files: Iterable[tuple[Path, str]], options: Mapping[str, Any]) -> list[Item]:
    """One separation per file, each with the same ``options``; ``files`` are resolved paths."""
    return [Item("separate", (f,), dict(options), rel, str(f), str(f)) for f, rel in files]


# --- batch run: a manifest --------------------------------------------------------------------------------------

Check = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a number")
    return float(value)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("a whole number")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of strings")
    return [v.strip() for v in value if v.strip()]


def _numbers(value: Any) -> list[float]:
    if not isinstance(value, list):
        raise TypeError("a list of numbers")
    return [_number(v) for v in value]


_COMMON: dict[str, Check] = {
    "engine": _text,
    "model": _text,
    "format": _text,
    "bit_depth": _whole,
    "samplerate": _whole,
    "midi": _flag,
}
_SECTION: dict[str, Check] = {"start": _number, "length": _number}
#: The keys each task takes in a manifest line (besides ``task``), and what each must be.
FIELDS: dict[str, dict[str, Check]] = {
    "separate": {"file": _text, "stems": _texts, **_SECTION, **_COMMON},
    "generate": {
        "stem": _text,
        "context": _texts,
        "bpm": _number,
        "bars": _whole,
        "time_signature": _text,
        "prompt": _text,
        "seed": _whole,
        "variations": _whole,
        "context_start": _numbers,
        "loudness_match": _flag,
        **_COMMON,
    },
    "vary": {
        "file": _text,
        "variations": _whole,
        "strength": _number,
        "seed": _whole,
        "bpm": _number,
        "bars": _whole,
        "time_signature": _text,
        "stem": _text,
        **_SECTION,
        **_COMMON,
    },
}
_REQUIRED = {"separate": ("file",), "generate": ("stem", "bpm", "bars"), "vary": ("file",)}


def read_manifest(path: Path, defaults: Mapping[str, Any] | None = None) -> list[Item]:
    """The items of a manifest (see the module doc); blank lines and lines starting with ``#`` are skipped.

    Args:
        defaults: options every line gets unless it sets them (the command's ``--engine``, ``--model``).

    Raises:
        InvalidArgument: the manifest cannot be read, holds no request, or a line is malformed (named by its
            number).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read the manifest {path}: {exc}; give a JSON Lines file") from None
    manifest = Path(path).resolve()
    root = manifest.parent
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{Path(path).name}:{number}"
        try:
            request = json.loads(line)
            item = _item(request, root, where, defaults or {})
            items.append(replace(item, identity=f"{manifest}:{number}:{_request_hash(request)}"))
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{where}: not JSON ({exc.msg}); write one JSON object per line") from None
        except StembridgeError as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
    if not items:
        raise InvalidArgument(f"{path} holds no requests; write one JSON object per line, e.g. {_EXAMPLE}")
    return items


_EXAMPLE = '{"task": "separate", "file": "song.wav"}'


def _request_hash(request: Mapping[str, Any]) -> str:
    """A hash of a manifest line's request without its seed (the same request rendered again)."""
    unseeded = {k: v for k, v in request.items() if k != "seed"}
    return hashlib.sha256(json.dumps(unseeded, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _item(obj: Any, root: Path, where: str, defaults: Mapping[str, Any]) -> Item:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"a request must be a JSON object, e.g. {_EXAMPLE}")
    task = obj.get("task")
    if task not in TASKS:
        raise InvalidArgument(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    fields = FIELDS[task]
    unknown = sorted(set(obj) - set(fields) - {"task"})
    if unknown:
        raise InvalidArgument(
            f"unknown key(s) {', '.join(unknown)} for {task}; it takes: {', '.join(sorted(fields))}"
        )
    missing = [k for k in _REQUIRED[task] if k not in obj]
    if missing:
        raise InvalidArgument(f"{task} needs {', '.join(missing)}")
    options: dict[str, Any] = {k: v for k, v in defaults.items() if k in fields and v is not None}
    for key, value in obj.items():
        if key == "task" or value is None:
            continue
        try:
            options[key] = fields[key](value)
        except TypeError as exc:
            raise InvalidArgument(f"{key} must be {exc}, got {json.dumps(value)}") from None
    names = options.pop("context", []) if task == "generate" else [options.pop("file")]
    inputs = tuple(_resolve(name, root) for name in names)
    check_options(task, options, len(inputs))
    folder = _rel_folder(inputs[0], root) if inputs and _under(inputs[0], root) else ""
    return Item(task, inputs, options, folder, where)


def _resolve(name: str, root: Path) -> Path:
    path = Path(name).expanduser()
    return (path if path.is_absolute() else root / path).resolve()


def check_options(task: str, options: Mapping[str, Any], inputs: int) -> None:
    """Check ``options`` as the single command checks its arguments (ranges, names), before anything runs.

    Raises:
        InvalidArgument: (or another :class:`StembridgeError`) naming the bad value.
    """
    from bridge.audio.section import Section
    from bridge.audio.timing import TimeSignature, check_bars, check_bpm
    from bridge.engines.base import GenerateSpec
    from bridge.pipeline import OutputOptions

    OutputOptions(
        out_dir=Path("."),
        fmt=options.get("format", "wav"),
        bit_depth=options.get("bit_depth", 24),
        sample_rate=options.get("samplerate"),
    )
    if options.get("start") is not None or options.get("length") is not None:
        Section(options.get("start") or 0.0, options.get("length"))
    ts = TimeSignature.parse(options.get("time_signature", "4/4"))
    if task == "separate" and "stems" in options and not options["stems"]:
        raise InvalidArgument('stems is empty; name some, e.g. ["drums", "bass"], or leave it out for all')
    if task == "generate":
        starts = options.get("context_start")
        if starts is not None and len(starts) != inputs:
            raise InvalidArgument(
                f"got {len(starts)} context start(s) for {inputs} context file(s); give one per file, in order"
            )
        GenerateSpec(
            stem=options["stem"],
            bpm=options["bpm"],
            bars=options["bars"],
            time_signature=ts,
            seed=options.get("seed", 0),
            variations=options.get("variations", 1),
        )
    if task == "vary":
        if options.get("bpm") is not None:
            check_bpm(options["bpm"])
        if options.get("bars") is not None:
            check_bars(options["bars"])
        if not 1 <= int(options.get("variations", 3)) <= 16:
            raise InvalidArgument(f"variations must be between 1 and 16, got {options['variations']}")
        if not 0.0 <= float(options.get("strength", 0.5)) <= 1.0:
            raise InvalidArgument(f"strength must be between 0 and 1, got {options['strength']}")
