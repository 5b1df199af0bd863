"""Built-in generation: exact lengths, notes on the grid, pitches that fit the context, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import analysis
from bridge.audio.analysis import Key
from bridge.audio.loudness import integrated_loudness
from bridge.audio.onsets import onset_strengths, onsets
from bridge.audio.timing import Grid, TimeSignature
from bridge.engines.base import GenerateSpec
from bridge.engines.builtin import BuiltinEngine
from bridge.engines.builtin.generate import (
    PEAK_CEILING_DB,
    STEMS,
    TARGET_LUFS,
    analyse,
    generate,
    parse_key,
    parse_prompt,
)
from bridge.engines.builtin.parts import CLOSED_HAT, KICK, SNARE, Music, Style, pulses, write_drums
from bridge.engines.builtin.synth import CLIP_KNEE_DB, DRUM_PLR_DB, saw, soft_clip
from bridge.errors import Cancelled, InvalidArgument, UnsupportedOperation
from tests import synth

SR = synth.SR
A_MINOR = Key(9, "minor")
E_MINOR = Key(4, "minor")
GRIDS = [(120.0, "4/4", 44100), (93.0, "7/8", 44100), (174.0, "6/8", 44100), (61.5, "3/4", 48000)]


def make(
    stem: str,
    bpm: float = 120.0,
    ts: str = "4/4",
    bars: int = 4,
    prompt: str = "",
    seed: int = 0,
    variations: int = 1,
) -> GenerateSpec:
    return GenerateSpec(
        stem, bpm, bars, TimeSignature.parse(ts), prompt=prompt, seed=seed, variations=variations
    )


def e_minor_context() -> np.ndarray:
    """Stereo 4 bars at 120 bpm: drums, bass and chords Em C G D."""
    drums, _ = synth.drum_loop(120.0, 4)
    bass = synth.bass_line(120.0, 4, [40, 36, 43, 38])
    pad = synth.chord_pad(120.0, 4, [[52, 55, 59], [48, 52, 55], [55, 59, 62], [50, 54, 57]])
    n = min(len(drums), len(bass), len(pad))
    mono = 0.45 * (drums[:n] + bass[:n] + pad[:n])
    return np.stack([mono, mono]).astype(np.float32)


def f0(segment: np.ndarray, sr: int) -> float:
    """Fundamental frequency by autocorrelation (30-500 Hz), preferring the shortest strong period."""
    x = segment - segment.mean()
    r = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * x.size)) ** 2)[: x.size]
    lo, hi = int(sr / 500), int(sr / 30)
    lag = lo + int(np.argmax(r[lo:hi]))
    for d in (3, 2):  # an octave-down (or twelfth-down) peak can tie with the true period
        short = int(round(lag / d))
        window = r[max(lo, short - 3) : short + 4]
        if window.size and window.max() > 0.9 * r[lag]:
            lag = max(lo, short - 3) + int(np.argmax(window))
            break
    return sr / lag


def bass_notes(audio: np.ndarray, sr: int) -> list[tuple[int, int]]:
    """``(onset sample, pitch class)`` of each note, found with the onset detector and autocorrelation."""
    mono = audio.mean(axis=0)
    found = onsets(audio, sr)
    out = []
    for i, start in enumerate(found):
        end = found[i + 1] if i + 1 < len(found) else mono.size
        segment = mono[start + int(0.01 * sr) : start + min(end - start, int(0.12 * sr))]
        if segment.size >= int(0.03 * sr):
            midi = 69 + 12 * np.log2(f0(segment, sr) / 440.0)
            out.append((int(start), int(round(midi)) % 12))
    return out


def in_scale_fraction(audio: np.ndarray, key: Key) -> float:
    c = analysis.chroma(audio, SR)
    return float(c[list(key.scale_pitch_classes)].sum() / c.sum())


# ------------------------------------------------------------------------------------------- shape, level


@pytest.mark.parametrize(("bpm", "ts", "sr"), GRIDS)
@pytest.mark.parametrize("stem", STEMS)
def test_exact_length_finite_and_levelled(stem: str, bpm: float, ts: str, sr: int) -> None:
    spec = make(stem, bpm, ts, bars=3)
    (take,) = generate(None, sr, spec)
    assert take.shape == (2, spec.grid(sr).samples_for_bars(3))
    assert take.dtype == np.float32
    assert np.all(np.isfinite(take))
    assert integrated_loudness(take, sr) == pytest.approx(TARGET_LUFS[stem], abs=0.1)
    assert 20 * np.log10(np.max(np.abs(take))) <= PEAK_CEILING_DB + 1e-3


@pytest.mark.parametrize("with_song", [False, True])
def test_parts_balance_by_loudness_not_by_peak(with_song: bool, song_mix: np.ndarray) -> None:
    """Parts of one song differ in loudness by the gaps of their targets (drums 1 LU above the bass, the
    pad 6 LU below the drums), whatever their crest factor, and none peaks above -1 dBFS.

    Levelled by peak (-4.5 dBFS each), the drums came out at -22 LUFS and the bass at -9 LUFS: 13 LU the
    wrong way round."""
    context = song_mix if with_song else None
    loudness = {}
    # the widest crest factors: sparse drums, a busy one, the 808's long decays
    parts = [(stem, "") for stem in STEMS] + [("drums", "sparse"), ("drums", "busy"), ("bass", "808")]
    for seed, (stem, prompt) in enumerate(parts):
        (take,) = generate(context, SR, make(stem, bars=2, prompt=prompt, seed=seed))
        assert 20 * np.log10(np.max(np.abs(take))) <= PEAK_CEILING_DB + 1e-3, (stem, prompt)
        loudness[stem, prompt] = integrated_loudness(take, SR)
    for (stem, prompt), lufs in loudness.items():
        gap = lufs - loudness["drums", ""]
        assert gap == pytest.approx(TARGET_LUFS[stem] - TARGET_LUFS["drums"], abs=2.0), (stem, prompt)
    assert loudness["drums", ""] > loudness["bass", ""] > loudness["lead", ""] > loudness["pad", ""]


def test_drum_bus_clipper_only_shaves_peaks() -> None:
    """The soft clipper leaves samples below its knee alone, bends the rest towards its ceiling, and keeps
    a sparse drum part's peaks within DRUM_PLR_DB of its loudness (they stood 18 to 22 dB above it)."""
    x = np.linspace(-2.0, 2.0, 4001)
    y = soft_clip(x, 0.5)
    knee = 0.5 * 10 ** (-CLIP_KNEE_DB / 20)
    quiet = np.abs(x) <= knee
    np.testing.assert_array_equal(y[quiet], x[quiet])
    assert np.all(np.abs(y) < 0.5) and np.all(np.diff(y) > 0)  # below the ceiling, still monotonic
    (take,) = generate(None, SR, make("drums", bars=4, prompt="sparse", seed=1))
    crest = 20 * np.log10(np.max(np.abs(take))) - integrated_loudness(take, SR)
    assert crest <= DRUM_PLR_DB + 0.5


