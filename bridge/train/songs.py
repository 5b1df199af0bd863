"""The songs in the data folders, each with its tempo and bar 1 (numpy only).

A ``--data`` path is a song file or a folder. In a folder:

- files named ``song__stem...`` (stembridge's own names: ``song__bass__120bpm__8bars.wav``) are the stems of
  ``song``;
- other audio files whose names are all stem names (``drums.wav``, ``bass.wav``...) make one multitrack song,
  named after the folder;
- any other audio file is a mix, separated into stems with the best separation engine here;
- each subfolder is read the same way (a folder of multitrack folders is an album).

Tempo: a sidecar ``<song>.json`` (or ``song.json`` in a multitrack folder) ``{"bpm": 120, "downbeat": 0.5,
"time_signature": "4/4"}``, else a tempo in the name (``120bpm``), else the tempo analysis of the mix. Bar 1:
the sidecar's ``downbeat`` (seconds), else the start of files with stembridge's names (they start at bar 1),
else the mix's first onset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.io import conform_channels, read_audio
from bridge.audio.timing import Grid, TimeSignature
from bridge.errors import InvalidArgument
from bridge.naming import split_source

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".aif", ".aiff", ".aifc", ".flac", ".mp3", ".ogg"})
STEM_WORDS = frozenset(
    {
        "bass",
        "drums",
        "keys",
        "pad",
        "lead",
        "vocals",
        "guitar",
        "piano",
        "other",
        "synth",
        "strings",
        "percussion",
        "perc",
        "horns",
        "brass",
        "organ",
        "choir",
        "fx",
    }
)
_BPM_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*_?bpm", re.IGNORECASE)


class DataError(InvalidArgument):
    """The training data cannot make examples (the message names the song or folder and the fix)."""


@dataclass(frozen=True)
class Song:
    """One song of the data.

    Attributes:
        name: the song's name (a folder's or a file's).
        stems: stem name -> file, for multitracks.
        mix: the mix to separate, for songs given as one file.
        sidecar: the song's sidecar settings (``bpm``, ``downbeat``, ``time_signature``), if any.
        named: whether its files carry stembridge's names (they start at bar 1).
    """

    name: str
    stems: dict[str, Path] = field(default_factory=dict)
    mix: Path | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)
    named: bool = False

    @property
    def files(self) -> list[Path]:
        return [self.mix] if self.mix is not None else [self.stems[s] for s in sorted(self.stems)]


@dataclass
class SongAudio:
    """A song at the model's rate: the target stem and its context (the other stems' mix), ``[C, T]`` each,
    from bar 1 on, and its grid."""

    name: str
    target: np.ndarray
    context: np.ndarray
    grid: Grid


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"the sidecar {path} is not valid JSON ({exc}); fix it or remove it") from exc
    if not isinstance(data, dict):
        raise DataError(f'the sidecar {path} must hold an object such as {{"bpm": 120}}')
    return data


def _songs_in(folder: Path) -> list[Song]:
    files = _audio_files(folder)
    songs: list[Song] = []
    grouped: dict[str, dict[str, Path]] = {}
    plain = []
    for path in files:
        song, stem = split_source(path.stem)
        if stem is None:
            plain.append(path)
        else:
            grouped.setdefault(song, {})[stem.lower()] = path
    for name, stems in grouped.items():
        songs.append(Song(name, stems=stems, sidecar=_sidecar(folder / f"{name}.json"), named=True))
    if plain and all(p.stem.lower() in STEM_WORDS for p in plain):
        stems = {p.stem.lower(): p for p in plain}
        songs.append(Song(folder.name, stems=stems, sidecar=_sidecar(folder / "song.json")))
    else:
        songs += [Song(p.stem, mix=p, sidecar=_sidecar(p.with_suffix(".json"))) for p in plain]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        songs += _songs_in(sub)
    return songs


def discover(paths: Sequence[Path], stem: str) -> list[Song]:
    """The songs under ``paths``, checked for ``stem``.

    Raises:
        DataError: a path does not exist; no audio at all; a song with only one stem; a multitrack song
            without a stem named ``stem``.
    """
    songs: list[Song] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            name, part = split_source(path.stem)
            songs += (
                [Song(name, stems={part.lower(): path}, named=True)] if part else [Song(path.stem, mix=path)]
            )
        elif path.is_dir():
            songs += _songs_in(path)
        else:
            raise DataError(f"--data {path} is not a folder or an audio file; pass folders of songs or stems")
    if not songs:
        where = ", ".join(str(p) for p in paths)
        raise DataError(
            f"no audio files in {where}: put songs (mixes) or multitracks there (drums.wav, bass.wav... in a "
            "folder per song, or song__bass.wav)"
        )
    for song in songs:
        if song.mix is not None:
            continue
        if len(song.stems) == 1:
            (only,) = song.stems.values()
            raise DataError(
                f"song {song.name!r} has only one stem ({only.name}): the {stem} needs the other parts as "
                "its context; add the song's other stems (or its mix) beside it"
            )
        if stem not in song.stems:
            raise DataError(
                f"song {song.name!r} has no stem named like {stem!r} (it has {', '.join(sorted(song.stems))}); "
                f"name its {stem} file {stem}.wav or {song.name}__{stem}.wav, or pick --stem from those"
            )
    return songs


def split(songs: list[Song], val_songs: int, seed: int) -> tuple[list[Song], list[Song]]:
    """``(train, validation)``: ``val_songs`` whole songs held out (chosen by ``seed``), never segments of a
    training song; no validation with fewer than two songs."""
    if val_songs < 0:
        raise InvalidArgument(f"--val-songs must be 0 or more, got {val_songs}")
    if len(songs) < 2 or val_songs == 0:
        return list(songs), []
    if val_songs >= len(songs):
        raise InvalidArgument(
            f"--val-songs {val_songs} leaves no song to train on ({len(songs)} songs); use at most {len(songs) - 1}"
        )
    held = set(np.random.default_rng([seed, 7]).permutation(len(songs))[:val_songs].tolist())
    return [s for i, s in enumerate(songs) if i not in held], [s for i, s in enumerate(songs) if i in held]


def _to_model(audio: np.ndarray, channels: int) -> np.ndarray:
    """``[C, T]`` -> the model's channels, as the engine converts a context (mono: the mean)."""
    if channels == 1:
        return np.ascontiguousarray(audio.mean(axis=0, keepdims=True), dtype=np.float32)
    return np.ascontiguousarray(conform_channels(audio, channels), dtype=np.float32)


