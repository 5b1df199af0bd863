"""Transcription of audio parts: accuracy on FluidSynth renders of MIDI we wrote, quantizing, the
``transcribe`` command and ``--midi`` on separate and vary, silence and bad values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.timing import Grid, TimeSignature
from bridge.cli import main
from bridge.config import Settings
from bridge.midi.notes import Note, Part
from bridge.midi.score import chord_accuracy, note_f, onset_f
from bridge.midi.smf import read_ticks
from bridge.midi.transcribe import quantize, transcribe
from bridge.server import protocol
from tests import midi, synth

SR = 44100
BPM = 120.0
BARS = 4


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, list[midi.Note]]]:
    """Each part of tests.midi.transcription_song rendered by FluidSynth (GM sounds), with its true notes."""
    midi.require_fluidsynth()
    folder = tmp_path_factory.mktemp("renders")
    return {
        stem: midi.render_part(folder, stem, BPM, BARS, seed=1) for stem in ("bass", "lead", "drums", "keys")
    }


def seconds(quarters: float) -> float:
    return quarters * 60.0 / BPM


def heard(renders: dict[str, tuple[np.ndarray, list[midi.Note]]], stem: str) -> tuple[Part, list[midi.Note]]:
    audio, truth = renders[stem]
    return transcribe(audio, SR, stem, Grid(BPM, sample_rate=SR)), truth


@pytest.mark.parametrize(("stem", "target"), [("bass", 0.85), ("lead", 0.85)])
def test_monophonic_lines_note_f_measure(
    renders: dict[str, tuple[np.ndarray, list[midi.Note]]], stem: str, target: float
) -> None:
    part, truth = heard(renders, stem)
    true_notes = [(seconds(n.start), n.pitch) for n in truth]
    found = [(n.start / SR, n.pitch) for n in part.notes]
    assert onset_f([t for t, _ in true_notes], [t for t, _ in found]) >= target
    assert note_f(true_notes, found) >= target
    ends = [n.start + n.length for n in part.notes]
    assert all(e <= s for e, s in zip(ends, [n.start for n in part.notes[1:]], strict=False))  # monophonic


def test_drums_per_class_onset_f_measure(renders: dict[str, tuple[np.ndarray, list[midi.Note]]]) -> None:
    part, truth = heard(renders, "drums")
    assert part.drums and {n.pitch for n in part.notes} == {36, 38, 42}
    for pitch in (36, 38, 42):  # kick, snare, closed hat
        true_onsets = [seconds(n.start) for n in truth if n.pitch == pitch]
        found = [n.start / SR for n in part.notes if n.pitch == pitch]
        assert onset_f(true_onsets, found) >= 0.85, pitch


def bar_chords(notes: list[Note], grid: Grid, bars: int) -> list[frozenset[int]]:
    """The pitch classes of the chord that sounds longest in each bar."""
    out = []
    for bar in range(bars):
        a, z = grid.position(bars=bar), grid.position(bars=bar + 1)
        chords: dict[int, tuple[int, set[int]]] = {}
        for n in notes:
            overlap = min(z, n.start + n.length) - max(a, n.start)
            if overlap > 0:
                longest, pcs = chords.get(n.start, (0, set()))
                chords[n.start] = (max(longest, overlap), pcs | {n.pitch % 12})
        out.append(frozenset(max(chords.values(), key=lambda c: c[0])[1]) if chords else frozenset())
    return out


def test_keys_one_chord_per_bar(renders: dict[str, tuple[np.ndarray, list[midi.Note]]]) -> None:
    part, truth = heard(renders, "keys")
    true_chords = [frozenset(n.pitch % 12 for n in truth if int(n.start // 4) == bar) for bar in range(BARS)]
    assert chord_accuracy(true_chords, bar_chords(list(part.notes), part.grid, BARS)) >= 0.85
    # restruck chords stay one chord: no more chords than harmonic changes
    changes = 1 + sum(1 for a, b in zip(true_chords, true_chords[1:], strict=False) if a != b)
    assert len({n.start for n in part.notes}) <= changes


def test_quantize_moves_starts_and_ends_onto_the_grid() -> None:
    grid = Grid(100.0, TimeSignature(4, 4), SR)
    step = grid.samples_per_step
    notes = [Note(int(3 * step + 300), int(step * 1.7), 40, 0.8), Note(int(8 * step - 250), 100, 43, 0.5)]
    out = quantize(notes, grid, 0.25, grid.samples_for_bars(1))
    assert [(n.start, n.start + n.length) for n in out] == [
        (round(3 * step), round(5 * step)),
        (round(8 * step), round(9 * step)),  # a note shorter than a step keeps one step
    ]


def test_transcribe_command_writes_a_mid_with_the_tempo_and_json(
    capsys: pytest.CaptureFixture[str], renders: dict[str, tuple[np.ndarray, list[midi.Note]]], tmp_path: Path
) -> None:
    audio, _ = renders["drums"]
    wav = tmp_path / "loop.wav"
    sf.write(wav, audio.T, SR)
    out = tmp_path / "out"
    args = ["transcribe", str(wav), "--stem", "drums", "--bpm", "120", "--out", str(out)]
    assert main([*args, "--quantize", "1/16", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    path = Path(printed["outputs"][0]["midi"])
    bars = round(audio.shape[-1] / (2 * SR))  # the render rings on past bar 4
    assert path.name == f"loop__drums__120bpm__{bars}bars.mid" and printed["bpm"] == 120.0
    ticks, info = read_ticks(path)
    assert info["bpm"] == pytest.approx(120.0) and info["channels"] == {9}
    assert ticks and all(t.start % 240 == 0 for t in ticks)  # 16ths at 960 per quarter
    assert main(args) == 0  # the name is taken: the next free one, the first file untouched
    assert sorted(p.name for p in out.iterdir()) == [
        f"loop__drums__120bpm__{bars}bars-2.mid",
        f"loop__drums__120bpm__{bars}bars.mid",
    ]


def test_transcribe_silence_writes_an_empty_valid_file_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wav = tmp_path / "quiet.wav"
    sf.write(wav, np.zeros((2 * SR, 2), dtype=np.float32), SR)
    assert main(["transcribe", str(wav), "--stem", "keys", "--bpm", "120", "--out", str(tmp_path / "o")]) == 0
    _, err = capsys.readouterr()
    assert err.strip() == (
        "stembridge transcribe: note: no notes found in quiet.wav (it is silent); wrote an empty MIDI file"
    )
    ticks, info = read_ticks(tmp_path / "o" / "quiet__keys__120bpm__1bars.mid")
    assert ticks == [] and info["end"] == 4 * 960 and info["bpm"] == pytest.approx(120.0)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--stem",
            "flute",
            "cannot transcribe stem 'flute'; use one of bass, lead, vocals, drums, keys, pad",
        ),
        ("--quantize", "1/5", "quantize must be one of 1/4, 1/8, 1/16, 1/32, 1/8t, 1/16t, got '1/5'"),
    ],
)
def test_unknown_stem_or_quantize_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str, message: str
) -> None:
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros((SR, 2), dtype=np.float32), SR)
    argv = ["transcribe", str(wav), "--stem", "bass", "--out", str(tmp_path / "o"), flag, value]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"stembridge transcribe: error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_separate_and_vary_with_midi_write_a_mid_beside_each_file(
    capsys: pytest.CaptureFixture[str], song_mix: np.ndarray, tmp_path: Path
) -> None:
    song = tmp_path / "My Song.wav"
    sf.write(song, song_mix.T, synth.SR)
    out = tmp_path / "out"
    assert main(["separate", str(song), "--stems", "drums,bass", "--midi", "--out", str(out), "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert [(Path(o["path"]).name, Path(o["midi"]).name) for o in outputs] == [
        ("My_Song__drums.wav", "My_Song__drums.mid"),
        ("My_Song__bass.wav", "My_Song__bass.mid"),
    ]
    assert read_ticks(Path(outputs[0]["midi"]))[1]["channels"] == {9}
    assert read_ticks(Path(outputs[1]["midi"]))[0]  # the bass line has notes
    bass = Path(outputs[1]["path"])
    vary = ["vary", str(bass), "--variations", "2", "--bpm", "120", "--bars", "4", "--out", str(out)]
    assert main([*vary, "--midi", "--json"]) == 0  # the stem comes from the name: My_Song__bass
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert [Path(o["midi"]).name for o in outputs] == [
        "My_Song__bass-var__120bpm__4bars__v1.mid",
        "My_Song__bass-var__120bpm__4bars__v2.mid",
    ]
    before = sorted(p.name for p in out.iterdir())
    assert main(["vary", str(song), "--midi", "--out", str(out)]) == 2  # the name does not say the part
    assert "cannot tell what part My Song.wav is" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_osc_job_requests_take_midi(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "m")
    wav = tmp_path / "song.wav"
    wav.write_bytes(b"RIFF....WAVE")
    for address, positional in ((protocol.SEPARATE, str(wav)), (protocol.VARY, str(wav))):
        request = protocol.parse_request(address, [9000, "r", positional, "midi", 1], settings)
        assert request.job is not None and request.job.options["midi"] is True
    request = protocol.parse_request(
        protocol.GENERATE, [9000, "r", "bass", "bpm", 120, "bars", 2, "midi", 0], settings
    )
    assert request.job is not None and request.job.options["midi"] is False