def test_engine_routes_here_and_context_of_any_length_works(song_mix: np.ndarray) -> None:
    takes = BuiltinEngine().generate(song_mix[:, :1000], SR, make("bass", bars=2, variations=2))
    assert [t.shape for t in takes] == [(2, Grid(120.0, sample_rate=SR).samples_for_bars(2))] * 2
    (long,) = generate(song_mix, SR, make("pad", bars=1))
    assert long.shape == (2, Grid(120.0, sample_rate=SR).samples_for_bars(1))


# -------------------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize(
    ("bpm", "ts", "sr", "with_song"), [(*g, False) for g in GRIDS] + [(120.0, "4/4", SR, True)]
)
@pytest.mark.parametrize("stem", ["bass", "drums", "keys", "lead"])
def test_onsets_fall_on_the_16th_grid(
    stem: str, bpm: float, ts: str, sr: int, with_song: bool, song_mix: np.ndarray
) -> None:
    spec = make(stem, bpm, ts, seed=7)
    (take,) = generate(song_mix if with_song else None, sr, spec)
    pos, accent = onset_strengths(take, sr)
    clear = pos[accent > 0.05 * accent.max()]  # onsets that add sound (not echoes of the lead's delay)
    step = spec.grid(sr).samples_per_step
    assert len(clear) >= 4  # at least one a bar
    off = np.abs(clear - np.round(clear / step) * step) / sr
    assert off.max() <= 0.010, f"onsets {clear[off > 0.01]} are off the grid"


def test_drum_patterns_follow_the_metre() -> None:
    def hits(ts: str, pitch: int) -> set[int]:
        grid = Grid(120.0, TimeSignature.parse(ts), SR)
        spb = grid.time_signature.sixteenths_per_bar
        zeros = np.zeros(spb, dtype=np.float32)
        music = Music(grid, 1, A_MINOR, tuple(analysis.default_chords(A_MINOR, 1)), zeros, zeros, None)
        notes = write_drums(music, Style(sparse=True), np.random.default_rng(0))
        return {round(n.start / grid.samples_per_step) for n in notes if n.pitch == pitch}

    assert hits("4/4", KICK) == {0, 8} and hits("4/4", SNARE) == {4, 12}  # backbeat
    assert hits("3/4", KICK) == {0} and hits("3/4", SNARE) == {4, 8}  # waltz: boom-chick-chick
    assert hits("6/8", KICK) == {0} and hits("6/8", SNARE) == {6}  # two dotted-quarter pulses
    assert hits("7/8", KICK) == {0} and hits("7/8", SNARE) == {4, 8}  # 2+2+3
    assert hits("4/4", CLOSED_HAT) == {0, 4, 8, 12}  # sparse: hats on the beats
    assert pulses(TimeSignature(7, 8)) == [0, 4, 8]


