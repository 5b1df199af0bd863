"""The built-in engine's notes as MIDI: the .mid beside each generated take holds exactly the notes it played."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.onsets import onsets
from bridge.audio.timing import TimeSignature
from bridge.engines.base import GenerateSpec
from bridge.engines.builtin.generate import generate_parts
from bridge.jobs.runner import run_job
from bridge.jobs.spec import JobSpec
from bridge.midi.notes import PPQ, Part, samples_per_tick, ticks_per_bar, velocity_127
from bridge.midi.smf import encode, read_part, read_ticks
from bridge.pipeline import OutputOptions, generate_files

SR = 44100


def spec(stem: str, bpm: float = 120.0, ts: str = "4/4", bars: int = 4, prompt: str = "") -> GenerateSpec:
    return GenerateSpec(stem, bpm, bars, TimeSignature.parse(ts), prompt=prompt, seed=3)


def written(part: Part, tmp_path: Path) -> Path:
    path = tmp_path / f"{part.name}.mid"
    path.write_bytes(encode(part))
    return path


@pytest.mark.parametrize(
    ("stem", "bpm", "ts", "prompt", "unit"),
    [
        ("bass", 120.0, "4/4", "", 240),  # every start on a 16th: 240 ticks
        ("drums", 97.0, "6/8", "", 240),
        ("keys", 133.0, "7/8", "", 240),
        ("pad", 80.0, "3/4", "", 240),
        ("lead", 120.0, "4/4", "swing", 80),  # swung 16ths: a third of a step, 80 ticks
        ("drums", 120.0, "4/4", "swing busy", 80),
        ("bass", 90.0, "4/4", "humanize", 1),  # starts moved by whole samples
        ("drums", 174.0, "4/4", "humanize busy", 1),
    ],
)
def test_round_trip_notes_ticks_tempo_and_end(
    stem: str, bpm: float, ts: str, prompt: str, unit: int, tmp_path: Path
) -> None:
    [(audio, part)] = generate_parts(None, SR, spec(stem, bpm, ts, prompt=prompt))
    assert part is not None and part.length == audio.shape[-1]
    ticks, info = read_ticks(written(part, tmp_path))
    assert info["ticks_per_beat"] == PPQ and info["bpm"] == pytest.approx(bpm, abs=1e-3)
    assert info["time_signature"] == ts and info["name"] == stem
    assert info["end"] == 4 * ticks_per_bar(part.grid)  # end of track at the part's end, to the tick
    assert info["channels"] == ({9} if stem == "drums" else {0})
    spt = samples_per_tick(part.grid)
    chosen = sorted(part.notes, key=lambda n: (round(n.start / spt), n.pitch))
    assert len(ticks) == len(chosen) > 0
    for note, tick in zip(chosen, ticks, strict=True):
        assert (tick.pitch, tick.velocity) == (note.pitch, velocity_127(note.velocity))
        # to the tick: the start is the tick nearest its sample, and grid notes land exactly on the grid
        assert abs(tick.start * spt - note.start) <= spt / 2
        assert abs(tick.start * spt - note.start) / SR < 0.001
        if unit > 1:
            assert tick.start % unit == 0
    # lengths to the tick: the engine's, cut where the next note of that pitch starts (MIDI cannot overlap
    # two notes of one pitch) and at the part's end
    for i, (note, tick) in enumerate(zip(chosen, ticks, strict=True)):
        following = [t.start for t in ticks[i + 1 :] if t.pitch == tick.pitch]
        end = min([round((note.start + note.length) / spt), info["end"], *following[:1]])
        assert tick.start + tick.length == end
    back = read_part(written(part, tmp_path), SR)
    assert back.length == part.length and back.drums == (stem == "drums")


def test_drum_note_starts_are_the_audio_onsets_within_a_millisecond(tmp_path: Path) -> None:
    [(audio, part)] = generate_parts(None, SR, spec("drums", 100.0, prompt="sparse humanize"))
    back = read_part(written(part, tmp_path), SR)
    every = sorted({n.start for n in back.notes})
    # hits a few ms apart (humanized kick and hat on one step) sound as one onset, at the first of them
    starts = np.array([s for i, s in enumerate(every) if i == 0 or s - every[i - 1] > 0.03 * SR])
    found = onsets(audio, SR)
    assert len(found) == len(starts)
    assert np.max(np.abs(found - starts)) / SR <= 0.001


def test_generate_files_writes_the_mid_beside_each_take_and_json_names_it(tmp_path: Path) -> None:
    taken = tmp_path / "generated__bass__120bpm__2bars__v2.mid"
    taken.write_bytes(b"not ours")
    result = generate_files(
        [], GenerateSpec("bass", 120.0, 2, variations=2), OutputOptions(tmp_path), engine="builtin"
    )
    audio = [o.path.name for o in result.outputs]
    midi = [o.midi.name for o in result.outputs if o.midi is not None]
    assert audio == ["generated__bass__120bpm__2bars__v1.wav", "generated__bass__120bpm__2bars__v2.wav"]
    # a taken .mid name gets the next free one, like the audio; what was there is untouched
    assert midi == ["generated__bass__120bpm__2bars__v1.mid", "generated__bass__120bpm__2bars__v2-2.mid"]
    assert taken.read_bytes() == b"not ours"
    assert [d["midi"] for d in result.to_dict()["outputs"]] == [str(tmp_path / m) for m in midi]
    assert result.paths == [str(tmp_path / n) for n in audio + midi]  # the daemon's done: audio, then .mid
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files or claims left
    json.dumps(result.to_dict())


def test_daemon_job_reports_the_mid_paths_after_the_audio(tmp_path: Path) -> None:
    from dataclasses import replace

    from bridge.config import load_settings

    options = {"out": str(tmp_path), "stem": "drums", "bpm": 110.0, "bars": 1, "time_signature": "4/4"}
    options["engine"] = "builtin"
    settings = replace(load_settings(), out_dir=tmp_path)  # the job renders inside the render folder
    outcome = run_job(JobSpec("generate", options), settings, lambda f, s: None)
    assert [Path(p).suffix for p in outcome.paths] == [".wav", ".mid"]
    assert Path(outcome.paths[1]).stem == Path(outcome.paths[0]).stem
    assert outcome.detail["outputs"][0]["midi"] == outcome.paths[1]
