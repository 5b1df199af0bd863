"""The jam core (bridge/jam): cycle lengths, the index order, bad input, tempo changes, seams, level, late
parts, following a key change, and the performance take; on synthetic bands and the builtin engine.

Parts are asked for with a generous ``budget`` except where lateness is the point, so a busy machine never
changes what a test sees.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.analysis import chroma
from bridge.audio.loudness import integrated_loudness
from bridge.audio.timing import Grid, TimeSignature
from bridge.audio.writer import Publisher
from bridge.engines.base import GenerateSpec, ProgressCallback
from bridge.engines.builtin import BuiltinEngine
from bridge.errors import InvalidArgument, UnsupportedOperation
from bridge.jam import JamOptions, JamSession, seams
from bridge.jam import session as session_module
from bridge.jam.clock import CycleClock
from bridge.jam.hearing import Hearing
from bridge.jam.take import Take
from tests import synth

SR = 44100
BARS = 2
AMPLE = 60.0  # seconds: a budget no machine misses
C_MAJOR = [[48, 52, 55], [53, 57, 60], [55, 59, 62], [48, 52, 55]]  # C F G C
F_SHARP_MAJOR = [[54, 58, 61], [59, 63, 66], [61, 65, 68], [54, 58, 61]]  # F# B C# F#


def band(bpm: float, bars: int, chords: list[list[int]], seed: int = 0) -> np.ndarray:
    """The humans: drums and a chord pad, stereo ``[2, T]``, bar 1 at sample 0."""
    drums, _ = synth.drum_loop(bpm, bars, SR, seed)
    pad = synth.chord_pad(bpm, bars, chords, SR)
    n = min(drums.size, pad.size)
    mono = 0.4 * drums[:n] + 1.2 * pad[:n]
    return np.stack([mono, mono]).astype(np.float32)


def cycles(audio: np.ndarray, session: JamSession, count: int, start: int = 0) -> list[np.ndarray]:
    """The humans' capture of cycles ``start..start+count-1`` of ``audio`` (up to lead before each end)."""
    L = session.clock.samples(0)
    return [audio[:, k * L : k * L + session.clock.captured(k)] for k in range(start, start + count)]


def session_for(tmp_path: Path, engine: BuiltinEngine | None = None, **options: object) -> JamSession:
    defaults: dict[str, object] = {"stem": "bass", "bars": BARS, "bpm": 120.0, "sample_rate": SR}
    return JamSession(JamOptions(**{**defaults, **options}), engine or BuiltinEngine(), tmp_path, "take1")


class SlowEngine(BuiltinEngine):
    """The builtin engine, made slow on the calls listed in ``slow`` (counted from 0)."""

    def __init__(self, slow: set[int], seconds: float = 0.3) -> None:
        super().__init__()
        self.slow, self.seconds, self.calls = slow, seconds, 0

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        call, self.calls = self.calls, self.calls + 1
        if call in self.slow:
            time.sleep(self.seconds)
        return super().generate(context, sample_rate, spec, progress)


# ------------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bars": 17}, "bars must be a whole number between 1 and 16, got 17; a cycle is 1 to 16 bars"),
        ({"lag": 3}, "lag must be a whole number between 0 and 2, got 3; use 0 (answer in the next cycle)"),
        ({"memory": 9}, "memory must be a whole number between 0 and 8, got 9"),
        ({"lead": 8}, "lead must be more than 0 and less than the cycle's 8 quarter notes, got 8"),
        ({"lead": 0}, "lead must be more than 0 and less than the cycle's 8 quarter notes, got 0"),
        ({"bpm": 401}, "bpm must be between 20 and 400, got 401"),
        ({"on_late": "wait"}, "on_late must be 'repeat' or 'rest', got 'wait'"),
        ({"stem": " "}, "stem must name the part the AI plays"),
    ],
)
def test_options_name_the_bad_value_and_the_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        JamOptions(**{"stem": "bass", "bars": BARS, **options})  # type: ignore[arg-type]
    assert message in str(exc.value)