def test_density_words_change_the_number_of_hits() -> None:
    def count(prompt: str) -> int:
        (take,) = generate(None, SR, make("drums", prompt=prompt))
        return len(onsets(take, SR))

    assert count("sparse") < count("") < count("busy")


# ------------------------------------------------------------------------------------------ the harmony


def test_bass_fits_the_song(song_mix: np.ndarray) -> None:
    grid = Grid(120.0, sample_rate=SR)
    for seed in (0, 1):
        (take,) = generate(song_mix, SR, make("bass", seed=seed))
        notes = bass_notes(take, SR)
        assert len(notes) >= 8
        assert {pc for _, pc in notes} <= set(A_MINOR.scale_pitch_classes)
        bar_len = grid.samples_for_bars(1)
        firsts = [pc for start, pc in notes if start % bar_len < 0.01 * SR]
        assert firsts == [9, 5, 0, 7]  # A F C G: each bar starts on its chord's root


def test_bass_follows_an_e_minor_context() -> None:
    (take,) = generate(e_minor_context(), SR, make("bass", seed=3))
    notes = bass_notes(take, SR)
    assert {pc for _, pc in notes} <= set(E_MINOR.scale_pitch_classes)
    bar_len = Grid(120.0, sample_rate=SR).samples_for_bars(1)
    assert [pc for start, pc in notes if start % bar_len < 0.01 * SR] == [4, 0, 7, 2]  # E C G D


@pytest.mark.parametrize("stem", ["keys", "pad", "lead"])
def test_harmony_stays_in_the_context_key(stem: str, song_mix: np.ndarray) -> None:
    (take,) = generate(song_mix, SR, make(stem, seed=2))
    assert in_scale_fraction(take, A_MINOR) >= 0.85
    (take,) = generate(e_minor_context(), SR, make(stem, seed=2))
    assert in_scale_fraction(take, E_MINOR) >= 0.85


@pytest.mark.parametrize("stem", ["keys", "pad"])
def test_chords_follow_the_context_bar_by_bar(stem: str, song_mix: np.ndarray) -> None:
    (take,) = generate(song_mix, SR, make(stem, seed=5))
    bar_chroma = analysis.chroma_per_bar(take, SR, Grid(120.0, sample_rate=SR), 4)
    for bar, chord in enumerate(analysis.default_chords(A_MINOR, 4)):  # Am F C G, as in the song
        # the triad carries most of the bar (the rest: a seeded 7th or 9th colour, overtones)
        assert bar_chroma[list(chord.pitch_classes), bar].sum() >= 0.6


def test_without_context_the_prompt_key_or_a_minor() -> None:
    silent = np.zeros((2, SR * 4), dtype=np.float32)
    (quiet,) = generate(silent, SR, make("keys"))
    (none,) = generate(None, SR, make("keys"))
    np.testing.assert_array_equal(quiet, none)  # silence is the same as no context
    assert in_scale_fraction(none, A_MINOR) >= 0.85
    (f_sharp,) = generate(None, SR, make("pad", prompt="dreamy pad in F# major"))
    assert in_scale_fraction(f_sharp, Key(6, "major")) >= 0.85
    (bass,) = generate(None, SR, make("bass", prompt="Dm groove"))
    assert {pc for _, pc in bass_notes(bass, SR)} <= set(Key(2, "minor").scale_pitch_classes)


def test_a_drums_only_context_gives_rhythm_but_not_harmony(song: dict[str, np.ndarray]) -> None:
    drums = song["drums"]
    bar_len = Grid(120.0, sample_rate=SR).samples_for_bars(1)
    for prompt, key, roots in [("", A_MINOR, [9, 5, 0, 7]), ("in E minor", E_MINOR, [4, 0, 7, 2])]:
        (take,) = generate(drums, SR, make("bass", prompt=prompt, seed=4))
        notes = bass_notes(take, SR)
        assert {pc for _, pc in notes} <= set(key.scale_pitch_classes)
        assert [pc for start, pc in notes if start % bar_len < 0.01 * SR] == roots  # i-VI-III-VII
    music = analyse(drums, SR, Grid(120.0, sample_rate=SR), 4, Style())
    assert music.low_groove[[0, 8]].min() == pytest.approx(1.0, abs=0.3)  # it still hears the kicks
    assert music.density == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ the sound


