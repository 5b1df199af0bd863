"""Test songs as Standard MIDI Files (written with mido) and a fluidsynth renderer: test songs with real instrument samples.

Debian's ``fluidsynth`` with ``fluid-soundfont-gm`` renders each part separately, so a test has the true stems of a
mix played by sampled instruments (a GM drum kit, a fingered bass, a piano) rather than by our own synthesis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PPQ = 480


@dataclass(frozen=True)
class Note:
    start: float  # in quarter notes
    length: float  # in quarter notes
    pitch: int
    velocity: int = 100


def write_midi(path: Path, notes: list[Note], bpm: float, channel: int = 0, program: int = 0) -> None:
    """Write a one-track type-0 MIDI file through mido; channel 9 is the GM drum kit."""
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)])
    if channel != 9:
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    events: list[tuple[int, bool, mido.Message]] = []
    for n in notes:
        on = int(round(n.start * PPQ))
        off = int(round((n.start + n.length) * PPQ))
        events.append((on, True, mido.Message("note_on", channel=channel, note=n.pitch, velocity=n.velocity)))
        events.append((off, False, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))  # at one tick, note-offs first
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=PPQ))
    midi = mido.MidiFile(type=0, ticks_per_beat=PPQ)
    midi.tracks.append(track)
    midi.save(str(path))


def require_fluidsynth() -> None:
    if shutil.which("fluidsynth") and SOUNDFONT.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail("fluidsynth and fluid-soundfont-gm are missing: .ci/run must install them")
    pytest.skip(
        "fluidsynth / fluid-soundfont-gm not installed (apt-get install fluidsynth fluid-soundfont-gm)"
    )


def render(midi: Path, wav: Path, sample_rate: int = 44100) -> np.ndarray:
    """Render ``midi`` with fluidsynth; returns ``[2, T]`` float32."""
    subprocess.run(
        [
            "fluidsynth",
            "-ni",
            "-q",
            "-g",
            "0.5",
            "-r",
            str(sample_rate),
            "-F",
            str(wav),
            str(SOUNDFONT),
            str(midi),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio.T)


def band_song(bpm: float, bars: int) -> dict[str, tuple[list[Note], int, int]]:
    """An A minor song (Am F C G): ``{stem: (notes, channel, program)}``."""
    roots = [45, 41, 48, 43]  # A2 F2 C3 G2
    chords = [[57, 60, 64], [53, 57, 60], [52, 55, 60], [50, 55, 59]]
    drums, bass, keys = [], [], []
    for bar in range(bars):
        b0 = bar * 4.0
        for beat in range(4):
            drums.append(Note(b0 + beat, 0.25, 36 if beat % 2 == 0 else 38, 110))
            drums.append(Note(b0 + beat, 0.25, 42, 70))
            drums.append(Note(b0 + beat + 0.5, 0.25, 42, 60))
        for eighth in range(8):
            bass.append(Note(b0 + eighth * 0.5, 0.45, roots[bar % 4] + (12 if eighth == 6 else 0), 100))
        for beat in (0, 2):
            for p in chords[bar % 4]:
                keys.append(Note(b0 + beat, 1.9, p, 70))
    return {"drums": (drums, 9, 0), "bass": (bass, 1, 33), "other": (keys, 2, 0)}


def render_band(
    folder: Path, bpm: float = 110.0, bars: int = 4, sample_rate: int = 44100
) -> dict[str, np.ndarray]:
    """Render each part of :func:`band_song`; stems are trimmed to one common length."""
    stems = {}
    for stem, (notes, channel, program) in band_song(bpm, bars).items():
        mid = folder / f"{stem}.mid"
        write_midi(mid, notes, bpm, channel, program)
        stems[stem] = render(mid, folder / f"{stem}.wav", sample_rate)
    n = min(s.shape[1] for s in stems.values())
    return {k: v[:, :n] for k, v in stems.items()}


SEVENTHS = {"maj7": (0, 4, 7, 11), "7": (0, 4, 7, 10), "m7": (0, 3, 7, 10)}
_PITCH_CLASSES = {
    "C": 0, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "Ab": 8, "A": 9, "Bb": 10, "B": 11
}  # fmt: skip


def seventh_chord(symbol: str) -> tuple[int, tuple[int, ...]]:
    """``"Am7"`` -> ``(9, (0, 3, 7, 10))``: root pitch class and intervals (``maj7``, ``7`` or ``m7``)."""
    name = symbol[:2] if symbol[1:2] in ("b", "#") else symbol[:1]
    return _PITCH_CLASSES[name], SEVENTHS[symbol[len(name) :]]


def progression_song(
    symbols: list[str], *, bass: bool = True, drums: bool = False, program: int = 0, lowest: int = 52
) -> dict[str, tuple[list[Note], int, int]]:
    """One seventh chord per bar of 4/4, root position (the root is the lowest chord note, at or above MIDI
    ``lowest``), struck on beats 1 and 3 by GM ``program``; with ``bass`` a fingered bass plays the root in
    eighths (octave 2), with ``drums`` a kick/snare/hat beat plays. ``{stem: (notes, channel, program)}``."""
    keys, low, beat = [], [], []
    for bar, symbol in enumerate(symbols):
        root, intervals = seventh_chord(symbol)
        base = lowest + (root - lowest) % 12
        b0 = bar * 4.0
        for start in (0.0, 2.0):
            keys += [Note(b0 + start, 1.9, base + i, 72) for i in intervals]
        low += [Note(b0 + e * 0.5, 0.45, 36 + (root - 36) % 12, 100) for e in range(8)]
        for q in range(4):
            beat += [Note(b0 + q, 0.25, 36 if q % 2 == 0 else 38, 110), Note(b0 + q + 0.5, 0.25, 42, 60)]
    song = {"other": (keys, 2, program)}
    if bass:
        song["bass"] = (low, 1, 33)
    if drums:
        song["drums"] = (beat, 9, 0)
    return song


def render_song(
    folder: Path, song: dict[str, tuple[list[Note], int, int]], bpm: float, sample_rate: int = 44100
) -> np.ndarray:
    """Render each part of ``song`` and mix them: ``[2, T]`` float32, as long as the shortest part."""
    stems = []
    for stem, (notes, channel, program) in song.items():
        mid = folder / f"{stem}.mid"
        write_midi(mid, notes, bpm, channel, program)
        stems.append(render(mid, folder / f"{stem}.wav", sample_rate))
    n = min(s.shape[1] for s in stems)
    return np.asarray(sum(s[:, :n] for s in stems), dtype=np.float32)


def transcription_song(bpm: float, bars: int, seed: int = 0) -> dict[str, tuple[list[Note], int, int]]:
    """Parts to transcribe, with their truth: ``{stem: (notes, channel, program)}`` for ``bass`` (fingered, 8ths
    and 16ths in A minor), ``lead`` (a sawtooth lead, a stepwise melody of 8ths and quarters), ``drums`` (GM kick,
    snare and closed hat with a varied kick) and ``keys`` (piano triads, one chord per bar, struck twice).

    Every part is monophonic per voice; ``seed`` varies rhythms and pitches."""
    rng = np.random.default_rng(seed)
    progression = [(45, "min"), (41, "maj"), (48, "maj"), (43, "maj"), (38, "min"), (40, "min")]
    scale = [57, 59, 60, 62, 64, 65, 67, 69, 71, 72, 74, 76]
    bass: list[Note] = []
    lead: list[Note] = []
    drums: list[Note] = []
    keys: list[Note] = []
    idx = 6
    for bar in range(bars):
        b0 = bar * 4.0
        root, quality = progression[int(rng.integers(len(progression)))] if bar else progression[0]
        third = 3 if quality == "min" else 4
        t = 0.0
        while t < 4.0:
            step = float(rng.choice([0.5, 0.5, 1.0, 0.25]))
            step = min(step, 4.0 - t)
            pitch = root + int(rng.choice([0, 0, 0, 7, 12, third]))
            bass.append(Note(b0 + t, 0.9 * step, pitch, int(rng.integers(80, 118))))
            t += step
        t = 0.0
        while t < 4.0:
            step = min(float(rng.choice([0.5, 1.0, 1.0, 0.5, 1.5])), 4.0 - t)
            idx = int(np.clip(idx + rng.choice([-2, -1, 1, 2, 3, -3]), 0, len(scale) - 1))
            lead.append(Note(b0 + t, 0.85 * step, scale[idx], int(rng.integers(80, 115))))
            t += step
        for eighth in range(8):
            drums.append(Note(b0 + eighth * 0.5, 0.25, 42, int(rng.integers(55, 80))))
        kicks = {0.0, 2.0} | ({float(rng.choice([1.5, 2.5, 3.5]))} if rng.random() < 0.7 else set())
        for k in sorted(kicks):
            drums.append(Note(b0 + k, 0.25, 36, 110))
        for s in (1.0, 3.0):
            drums.append(Note(b0 + s, 0.25, 38, 105))
        chord = [60 + (root - 60) % 12, 60 + (root + third - 60) % 12, 60 + (root + 7 - 60) % 12]
        for beat in (0.0, 2.0):
            for p in chord:
                keys.append(Note(b0 + beat, 1.9, p, 75))
    return {"bass": (bass, 1, 33), "lead": (lead, 2, 81), "drums": (drums, 9, 0), "keys": (keys, 3, 0)}


def render_part(
    folder: Path, stem: str, bpm: float, bars: int, seed: int = 0, sample_rate: int = 44100
) -> tuple[np.ndarray, list[Note]]:
    """Render one part of :func:`transcription_song`: ``([2, T] audio, its notes in quarter notes)``."""
    notes, channel, program = transcription_song(bpm, bars, seed)[stem]
    mid = folder / f"{stem}-{seed}.mid"
    write_midi(mid, notes, bpm, channel, program)
    return render(mid, folder / f"{stem}-{seed}.wav", sample_rate), notes
