"""A :class:`~bridge.midi.notes.Part` to and from a Standard MIDI File, through mido.

The file is type 1 with one track: its name (the stem), the tempo, the time signature, the GM program (not for
drums), then the notes (drums on channel 10) and the end of track at the part's end. Bar 1 is at tick 0; ticks
are :data:`~bridge.midi.notes.PPQ` per quarter note. A part without notes gives a valid file with only the
meta events, as long as the part. At one tick, note-offs come before note-ons, so a note that ends where the
next one of the same pitch starts stays two notes.

mido is imported when a file is made or read, never when the package is imported.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bridge.audio.timing import Grid, TimeSignature
from bridge.errors import InvalidArgument
from bridge.midi.notes import DRUM_CHANNEL, PPQ, Part, TickNote, end_tick, from_ticks, tick_notes


def _mido() -> Any:
    try:
        import mido
    except ImportError as exc:  # a dependency: only a broken install gets here
        raise InvalidArgument(
            f"writing MIDI needs mido ({exc}); reinstall stembridge: pip install stembridge"
        ) from exc
    return mido


def to_midi_file(part: Part) -> Any:
    """The :class:`mido.MidiFile` of ``part``."""
    mido = _mido()
    ts = part.grid.time_signature
    channel = DRUM_CHANNEL if part.drums else 0
    events: list[tuple[int, int, Any]] = []  # (tick, order, message): offs (0) before ons (1) at one tick
    for n in tick_notes(part):
        events.append(
            (n.start, 1, mido.Message("note_on", channel=channel, note=n.pitch, velocity=n.velocity))
        )
        events.append(
            (n.start + n.length, 0, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0))
        )
    events.sort(key=lambda e: (e[0], e[1], e[2].note))
    track = mido.MidiTrack()
    if part.name:
        track.append(mido.MetaMessage("track_name", name=part.name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(part.grid.bpm), time=0))
    track.append(
        mido.MetaMessage("time_signature", numerator=ts.numerator, denominator=ts.denominator, time=0)
    )
    if not part.drums:
        track.append(mido.Message("program_change", channel=channel, program=part.program, time=0))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick(part) - now)))
    midi = mido.MidiFile(type=1, ticks_per_beat=PPQ)
    midi.tracks.append(track)
    return midi


def encode(part: Part) -> bytes:
    """The bytes of ``part``'s Standard MIDI File."""
    buffer = io.BytesIO()
    to_midi_file(part).save(file=buffer)
    return buffer.getvalue()


def read_ticks(path: Path) -> tuple[list[TickNote], dict[str, Any]]:
    """The notes of a MIDI file in its own ticks, and its ``ticks_per_beat``, ``bpm``, ``time_signature``,
    ``channels`` (of the notes), ``end`` (the last track's end, in ticks) and ``name``.

    Notes are paired first in, first out per channel and pitch; a note-on of velocity 0 is a note-off.
    """
    mido = _mido()
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"{path} is not a readable MIDI file ({exc})") from None
    info: dict[str, Any] = {
        "ticks_per_beat": midi.ticks_per_beat,
        "bpm": 120.0,
        "time_signature": "4/4",
        "channels": set(),
        "end": 0,
        "name": "",
    }
    notes: list[TickNote] = []
    for track in midi.tracks:
        now = 0
        sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for msg in track:
            now += msg.time
            if msg.type == "set_tempo":
                info["bpm"] = float(mido.tempo2bpm(msg.tempo))
            elif msg.type == "time_signature":
                info["time_signature"] = f"{msg.numerator}/{msg.denominator}"
            elif msg.type == "track_name":
                info["name"] = msg.name
            elif msg.type == "note_on" and msg.velocity > 0:
                sounding.setdefault((msg.channel, msg.note), []).append((now, msg.velocity))
                info["channels"].add(msg.channel)
            elif msg.type in ("note_off", "note_on"):
                started = sounding.get((msg.channel, msg.note))
                if started:
                    start, velocity = started.pop(0)
                    notes.append(TickNote(start, now - start, msg.note, velocity))
        info["end"] = max(info["end"], now)
    return sorted(notes, key=lambda n: (n.start, n.pitch)), info


def read_part(path: Path, sample_rate: int) -> Part:
    """A MIDI file written by :func:`encode` back as a :class:`Part` at ``sample_rate``.

    A file stores the tempo in whole microseconds per quarter note, so the bpm read back is rounded to 0.01
    (174 bpm is stored as 173.9998), as stembridge states tempi everywhere.
    """
    ticks, info = read_ticks(path)
    if info["ticks_per_beat"] != PPQ:
        raise InvalidArgument(f"{path} has {info['ticks_per_beat']} ticks per quarter note; expected {PPQ}")
    grid = Grid(round(info["bpm"], 2), TimeSignature.parse(info["time_signature"]), sample_rate)
    length = int(round(info["end"] * grid.samples_per_quarter / PPQ))
    drums = DRUM_CHANNEL in info["channels"]
    return Part(tuple(from_ticks(ticks, grid)), grid, length, drums, info["name"])