def test_saw_is_band_limited() -> None:
    sr, freq = 44100, 1234.5
    x = saw(freq, sr, sr, phase=0.3) * np.hanning(sr)
    power = np.abs(np.fft.rfft(x)) ** 2
    hz = np.fft.rfftfreq(sr, 1 / sr)
    harmonic = np.min(np.abs(hz[:, None] - freq * np.arange(1, 18)[None, :]), axis=1) < 8
    aliases = power[~harmonic & (hz < 5000)].sum() / power.sum()
    assert 10 * np.log10(aliases) < -50  # a naive saw folds back about -22 dB here


def test_stereo_image() -> None:
    (bass,) = generate(None, SR, make("bass"))
    np.testing.assert_array_equal(bass[0], bass[1])  # centred
    (pad,) = generate(None, SR, make("pad"))
    assert np.corrcoef(pad[0], pad[1])[0, 1] < 0.95  # wide


# ------------------------------------------------------------------------------------------ seeds


def test_seeds_and_variations() -> None:
    one = generate(None, SR, make("lead", seed=11))
    three = generate(None, SR, make("lead", seed=11, variations=3))
    again = generate(None, SR, make("lead", seed=11))
    other = generate(None, SR, make("lead", seed=12))
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[0], three[0])  # variation 1 of 3 = the single take
    assert not np.array_equal(one[0], other[0])
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(three[i], three[j], atol=1e-3)


@pytest.mark.parametrize("stem", STEMS)
def test_every_stem_varies_with_the_seed(stem: str, song_mix: np.ndarray) -> None:
    a, b = generate(song_mix, SR, make(stem, bars=2, variations=2))
    assert not np.allclose(a, b, atol=1e-3)


# ------------------------------------------------------------------------------------ errors, progress


def test_unknown_stem_names_the_choices() -> None:
    with pytest.raises(UnsupportedOperation) as info:
        generate(None, SR, make("vocals"))
    text = str(info.value)
    assert "'vocals'" in text and "bass, drums, keys, pad, lead" in text and "musicgen engine" in text
    with pytest.raises(InvalidArgument, match="NaN"):
        generate(np.full((2, 1000), np.nan, dtype=np.float32), SR, make("bass"))
    with pytest.raises(InvalidArgument, match="channels"):
        generate(np.zeros((1, 2, 3), dtype=np.float32), SR, make("bass"))


def test_progress_stages_and_cancel(song_mix: np.ndarray) -> None:
    seen: list[tuple[float, str]] = []
    generate(song_mix, SR, make("drums", bars=2, variations=2), lambda f, s: seen.append((f, s)))
    stages = [s for _, s in seen]
    assert stages[0] == "analyse" and stages[-1] == "render"
    assert stages.index("render") > max(i for i, s in enumerate(stages) if s == "analyse")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    def cancel(fraction: float, stage: str) -> None:
        if stage == "render":
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate(song_mix, SR, make("drums", bars=2), cancel)


# -------------------------------------------------------------------------------------------- prompt


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("in E minor", "E minor"),
        ("F# major", "F# major"),
        ("Bb minor", "Bb minor"),
        ("Dm", "D minor"),
        ("C#m7 chill", "C# minor"),
        ("in D", "D major"),
        ("a dark bass in e minor", "E minor"),
        ("A dark bass", None),
        ("A minimal groove", None),
        ("I am here", None),
    ],
)
def test_prompt_keys(text: str, key: str | None) -> None:
    found = parse_key(text)
    assert (found.name if found else None) == key


def test_prompt_words() -> None:
    style = parse_prompt("Dark, busy 808 octave bass; swung and humanised, staccato. Wobbly!")
    assert (style.dark, style.busy, style.sub808, style.octave, style.swing, style.humanize) == (True,) * 6
    assert (style.bright, style.sparse, style.legato, style.staccato) == (False, False, False, True)
    assert parse_prompt("") == Style()


def test_swing_moves_odd_16ths_only() -> None:
    grid = Grid(100.0, sample_rate=SR)
    music = analyse(None, SR, grid, 2, Style())
    straight = write_drums(music, Style(busy=True), np.random.default_rng(1))
    swung = write_drums(music, Style(busy=True, swing=True), np.random.default_rng(1))
    for a, b in zip(straight, swung, strict=True):
        step = a.start / grid.samples_per_step
        if round(step) % 2:
            assert b.start - a.start == round(grid.samples_per_step / 3)
        else:
            assert b.start == a.start
