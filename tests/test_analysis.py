"""Musical analysis on synthetic songs with known content: key, chords per bar, onsets, groove, density."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import analysis
from bridge.audio.analysis import Chord, Key
from bridge.audio.bassline import bass_per_bar, overtone_share, track_bass
from bridge.audio.onsets import density, groove, onset_envelope, onsets, rhythm
from bridge.audio.timing import Grid, TimeSignature
from bridge.engines.builtin.generate import analyse
from bridge.engines.builtin.parts import Style
from bridge.errors import InvalidArgument
from tests import midi, synth

SR = synth.SR
GRID = Grid(120.0, TimeSignature(4, 4), SR)

E_MINOR_CHORDS = [[52, 55, 59], [48, 52, 55], [55, 59, 62], [50, 54, 57]]  # Em C G D
E_MINOR_ROOTS = [40, 36, 43, 38]
C_MAJOR_CHORDS = [[60, 64, 67], [55, 59, 62], [57, 60, 64], [53, 57, 60]]  # C G Am F
C_MAJOR_ROOTS = [48, 43, 45, 41]


def backing(chords: list[list[int]], roots: list[int], bpm: float = 120.0, bars: int = 4) -> np.ndarray:
    """Stereo ``[2, T]`` drums + bass + chords, one chord per bar."""
    drums, _ = synth.drum_loop(bpm, bars)
    bass = synth.bass_line(bpm, bars, roots)
    pad = synth.chord_pad(bpm, bars, chords)
    n = min(len(drums), len(bass), len(pad))
    mono = 0.45 * (drums[:n] + bass[:n] + pad[:n])
    return np.stack([mono, mono]).astype(np.float32)


def names(chords: list[Chord]) -> list[str]:
    return [c.name for c in chords]


# ------------------------------------------------------------------------------------------ key, chords


def test_key_and_chords_of_the_song(song_mix: np.ndarray) -> None:
    bar_chroma = analysis.chroma_per_bar(song_mix, SR, GRID, 4)
    key = analysis.estimate_key(bar_chroma)
    # Am-F-C-G uses the notes of both A minor and C major; the opening Am bar decides (module docstring).
    assert key == Key(9, "minor")
    assert key.name == "A minor"
    assert names(analysis.chords_per_bar(song_mix, SR, GRID, 4, key)) == ["Am", "F", "C", "G"]


@pytest.mark.parametrize(
    ("chords", "roots", "key_name", "chord_names"),
    [
        (E_MINOR_CHORDS, E_MINOR_ROOTS, "E minor", ["Em", "C", "G", "D"]),
        (C_MAJOR_CHORDS, C_MAJOR_ROOTS, "C major", ["C", "G", "Am", "F"]),
    ],
)
def test_key_and_chords_of_other_songs(
    chords: list[list[int]], roots: list[int], key_name: str, chord_names: list[str]
) -> None:
    audio = backing(chords, roots)
    key = analysis.estimate_key(analysis.chroma_per_bar(audio, SR, GRID, 4))
    assert key.name == key_name
    assert names(analysis.chords_per_bar(audio, SR, GRID, 4, key)) == chord_names


@pytest.mark.parametrize(
    ("symbols", "options", "chord_names"),
    [
        (["Am7", "Dm7", "G7", "Cmaj7"], {"bass": True}, ["Am", "Dm", "G", "C"]),  # was Am D G C
        (["Am7", "Dm7", "G7", "Cmaj7"], {"bass": False}, ["Am", "Dm", "G", "C"]),  # was C Dm G C
        (["Cm7", "F7", "Bbmaj7", "Gm7"], {"bass": True, "drums": True}, ["Cm", "F", "Bb", "Gm"]),  # was C ...
        (["Bm7", "E7", "Amaj7", "F#m7"], {"bass": True}, ["Bm", "E", "A", "F#m"]),  # was B E A F#m
    ],
    ids=["piano-bass", "piano-alone", "bass-drums", "piano-bass-in-A"],
)
def test_seventh_chords_are_named_by_their_root(
    tmp_path: Path, symbols: list[str], options: dict[str, bool], chord_names: list[str]
) -> None:
    """7th chords played by sampled instruments (fluidsynth, GM soundfont), one per bar, root position: the
    bass (or the chord's lowest note) names the root of a chord whose upper notes fit two triads."""
    midi.require_fluidsynth()
    sr, bpm = 44100, 100.0
    audio = midi.render_song(tmp_path, midi.progression_song(symbols, **options), bpm, sr)
    music = analyse(audio, sr, Grid(bpm, sample_rate=sr), 4, Style())
    assert names(list(music.chords)) == chord_names


def test_bass_line_per_bar_and_its_overtones() -> None:
    bass = synth.bass_line(120.0, 4, C_MAJOR_ROOTS)  # C G A F, octave 2-3
    line = track_bass(bass, SR)
    per_bar = bass_per_bar(line, bass.shape[-1], GRID, 4)
    assert [analysis.PITCH_NAMES[int(np.argmax(per_bar[:, b]))] for b in range(4)] == ["C", "G", "A", "F"]
    assert per_bar.sum(axis=0).min() > 0.5  # a confident line all through
    middle = np.array([GRID.position(steps=9)] * 4)  # inside the fifth 8th note of bar 1
    f0 = float(line.at(middle[:1])[0][0])  # C3 (130.8 Hz)
    assert abs(12 * np.log2(f0 / 130.81)) < 0.2
    share = overtone_share(line, middle, np.array([2, 3, 5, 3.1]) * f0)
    assert share[0] == 0.0 and share[3] < 0.2  # the octave stays in the chroma, and what is off the partials
    assert share[1] > 0.8 and share[2] > 0.8  # the 3rd and 5th partials (a fifth, a major third) leave it
    drums, _ = synth.drum_loop(120.0, 4)
    assert bass_per_bar(track_bass(drums, SR), drums.size, GRID, 4).sum(axis=0).max() < 0.2
    silent = track_bass(np.zeros((2, SR), np.float32), SR)
    assert np.all(bass_per_bar(silent, SR, GRID, 1) == 0)


def test_chords_cycle_over_a_short_context_and_cut_a_long_one(song_mix: np.ndarray) -> None:
    key = Key(9, "minor")
    two_bars = song_mix[:, : GRID.samples_for_bars(2)]
    assert names(analysis.chords_per_bar(two_bars, SR, GRID, 5, key)) == ["Am", "F", "Am", "F", "Am"]
    assert names(analysis.chords_per_bar(song_mix, SR, GRID, 6, key)) == ["Am", "F", "C", "G", "Am", "F"]
    assert names(analysis.chords_per_bar(song_mix, SR, GRID, 2, key)) == ["Am", "F"]


def test_silent_bars_hold_the_previous_chord_and_silence_gives_the_default(song_mix: np.ndarray) -> None:
    key = Key(9, "minor")
    holed = song_mix.copy()
    holed[:, GRID.position(bars=1) : GRID.position(bars=2)] = 0.0
    assert names(analysis.chords_per_bar(holed, SR, GRID, 4, key)) == ["Am", "Am", "C", "G"]
    silent = np.zeros_like(song_mix)
    assert names(analysis.chords_per_bar(silent, SR, GRID, 4, key)) == ["Am", "F", "C", "G"]
    assert names(analysis.default_chords(Key(0, "major"), 5)) == ["C", "G", "Am", "F", "C"]


def test_chroma_of_a_tone_and_its_limits() -> None:
    a440 = synth.faded_sine(440.0, 1.0)
    c = analysis.chroma(a440, SR)
    assert c.shape[0] == 12
    assert c[9].sum() / c.sum() > 0.95
    # below 50 Hz and above 5 kHz are ignored
    assert analysis.chroma(synth.faded_sine(30.0, 1.0), SR).sum() < 0.01 * c.sum()
    assert analysis.chroma(synth.faded_sine(7000.0, 1.0), SR).sum() < 0.01 * c.sum()
    # same answer at 48 kHz
    c48 = analysis.chroma(synth.faded_sine(440.0, 1.0, sr=48000), 48000)
    assert int(np.argmax(c48.sum(axis=1))) == 9


def _chroma_peak(seconds: float) -> tuple[np.ndarray, int]:
    """Chroma of ``seconds`` of a noisy tone, and the most memory the call allocated at once."""
    sr = 22050
    t = np.arange(int(seconds * sr)) / sr
    noise = 0.05 * np.random.default_rng(0).standard_normal(t.size)
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)[None]
    tracemalloc.start()
    try:
        c = analysis.chroma(x, sr)
        return c, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chroma_of_a_long_context_works_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    whole, _ = _chroma_peak(20.0)
    monkeypatch.setattr(analysis, "CHUNK_FRAMES", 64)
    chunked, short_peak = _chroma_peak(20.0)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)  # frames are independent
    _, long_peak = _chroma_peak(40.0)
    # twice the audio adds its own copies (mono, padded: 20 s is 1.8 MB as float32), not a spectrogram
    assert long_peak - short_peak < 4 * 20 * 22050 * 4


