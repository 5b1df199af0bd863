"""The built-in separation (bridge.engines.builtin.separate) and the float32 STFT underneath it.

Content checks against the known stems of the synthetic song in tests/conftest.py: exact reconstruction,
SDR gains over the "mixture / 4" estimate, where the energy of single-source inputs lands.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from bridge.audio import spectral
from bridge.engines.base import load_engine
from bridge.engines.builtin import bass_pitch
from bridge.engines.builtin import separate as sep
from bridge.errors import Cancelled, InvalidArgument, UnsupportedOperation
from tests import synth

SR = synth.SR
STEMS = ("drums", "bass", "vocals", "other")


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def shares(result: dict[str, np.ndarray]) -> dict[str, float]:
    """Energy of each stem as a share of the stems' total energy."""
    total = sum(energy(v) for v in result.values())
    return {k: energy(v) / total for k, v in result.items()}


def gains(song: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> dict[str, float]:
    """SDR of each separated stem minus the SDR of the mixture / 4 estimate, in dB."""
    mixture = synth.mix(song)
    return {k: synth.sdr(song[k], result[k]) - synth.sdr(song[k], mixture / 4) for k in song}


def low_bass_note(seconds: float = 3.0, freq: float = 55.0) -> np.ndarray:
    """Stereo ``[2, T]`` held low note with five harmonics and short fades."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
    env = np.minimum(1.0, t * 50) * np.minimum(1.0, (seconds - t) * 50)
    x = (0.3 * tone * env).astype(np.float32)
    return np.stack([x, x])


@pytest.fixture(scope="module")
def separated(song_mix: np.ndarray) -> dict[str, np.ndarray]:
    return sep.separate(song_mix, SR, [])


# --- reconstruction, shapes, subsets ---------------------------------------------------------------------


def test_stems_sum_to_the_mix(song_mix: np.ndarray, separated: dict[str, np.ndarray]) -> None:
    assert tuple(separated) == STEMS
    total = np.sum([separated[k] for k in STEMS], axis=0)
    assert np.max(np.abs(total - song_mix)) < 1e-5
    for stem in separated.values():
        assert stem.shape == song_mix.shape
        assert stem.dtype == np.float32
        assert np.all(np.isfinite(stem))


def test_a_subset_is_the_same_as_in_the_full_separation(
    song_mix: np.ndarray, separated: dict[str, np.ndarray]
) -> None:
    for subset in (["vocals", "other"], ["bass"], ["Other", "drums", "drums"]):
        result = sep.separate(song_mix, SR, subset)
        names = list(dict.fromkeys(s.lower() for s in subset))
        assert list(result) == names
        for name in names:
            np.testing.assert_array_equal(result[name], separated[name])
    vocals_other = sep.separate(song_mix, SR, ["vocals", "other"])
    rebuilt = separated["drums"] + separated["bass"] + vocals_other["vocals"] + vocals_other["other"]
    assert np.max(np.abs(rebuilt - song_mix)) < 1e-5


def test_engine_routes_to_the_separator(song_mix: np.ndarray, separated: dict[str, np.ndarray]) -> None:
    engine = load_engine("builtin", "separate")
    result = engine.separate(song_mix, SR, ["drums"])
    np.testing.assert_array_equal(result["drums"], separated["drums"])


def test_deterministic(song_mix: np.ndarray, separated: dict[str, np.ndarray]) -> None:
    again = sep.separate(song_mix, SR, [])
    for name in STEMS:
        np.testing.assert_array_equal(again[name], separated[name])


def test_chunked_processing_matches_whole_signal(
    monkeypatch: pytest.MonkeyPatch, song_mix: np.ndarray
) -> None:
    whole = sep.separate(song_mix, SR, [])  # 8 s: one chunk
    monkeypatch.setattr(sep, "_CHUNK_FRAMES", 100)  # 7 chunks with seams inside every note
    chunked = sep.separate(song_mix, SR, [])
    for name in STEMS:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=0, atol=1e-6)


# --- quality against the known stems -----------------------------------------------------------------------


def test_drums_bass_vocals_beat_the_mixture_estimate(
    song: dict[str, np.ndarray], separated: dict[str, np.ndarray]
) -> None:
    gain = gains(song, separated)
    # measured: drums +6.1, bass +4.1, vocals +6.0, other +3.3 dB (plain crossover: +6.2, +3.2, +5.3, +3.6)
    assert gain["drums"] > 4.5
    assert gain["bass"] > 2.0
    assert gain["vocals"] > 3.5
    assert gain["other"] > 2.0


def test_mono_input_separates_without_the_centre_cue(song: dict[str, np.ndarray]) -> None:
    mono = {k: v[:1] for k, v in song.items()}
    mixture = synth.mix(mono)
    result = sep.separate(mixture, SR, [])
    assert all(v.shape == (1, mixture.shape[1]) for v in result.values())
    assert np.max(np.abs(sum(result.values()) - mixture)) < 1e-5
    gain = gains(mono, result)
    # measured: drums +6.0, bass +3.3, vocals +3.4 dB
    assert gain["drums"] > 4.0
    assert gain["bass"] > 2.0
    assert gain["vocals"] > 2.0
    # a one-dimensional input is answered in kind
    flat = sep.separate(mixture[0], SR, ["vocals"])
    np.testing.assert_array_equal(flat["vocals"], result["vocals"][0])


def test_48k_input() -> None:
    song = synth.song_stems(bpm=120.0, bars=2, sr=48000)
    mixture = synth.mix(song)
    result = sep.separate(mixture, 48000, [])
    assert np.max(np.abs(sum(result.values()) - mixture)) < 1e-5
    gain = gains(song, result)
    assert gain["drums"] > 3.0
    assert gain["bass"] > 1.5


def test_drum_loop_goes_to_drums() -> None:
    loop, _ = synth.drum_loop(120.0, 2)
    result = sep.separate(np.stack([loop, loop]), SR, [])
    share = shares(result)
    assert share["drums"] > 0.9
    assert synth.sdr(np.stack([loop, loop]), result["drums"]) > 15.0


def test_low_bass_note_goes_to_bass() -> None:
    note = low_bass_note()
    result = sep.separate(note, SR, [])
    share = shares(result)
    assert share["bass"] > 0.9
    assert share["drums"] < 0.05


def busy_bass_line(bars: int = 4, bpm: float = 120.0) -> np.ndarray:
    """Stereo ``[2, T]`` bass line of 8th notes that change pitch (around 44-110 Hz), no drums."""
    pattern = [45, 45, 52, 45, 57, 45, 52, 55, 41, 41, 48, 41, 53, 48, 41, 43]
    step = SR * 60.0 / bpm / 2
    out = np.zeros(int(round(bars * 8 * step)), dtype=np.float32)
    length = int(round(step))
    t = np.arange(length) / SR
    for i in range(bars * 8):
        freq = synth.midi_hz(pattern[i % len(pattern)])
        tone = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
        env = np.exp(-t * 4) * np.minimum(1.0, t * 400) * np.minimum(1.0, (length - np.arange(length)) / 200)
        start = int(round(i * step))
        out[start : start + length] += (0.16 * tone * env).astype(np.float32)[: len(out) - start]
    return np.stack([out, out])


def test_busy_bass_line_without_drums_stays_out_of_the_drums() -> None:
    share = shares(sep.separate(busy_bass_line(), SR, []))
    assert share["drums"] < 0.1  # measured 0.03
    assert share["bass"] > 0.9  # measured 0.97: the tracked notes' partials above 300 Hz stay bass
    assert share["vocals"] < 0.05


def test_kick_only_loop_goes_to_drums() -> None:
    kick = synth.kick()
    loop = np.zeros(4 * SR, dtype=np.float32)
    for start in range(0, loop.size, SR // 2):  # four on the floor at 120 bpm
        end = min(loop.size, start + kick.size)
        loop[start:end] += kick[: end - start]
    share = shares(sep.separate(np.stack([loop, loop]) * 0.5, SR, []))
    assert share["drums"] > 0.85  # measured 0.93: a kick's low end is no bass note (no overtones)


def test_centred_voice_goes_to_vocals_and_a_wide_pad_does_not() -> None:
    voice = synth.voice(120.0, 2, [69, 72, 65, 69])
    result = sep.separate(np.stack([voice, voice]), SR, [])
    assert shares(result)["vocals"] > 0.9
    # the same pad spread wide: one side quieter and 7.5 ms late, above the bass range
    pad = synth.chord_pad(120.0, 2, [[64, 67, 71], [65, 69, 72]])
    wide = np.stack([pad, np.roll(pad, 331) * 0.45])
    share = shares(sep.separate(wide, SR, []))
    assert share["vocals"] < 0.1
    assert share["other"] > 0.8


def test_silence_in_silence_out() -> None:
    silence = np.zeros((2, SR), dtype=np.float32)
    result = sep.separate(silence, SR, [])
    for stem in result.values():
        assert stem.shape == silence.shape
        assert np.all(stem == 0.0)


def test_more_than_two_channels_are_separated_in_pairs(
    song_mix: np.ndarray, separated: dict[str, np.ndarray]
) -> None:
    three = np.concatenate([song_mix, song_mix[:1]], axis=0)
    result = sep.separate(three, SR, [])
    assert result["drums"].shape == three.shape
    assert np.max(np.abs(sum(result.values()) - three)) < 1e-5
    np.testing.assert_array_equal(result["drums"][:2], separated["drums"])  # the first pair as stereo
    mono = sep.separate(song_mix[:1], SR, ["drums"])["drums"]
    np.testing.assert_array_equal(result["drums"][2:], mono)  # the lone channel as mono


def test_very_short_input() -> None:
    for length in (1, 100, 3000):
        x = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32) * 0.1
        result = sep.separate(x, SR, [])
        assert all(v.shape == x.shape for v in result.values())
        assert np.max(np.abs(sum(result.values()) - x)) < 1e-5


def test_masks_never_sum_above_one() -> None:
    rng = np.random.default_rng(3)
    shape = (2, 300, 1025)
    spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    spec *= rng.random(shape).astype(np.float32) ** 4  # spiky levels
    spec[:, 100:110] *= 50  # a loud burst
    settings = sep.Settings()
    weights = sep._BandWeights.build(SR, 2048, settings)
    for channels in (spec, spec[:1]):
        masks = sep._masks(channels, sep._MASKED, weights, settings)
        total = np.sum(list(masks.values()), axis=0)
        assert all(float(m.min()) >= 0.0 for m in masks.values())
        assert float(total.max()) <= 1.0 + 1e-6


# --- the bass tracker --------------------------------------------------------------------------------------


def bright_bass_note(seconds: float = 3.0, freq: float = 98.0, partials: int = 14) -> np.ndarray:
    """Stereo ``[2, T]`` centred held note with partials up to ~1.4 kHz (1/k**0.7, as bright as a fingered bass)."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * freq * k * t + k) / k**0.7 for k in range(1, partials + 1))
    env = np.minimum(1.0, t * 50) * np.minimum(1.0, (seconds - t) * 50)
    x = (0.15 * tone * env).astype(np.float32)
    return np.stack([x, x])


def tracked(audio: np.ndarray) -> bass_pitch.BassPitch:
    """The bass line of ``audio`` ``[C, T]`` as the separation tracks it (one chunk)."""
    settings = sep.Settings()
    plan = sep._plan(SR)
    weights = sep._BandWeights.build(SR, plan.n_fft, settings)
    assert weights.pitch is not None
    spec = plan.analyse(plan.pad(audio), 0, plan.n_frames(audio.shape[-1]))
    mag = np.sqrt((spec.real**2 + spec.imag**2).mean(axis=0))
    harmonic = sep._median(mag, 0, settings.harmonic)
    percussive = sep._median(mag, 1, settings.percussive)
    return bass_pitch.track(sep._tonal_low(mag, harmonic, percussive, weights.pitch.bins), weights.pitch)


def test_tracker_follows_the_notes_of_a_busy_bass_line() -> None:
    pattern = [45, 45, 52, 45, 57, 45, 52, 55, 41, 41, 48, 41, 53, 48, 41, 43]  # as in busy_bass_line()
    pitch = tracked(busy_bass_line())
    hop = sep._plan(SR).hop
    step = SR * 60.0 / 120.0 / 2
    hits, confident, harmonic = [], [], []
    for i in range(32):
        # the middle of each note, clear of the attack and of the release into the next
        frames = np.arange(int((i + 0.2) * step / hop), int((i + 0.8) * step / hop))
        cents = 1200 * np.log2(pitch.f0[frames] / synth.midi_hz(pattern[i % 16]))
        hits.append(np.mean(np.abs(cents) < 50))
        confident.append(np.mean(pitch.confidence[frames]))
        harmonic.append(np.mean(pitch.harmonicity[frames]))
    assert np.mean(hits) > 0.95  # measured 1.0
    assert np.mean(confident) > 0.8
    assert np.mean(harmonic) > 0.9  # five partials: a note, not a kick


def test_a_kicks_low_end_is_not_a_harmonic_note() -> None:
    kick = synth.kick()
    loop = np.zeros(2 * SR, dtype=np.float32)
    for start in range(0, loop.size, SR // 2):
        loop[start : start + kick.size] += kick[: loop.size - start]
    pitch = tracked(np.stack([loop, loop]) * 0.5)
    hop = sep._plan(SR).hop
    sounding = np.concatenate(
        [np.arange(s // hop, (s + kick.size) // hop) for s in range(0, loop.size, SR // 2)]
    )
    sounding = sounding[sounding < pitch.f0.size]
    # it may look pitched (a gliding, decaying sine), but without overtones its attacks keep the long sustain
    assert float(np.mean(pitch.confidence[sounding])) > 0.4  # measured 0.62
    assert float(np.mean((pitch.confidence * pitch.harmonicity)[sounding])) < 0.1  # measured 0.02


def test_partials_of_a_bright_bass_note_stay_bass() -> None:
    note = bright_bass_note()
    share = shares(sep.separate(note, SR, []))
    assert share["bass"] > 0.93  # measured 0.975
    assert share["vocals"] < 0.02
    plain = shares(sep.separate(note, SR, [], settings=sep.Settings(pitch=None)))
    assert plain["vocals"] > 0.25  # the plain crossover hands partials above 300 Hz to vocals (0.33)


@pytest.mark.parametrize("side", [1.0, 0.45])
def test_a_tone_between_bass_partials_is_not_bass(side: float) -> None:
    note = bright_bass_note(freq=synth.midi_hz(48))  # C3: partials at 131, 262, 392 Hz...
    t = np.arange(note.shape[1]) / SR
    env = np.minimum(1.0, t * 50) * np.minimum(1.0, (t[-1] - t) * 50)
    g3 = (0.12 * np.sin(2 * np.pi * synth.midi_hz(55) * t) * env).astype(np.float32)  # 196 Hz, between two
    tone = np.stack([g3, np.roll(g3, 331) * side]) if side != 1.0 else np.stack([g3, g3])
    mixture = note + tone
    bass = sep.separate(mixture, SR, ["bass"])["bass"]
    plain = sep.separate(mixture, SR, ["bass"], settings=sep.Settings(pitch=None))["bass"]
    # measured: 7.0 dB centred, 10.2 dB wide; the plain crossover gives 2.0 and 2.3 dB
    assert synth.sdr(note, bass) > 5.5
    assert synth.sdr(note, bass) > synth.sdr(note, plain) + 4.0


def test_too_low_a_sample_rate_to_track_uses_the_plain_crossover() -> None:
    rate = 1000  # Nyquist 500 Hz: no room for the partials of a 300 Hz fundamental
    assert bass_pitch.PitchTables.build(rate, 256, bass_pitch.PitchSettings()).bins == 0
    x = np.random.default_rng(5).standard_normal((2, 4 * rate)).astype(np.float32) * 0.1
    result = sep.separate(x, rate, [])
    plain = sep.separate(x, rate, [], settings=sep.Settings(pitch=None))
    assert np.max(np.abs(sum(result.values()) - x)) < 1e-5
    for name in STEMS:
        np.testing.assert_array_equal(result[name], plain[name])


# --- errors, progress, cancel ------------------------------------------------------------------------------


def test_unknown_stem_names_it_and_the_known_ones(song_mix: np.ndarray) -> None:
    with pytest.raises(UnsupportedOperation) as info:
        sep.separate(song_mix, SR, ["drums", "guitar"])
    message = str(info.value)
    assert "'guitar'" in message
    assert "drums, bass, vocals, other" in message
    assert "demucs engine" in message
    with pytest.raises(UnsupportedOperation, match="'kazoo'"):
        sep.separate(song_mix, SR, ["kazoo"])


def test_bad_input_is_rejected(song_mix: np.ndarray) -> None:
    with pytest.raises(InvalidArgument, match="sample_rate"):
        sep.separate(song_mix, 0, [])
    with pytest.raises(InvalidArgument, match="shape"):
        sep.separate(song_mix[None], SR, [])
    broken = song_mix.copy()
    broken[0, 10] = np.nan
    with pytest.raises(InvalidArgument, match="NaN"):
        sep.separate(broken, SR, [])


def test_progress_is_monotonic_and_reaches_one(monkeypatch: pytest.MonkeyPatch, song_mix: np.ndarray) -> None:
    monkeypatch.setattr(sep, "_CHUNK_FRAMES", 200)
    calls: list[tuple[float, str]] = []
    sep.separate(song_mix, SR, [], progress=lambda f, s: calls.append((f, s)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions)
    assert fractions[0] >= 0.0
    assert fractions[-1] == 1.0
    stages = {s for _, s in calls}
    assert {"analyse", "drums", "bass", "vocals", "other"} <= stages
    assert len(calls) > 10  # several chunks, each reported


def test_cancel_from_the_callback_stops_the_separation(song_mix: np.ndarray) -> None:
    calls: list[str] = []

    def cancel_on_second(fraction: float, stage: str) -> None:
        calls.append(stage)
        if len(calls) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sep.separate(song_mix, SR, [], progress=cancel_on_second)
    assert len(calls) == 2


# --- the float32 STFT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2048, 5000, 44100])
def test_stft_matches_scipy_and_inverts_exactly(length: int) -> None:
    x = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    _, _, reference = signal.stft(x, nperseg=2048, noverlap=1536, window="hann", boundary="even", padded=True)
    spec = spectral.stft(x)
    assert spec.shape == reference.shape
    assert spec.dtype == np.complex64
    assert np.max(np.abs(spec - reference)) < 1e-5 * np.max(np.abs(reference))
    back = spectral.istft(spec, length)
    assert back.shape == x.shape
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) < 1e-5


def test_stft_in_chunks_equals_whole() -> None:
    x = np.random.default_rng(7).standard_normal((2, 20000)).astype(np.float32)
    plan = spectral.Stft(1024, 256)
    padded = plan.pad(x)
    frames = plan.n_frames(x.shape[-1])
    out = np.zeros_like(padded)
    for start in range(0, frames, 13):
        stop = min(frames, start + 13)
        plan.overlap_add(out, plan.analyse(padded, start, stop), start)
    np.testing.assert_allclose(plan.finish(out, x.shape[-1]), x, rtol=0, atol=1e-5)
    whole = plan.analyse(padded, 0, frames)
    np.testing.assert_allclose(np.swapaxes(whole, -1, -2), spectral.stft(x, 1024, 256), rtol=0, atol=1e-6)


def test_stft_of_inputs_shorter_than_the_window() -> None:
    for length in (0, 1, 2, 1000):
        x = np.random.default_rng(length).standard_normal((1, length)).astype(np.float32)
        spec = spectral.stft(x)
        assert spec.shape[:2] == (1, 1025)
        np.testing.assert_allclose(spectral.istft(spec, length), x, rtol=0, atol=1e-5)