def test_a_stem_the_engine_cannot_play_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperation, match="cannot generate 'vocals'"):
        session_for(tmp_path, stem="vocals")


# ---------------------------------------------------------------------------------------------- cycles


@pytest.mark.parametrize(
    ("bpm", "signature", "bars"), [(120.0, "4/4", 2), (97.0, "7/8", 3), (133.3, "3/4", 1)]
)
def test_parts_are_exactly_one_cycle_long(tmp_path: Path, bpm: float, signature: str, bars: int) -> None:
    ts = TimeSignature.parse(signature)
    session = session_for(tmp_path, bpm=bpm, time_signature=ts, bars=bars)
    L = Grid(bpm, ts, SR).samples_for_bars(bars)
    assert session.clock.samples(0) == L
    humans = band(bpm, bars * 3, C_MAJOR)
    for k, capture in enumerate(cycles(humans, session, 2)):
        part = session.answer(k, capture, budget=AMPLE)
        assert part.play_index == k + 1 and not part.late
        assert part.audio is not None and part.audio.shape == (2, L) and part.audio.dtype == np.float32
        assert part.path == tmp_path / "jam-take1" / f"part-{k + 1}.wav"
        assert sf.info(str(part.path)).frames == L


def test_lag_moves_the_part_later(tmp_path: Path) -> None:
    session = session_for(tmp_path, lag=1)
    capture = cycles(band(120, BARS, C_MAJOR), session, 1)[0]
    part = session.answer(0, capture, budget=AMPLE)
    assert (part.index, part.play_index) == (0, 2)
    assert part.path is not None and part.path.name == "part-2.wav"


def test_the_default_deadline_is_lead_plus_a_cycle_per_lag(tmp_path: Path) -> None:
    assert session_for(tmp_path).clock.budget(0) == pytest.approx(0.5)  # one beat at 120 bpm
    assert session_for(tmp_path, lag=1, lead=2).clock.budget(0) == pytest.approx(1.0 + 4.0)