def test_tonal_clarity_tells_pitched_from_unpitched(
    song: dict[str, np.ndarray], song_mix: np.ndarray
) -> None:
    def clarity(audio: np.ndarray) -> float:
        return analysis.tonal_clarity(analysis.chroma_per_bar(audio, SR, GRID, 4))

    for pitched in (song_mix, song["bass"], song["other"], song["vocals"]):
        assert clarity(pitched) > analysis.TONAL_CLARITY
    noise = np.random.default_rng(0).standard_normal((2, SR * 8)).astype(np.float32) * 0.1
    for unpitched in (song["drums"], noise):
        assert clarity(unpitched) < analysis.TONAL_CLARITY
    assert analysis.tonal_clarity(np.zeros((12, 4))) == 0.0


def test_chroma_per_bar_is_normalised_and_zero_past_the_end(song_mix: np.ndarray) -> None:
    cb = analysis.chroma_per_bar(song_mix, SR, GRID, 6)
    assert cb.shape == (12, 6)
    np.testing.assert_allclose(cb[:, :4].sum(axis=0), 1.0, rtol=1e-5)
    assert np.all(cb[:, 4:] == 0)


def test_key_and_chord_objects() -> None:
    assert Key(9, "minor").scale_pitch_classes == (9, 11, 0, 2, 4, 5, 7)
    assert Key(6, "major").name == "F# major"
    assert Key(9, "minor").relative == Key(0, "major")
    assert names(list(Key(0, "major").diatonic_chords())) == ["C", "Dm", "Em", "F", "G", "Am", "Bdim"]
    assert Chord(9, "min").pitch_classes == (9, 0, 4)
    with pytest.raises(InvalidArgument, match="quality"):
        Chord(0, "sus4")
    with pytest.raises(InvalidArgument, match="mode"):
        Key(0, "dorian")
    with pytest.raises(InvalidArgument, match=r"\[12\]"):
        analysis.estimate_key(np.ones((7, 3)))
    assert analysis.estimate_key(np.zeros((12, 4))) == analysis.DEFAULT_KEY