def _stack(parts: list[np.ndarray]) -> list[np.ndarray]:
    length = max(p.shape[-1] for p in parts)
    return [np.pad(p, ((0, 0), (0, length - p.shape[-1]))) for p in parts]


def _grid(song: Song, mix: np.ndarray, rate: int, time_signature: TimeSignature) -> tuple[Grid, int]:
    """The song's grid at ``rate`` and bar 1's sample."""
    from bridge.audio.onsets import onsets
    from bridge.audio.tempo import infer_grid

    ts = TimeSignature.parse(str(song.sidecar.get("time_signature", time_signature)))
    bpm: float | None = None
    if "bpm" in song.sidecar:
        bpm = float(song.sidecar["bpm"])
    else:
        found = _BPM_IN_NAME.search(song.name) or next(
            (m for f in song.files if (m := _BPM_IN_NAME.search(f.stem))), None
        )
        bpm = float(found.group(1)) if found else None
    grid = infer_grid(mix, rate, bpm=bpm, time_signature=ts)
    if "downbeat" in song.sidecar:
        start = int(round(float(song.sidecar["downbeat"]) * rate))
    elif song.named:
        start = 0
    else:
        hits = onsets(mix, rate)
        start = int(hits[0]) if hits.size else 0
    return grid, max(0, start)


def load(
    song: Song,
    stem: str,
    rate: int,
    channels: int,
    time_signature: TimeSignature,
    separate: Any = None,
) -> SongAudio:
    """Read ``song`` at ``rate`` and ``channels`` from bar 1 on: the target ``stem`` and the rest's mix.

    Args:
        separate: ``(mix [C, T], rate) -> {stem: [C, T]}`` for songs given as a mix.
    """
    if song.mix is not None:
        if separate is None:
            raise DataError(f"song {song.name!r} is a mix and no separation engine is available to split it")
        mix, _ = read_audio(song.mix, sample_rate=rate)
        parts = {name: _to_model(a, channels) for name, a in separate(mix, rate).items()}
        if stem not in parts:
            raise DataError(
                f"song {song.name!r} is a mix, and separation gives {', '.join(sorted(parts))}, not {stem!r}; "
                f"give its stems as files (a folder with {stem}.wav and the others)"
            )
    else:
        parts = {
            name: _to_model(read_audio(p, sample_rate=rate)[0], channels) for name, p in song.stems.items()
        }
    names = sorted(parts)
    aligned = dict(zip(names, _stack([parts[n] for n in names]), strict=True))
    target = aligned.pop(stem)
    context = np.sum(list(aligned.values()), axis=0).astype(np.float32)
    grid, start = _grid(song, target + context, rate, time_signature)
    return SongAudio(song.name, target[:, start:], context[:, start:], grid)