def test_an_index_going_backwards_is_refused_and_the_session_goes_on(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    captures = cycles(band(120, BARS * 6, C_MAJOR), session, 6)
    session.answer(3, captures[3], budget=AMPLE)
    for index in (2, 3):
        with pytest.raises(InvalidArgument) as exc:
            session.answer(index, captures[index], budget=AMPLE)
        assert str(exc.value) == (
            f"cycle index {index} does not follow cycle 3; indices must grow: send cycle 4 or later"
        )
    assert session.answer(5, captures[5], budget=AMPLE).play_index == 6


def test_too_long_input_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    L = session.clock.samples(0)
    humans = band(120, BARS * 2, C_MAJOR)
    with pytest.raises(InvalidArgument) as exc:
        session.answer(0, humans[:, : L + 1], budget=AMPLE)
    assert str(exc.value) == (
        f"the humans' audio of cycle 0 is {L + 1} samples, longer than the cycle's {L} "
        f"(2 bars at 120 bpm); send at most {L}"
    )
    assert not (tmp_path / "jam-take1").exists()
    # the whole cycle is fine, and the refused call did not use up index 0
    assert not session.answer(0, humans[:, :L], budget=AMPLE).late


def test_a_bpm_change_applies_from_its_cycle_on(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    L120, L100 = (Grid(b, sample_rate=SR).samples_for_bars(BARS) for b in (120.0, 100.0))
    slow = band(100, BARS * 2, C_MAJOR)
    session.answer(0, cycles(band(120, BARS, C_MAJOR), session, 1)[0], budget=AMPLE)
    with pytest.raises(InvalidArgument, match="bpm must be between 20 and 400, got 500"):
        session.answer(1, slow[:, :1000], bpm=500, budget=AMPLE)
    part = session.answer(1, slow[:, : L100 - 22050], bpm=100, budget=AMPLE)
    assert part.audio is not None and part.audio.shape == (2, L100)
    assert session.clock.samples(0) == L120 and session.clock.samples(2) == L100
    performance, _ = sf.read(str(session.stop()), always_2d=True)
    assert performance.shape[0] == L120 + L100 + L100  # cycles 0 (silence), 1 and 2


# ---------------------------------------------------------------------------------------- seams, level


@pytest.mark.parametrize(("stem", "level"), [("pad", True), ("lead", True), ("bass", True), ("keys", False)])
def test_seams_have_no_jump_and_no_dip(tmp_path: Path, stem: str, level: bool) -> None:
    """At the seam the waveform steps no more than inside the parts, and the level dips no deeper than at the
    parts' own bar lines (a pad swells in from silence at the start of every render: without the pre-roll
    bar its seams fall to a fortieth of its level). The keys are left out of the level check: their writer
    phrases the last bar of a part differently (a breath before the line, as at the end of any loop)."""
    session = session_for(tmp_path, stem=stem, memory=0)
    humans = band(120, BARS * 4, C_MAJOR)
    parts = [session.answer(k, c, budget=AMPLE).audio for k, c in enumerate(cycles(humans, session, 3))]
    assert all(p is not None for p in parts)
    joined = np.concatenate(parts, axis=1)[0].astype(np.float64)  # type: ignore[arg-type]
    L, bar = session.clock.samples(0), session.clock.samples(0) // BARS
    steps = np.abs(np.diff(joined))
    window = 441  # 10 ms
    rms = np.sqrt(np.convolve(joined**2, np.ones(window) / window, mode="same"))

    def dip(line: int) -> float:  # the quietest 10 ms from 40 ms before a bar line to 20 ms after it
        return float(rms[line - 4 * window : line + 2 * window].min())

    inside = [dip(k * L + b * bar) for k in range(3) for b in range(1, BARS)]
    for seam in (L, 2 * L):
        assert steps[seam - 1] <= np.percentile(steps[seam - 4410 : seam + 4410], 99), "a click at the seam"
        assert not level or dip(seam) >= 0.5 * min(inside), "a level dip at the seam"


def test_a_join_starts_where_the_previous_part_ends_and_keeps_the_rest() -> None:
    n, seam = 4410, 441
    t = np.arange(n) / SR
    before = np.stack([np.full(n, 0.85), np.full(n, -0.3)]).astype(np.float32)
    part = (0.85 * np.stack([-np.cos(2 * np.pi * 5000 * t), np.sin(2 * np.pi * 220 * t)])).astype(np.float32)
    joined = seams.join(part, before, SR)
    np.testing.assert_array_equal(joined[:, 0], before[:, -1])  # no step at the seam
    np.testing.assert_array_equal(joined[:, seam:], part[:, seam:])  # only the head is bent
    assert np.abs(joined).max() <= 10 ** (seams.CEILING_DB / 20) + 1e-6  # even where the bend rides a peak
    np.testing.assert_array_equal(seams.join(part, None, SR)[:, 0], [0.0, 0.0])  # after a rest: from zero


def test_parts_sit_under_the_humans_level(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    humans = band(120, BARS * 3, C_MAJOR)
    loud = session.answer(0, cycles(humans, session, 1)[0], budget=AMPLE)
    quiet_capture = cycles(humans * 0.25, session, 1, start=1)[0]
    quiet = session.answer(1, quiet_capture, budget=AMPLE)
    reference = integrated_loudness(cycles(humans, session, 1)[0], SR)
    assert loud.audio is not None and quiet.audio is not None
    assert integrated_loudness(loud.audio, SR) == pytest.approx(reference - 3.0, abs=1.0)  # bass: 3 LU under
    assert integrated_loudness(quiet.audio, SR) == pytest.approx(reference - 12.0 - 3.0, abs=1.0)
    assert np.abs(loud.audio).max() <= 10 ** (-1 / 20) + 1e-6


# ------------------------------------------------------------------------------------------ deadlines


@pytest.mark.parametrize("on_late", ["repeat", "rest"])
def test_a_late_part_is_reported_not_written_and_the_next_cycle_goes_on(tmp_path: Path, on_late: str) -> None:
    session = session_for(tmp_path, SlowEngine({1}), on_late=on_late)
    captures = cycles(band(120, BARS * 3, C_MAJOR), session, 3)
    first = session.answer(0, captures[0], budget=AMPLE)
    late = session.answer(1, captures[1], budget=0.1)
    assert late.late and late.audio is None and late.path is None
    assert late.play_index == 2 and late.margin_ms < 0 and late.seconds_spent >= 0.1
    assert not (tmp_path / "jam-take1" / "part-2.wav").exists()
    third = session.answer(2, captures[2], budget=AMPLE)
    assert not third.late and third.path is not None and third.path.name == "part-3.wav"
    performance, _ = sf.read(str(session.stop()), dtype="float32", always_2d=True)
    L = session.clock.samples(0)
    assert first.audio is not None and third.audio is not None
    assert performance.shape == (4 * L, 2)
    assert not performance[:L].any()  # cycle 0: the AI had not played yet
    np.testing.assert_array_equal(performance[L : 2 * L].T, first.audio)
    seam = seams.seam_samples(SR)  # cycle 2 goes on from the end of cycle 1 (see the take's joins below)
    np.testing.assert_array_equal(performance[2 * L], first.audio[:, -1])
    if on_late == "repeat":
        np.testing.assert_array_equal(performance[2 * L + seam : 3 * L].T, first.audio[:, seam:])
    else:
        assert not performance[2 * L + seam : 3 * L].any()
    np.testing.assert_array_equal(performance[3 * L :].T, third.audio)


@pytest.mark.parametrize("budget", [-1.0, float("nan"), "soon"])
def test_a_bad_budget_is_refused_before_anything_changes(tmp_path: Path, budget: object) -> None:
    session = session_for(tmp_path)
    capture = cycles(band(120, BARS, C_MAJOR), session, 1)[0]
    with pytest.raises(InvalidArgument, match=r"budget must be a number of seconds >= 0, got "):
        session.answer(0, capture, budget=budget)  # type: ignore[arg-type]
    assert session.answer(0, capture, budget=AMPLE).play_index == 1


def test_a_cancelled_answer_is_late(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    part = session.answer(
        0, cycles(band(120, BARS, C_MAJOR), session, 1)[0], budget=AMPLE, cancel=lambda: True
    )
    assert part.late and part.path is None and not (tmp_path / "jam-take1").exists()


def test_advice_says_when_the_engine_cannot_keep_up(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    assert session.advice(0.1) is None  # a beat at 120 bpm is 0.5 s
    assert session.advice(1.0) == "builtin on this machine needs about 1 s per 4 s cycle: use lag 1"
    assert session.advice(100.0) == (
        "builtin on this machine needs about 100 s per 4 s cycle: use lag 1, fewer bars or a faster machine"
    )
    assert 0 < session.estimate() < AMPLE
    assert not (tmp_path / "jam-take1").exists()  # estimating writes nothing


@pytest.mark.parametrize("on_late", ["repeat", "rest"])
def test_the_take_has_no_step_where_a_part_repeats_or_rests(on_late: str) -> None:
    """Cycle 1's part ends at its crest; cycle 2's part was late, so cycle 2 plays it again (or rests): that
    bar line, and the one into cycle 3's part, step no more than the parts do from sample to sample."""
    options = JamOptions("bass", bars=BARS, sample_rate=SR, on_late=on_late)
    clock = CycleClock(options)
    L, seam = clock.samples(0), seams.seam_samples(SR)
    t = np.arange(L) / SR
    crest = (round(110 * L / SR) + 0.25) * SR / L  # about 110 Hz, from 0 up to its crest at the cycle's end
    tone = (0.5 * np.sin(2 * np.pi * crest * t)).astype(np.float32)
    first = seams.join(np.stack([tone, tone]), None, SR)
    take = Take(on_late, SR)
    take.record(1, first)
    take.reach(2)  # cycle 2's part was late
    other = (0.5 * np.cos(2 * np.pi * 220 * t)).astype(np.float32)
    third = seams.join(np.stack([other, -other]), take.played(2), SR)  # as the session joins it
    take.record(3, third)
    audio = take.render(clock)
    assert audio.shape == (2, 4 * L)
    steps = np.abs(np.diff(audio, axis=1))
    within = max(np.abs(np.diff(p, axis=1)).max() for p in (first, third))
    for line in (2 * L, 3 * L):
        assert steps[:, line - 1].max() <= within, f"a step at the bar line of cycle {line // L}"
    np.testing.assert_array_equal(audio[:, L : 2 * L], first)
    np.testing.assert_array_equal(audio[:, 3 * L :], third)
    if on_late == "repeat":  # only the head of the repeat is bent
        np.testing.assert_array_equal(audio[:, 2 * L + seam : 3 * L], first[:, seam:])
    else:  # the rest eases to silence within the seam
        assert not audio[:, 2 * L + seam : 3 * L].any()


def test_the_take_eases_a_part_cut_short_by_a_slower_tempo_into_silence() -> None:
    """A part made for a cycle whose tempo then slowed is shorter than that cycle: no step where it ends."""
    options = JamOptions("bass", bars=BARS, sample_rate=SR)
    clock = CycleClock(options)
    L = clock.samples(0)
    tone = np.full(L, 0.5, dtype=np.float32)
    take = Take("repeat", SR)
    take.record(1, seams.join(np.stack([tone, tone]), None, SR))
    clock.set_bpm(1, 100.0)  # the humans' cycle 1 came at 100 bpm
    audio = take.render(clock)
    assert audio.shape == (2, L + clock.samples(1))
    assert np.abs(np.diff(audio, axis=1)).max() < 0.01  # at most 0.5 over a 10 ms bend, never a cut
    assert audio[0, 2 * L - 1] == 0.5 and not audio[:, 2 * L + seams.seam_samples(SR) :].any()


# ------------------------------------------------------------------------------------ what the AI hears


def _pitch_classes(audio: np.ndarray) -> np.ndarray:
    profile = chroma(audio, SR).sum(axis=1)
    return profile / profile.sum()


@pytest.mark.parametrize("stem", ["bass", "keys"])
def test_the_part_follows_a_key_change_in_the_first_cycle_after_it(tmp_path: Path, stem: str) -> None:
    session = session_for(tmp_path, stem=stem, memory=2)
    before = band(120, BARS * 3, C_MAJOR)
    after = band(120, BARS * 2, F_SHARP_MAJOR, seed=1)
    humans = np.concatenate([before, after], axis=1)
    parts = [session.answer(k, c, budget=AMPLE).audio for k, c in enumerate(cycles(humans, session, 4))]
    old_only, new_only = [0, 2, 4, 7, 9], [1, 3, 6, 8, 10]  # C D E G A / C# D# F# G# A#
    in_c, in_f_sharp = (_pitch_classes(p) for p in (parts[2], parts[3]))  # answers to cycles 2 and 3
    assert in_c[old_only].sum() > 3 * in_c[new_only].sum()
    assert in_f_sharp[new_only].sum() > 3 * in_f_sharp[old_only].sum()


def test_earlier_cycles_count_while_the_harmony_stays_and_not_once_it_changes() -> None:
    hearing = Hearing(memory=2, sample_rate=SR)
    L = Grid(120.0, sample_rate=SR).samples_for_bars(BARS)
    same = band(120, BARS * 3, C_MAJOR[:BARS])  # the same two bars again and again
    for k in range(3):
        hearing.add(k, same[:, k * L : (k + 1) * L], L)
    assert hearing.weights() == pytest.approx([0.35**2, 0.35, 1.0])
    hearing.add(3, band(120, BARS, F_SHARP_MAJOR), L)
    assert hearing.weights() == [0.0, 0.0, 1.0]


def test_the_prediction_weights_the_newest_cycle_and_fills_what_was_not_heard() -> None:
    hearing = Hearing(memory=2, sample_rate=SR)
    L = 100
    for k, value in enumerate((1.0, 2.0, 4.0)):
        hearing.add(k, np.full((1, L if k < 2 else 80), value, dtype=np.float32), L)
    predicted = hearing.prediction(L)
    w = [0.35**2, 0.35, 1.0]
    expected_heard = (w[0] * 1 + w[1] * 2 + w[2] * 4) / sum(w)
    assert predicted.shape == (2, L)
    assert predicted[0, 0] == pytest.approx(expected_heard, rel=1e-6)
    assert predicted[0, 90] == pytest.approx((w[0] * 1 + w[1] * 2) / (w[0] + w[1]), rel=1e-6)
    context = hearing.context(L, 25, np.ones((2, L), dtype=np.float32))
    # a loop ending where the pre-roll bar starts: [last bar of the newest | prediction | the newest up to it]
    assert context.shape == (2, 2 * L)
    assert context[0, 5] == pytest.approx(predicted[0, 80] + 1.0)  # unheard end filled, own part over it
    np.testing.assert_allclose(context[:, 25 : 25 + L], predicted)
    assert context[0, 25 + L + 10] == pytest.approx(4.0 + 1.0)  # the newest cycle with the AI's own part


# --------------------------------------------------------------------------------------- the performance


def test_the_performance_starts_at_bar_1_with_silence_before_the_ai_played(tmp_path: Path) -> None:
    session = session_for(tmp_path)
    L = session.clock.samples(0)
    captures = cycles(band(120, BARS * 4, C_MAJOR), session, 4)
    part = session.answer(2, captures[2], budget=AMPLE)  # the client joined at cycle 2
    path = session.stop()
    assert path == tmp_path / "jam-take1" / "performance.wav"
    assert session.stop() == path  # idempotent
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SR and audio.shape == (4 * L, 2)
    assert not audio[: 3 * L].any()
    assert part.audio is not None
    np.testing.assert_array_equal(audio[3 * L :].T, part.audio)
    with pytest.raises(InvalidArgument, match="jam session take1 is stopped; start a new one"):
        session.answer(3, captures[3], budget=AMPLE)


def test_files_are_never_overwritten(tmp_path: Path) -> None:
    captures = cycles(band(120, BARS, C_MAJOR), session_for(tmp_path), 1)
    paths = []
    for _ in range(2):
        session = session_for(tmp_path)
        paths.append((session.answer(0, captures[0], budget=AMPLE).path, session.stop()))
    folder = tmp_path / "jam-take1"
    assert paths == [
        (folder / "part-1.wav", folder / "performance.wav"),
        (folder / "part-1-2.wav", folder / "performance-2.wav"),
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        "part-1-2.wav",
        "part-1.wav",
        "performance-2.wav",
        "performance.wav",
    ]


class SlowPublisher(Publisher):
    """A writer on a slow disk: publishing takes ``DELAY`` seconds."""

    DELAY = 1.5

    def publish(self, *, retry: bool = False) -> list[Path]:
        time.sleep(self.DELAY)
        return super().publish(retry=retry)


def test_publishing_counts_against_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part made in time whose file is published past the line is late, and that file is removed again."""
    session = session_for(tmp_path)
    captures = cycles(band(120, BARS * 2, C_MAJOR), session, 2)
    monkeypatch.setattr(session_module, "Publisher", SlowPublisher)
    late = session.answer(0, captures[0], budget=1.0)  # the builtin engine needs far less; the disk does not
    assert late.late and late.path is None and late.audio is None and late.margin_ms < 0
    assert late.seconds_spent >= SlowPublisher.DELAY
    assert list((tmp_path / "jam-take1").iterdir()) == []
    on_time = session.answer(1, captures[1], budget=AMPLE)
    assert not on_time.late and on_time.path == tmp_path / "jam-take1" / "part-2.wav"