# ------------------------------------------------------------------------------------- onsets, groove


@pytest.mark.parametrize("bpm", [120.0, 174.0])
def test_onsets_of_drums_match_the_known_hits(bpm: float) -> None:
    drums, known = synth.drum_loop(bpm, 4)
    found = onsets(drums, SR)
    tol = int(0.012 * SR)
    for hit in known:
        assert np.min(np.abs(found - hit)) <= tol, f"kick/snare at {hit} not found"
    # everything found is a real hit: hats are on every 8th note
    eighth = SR * 60.0 / bpm / 2
    assert np.all(np.abs(found - np.round(found / eighth) * eighth) <= tol)
    assert len(found) == 4 * 8  # one per 8th note, kick/snare and hat together


def test_onsets_in_the_mix_and_silence(song: dict[str, np.ndarray], song_mix: np.ndarray) -> None:
    _, known = synth.drum_loop(120.0, 4)
    found = onsets(song_mix, SR)
    assert max(np.min(np.abs(found - hit)) for hit in known) <= int(0.012 * SR)
    assert onsets(np.zeros((2, SR), dtype=np.float32), SR).size == 0
    # a sustained chord is not a stream of onsets: only the four chord changes
    chords = onsets(song["other"], SR)
    assert len(chords) <= 5


def test_groove_peaks_on_kick_and_snare_steps(song_mix: np.ndarray) -> None:
    g = groove(song_mix, SR, GRID, 4)
    assert g.shape == (16,)
    assert g.max() == pytest.approx(1.0)
    kick_snare = [0, 4, 8, 12]
    others = [s for s in range(16) if s not in kick_snare]
    assert g[kick_snare].min() > g[others].max()
    assert np.all(g[1::2] == 0)  # nothing happens on odd 16ths
    low = groove(song_mix, SR, GRID, 4, max_hz=150.0)
    assert low[[0, 8]].min() > low[[2, 6, 10, 14]].max()  # kicks lead below 150 Hz
    assert np.all(groove(np.zeros((2, SR), np.float32), SR, GRID, 4) == 0)


def test_density_and_rhythm(song_mix: np.ndarray) -> None:
    drums, _ = synth.drum_loop(120.0, 4)
    assert density(drums, SR, GRID, 4) == pytest.approx(2.0)  # 8th notes: two per beat
    found = rhythm(song_mix, SR, GRID, 4)
    np.testing.assert_array_equal(found.groove, groove(song_mix, SR, GRID, 4))
    np.testing.assert_array_equal(found.low_groove, groove(song_mix, SR, GRID, 4, max_hz=150.0))
    assert found.density == pytest.approx(density(song_mix, SR, GRID, 4))


def test_onset_envelope_keeps_its_contract(song_mix: np.ndarray) -> None:
    env, rate = onset_envelope(song_mix, SR)
    assert rate == pytest.approx(SR / 512)
    assert env.dtype == np.float32
    assert abs(env.shape[0] - song_mix.shape[1] / 512) <= 2
    assert analysis.context_bars(GRID.samples_for_bars(3) + 10, GRID) == 3
