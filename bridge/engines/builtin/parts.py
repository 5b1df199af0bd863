"""Note writers, one per stem: the notes of a part that fits the context's key, chords and groove.

Every note starts exactly on a 16th-note step of the grid (``Grid.position``), unless the prompt asks for
``swing`` (odd 16ths are delayed by a third of a step, like an MPC's 16th swing) or ``humanize`` (starts move
by a few milliseconds, velocities by a few percent, both from the seed). Pitches come from the key's scale and
chord tones fall on the strong beats. Parts repeat in 4-bar phrases: a one-bar pattern ``A`` three times, then
a variation ``B`` (a fill for drums), so they sound composed rather than random.

Writers take a :class:`Music` (what the context told us), a :class:`Style` (what the prompt asked for) and a
seeded generator, and return notes; rendering them to audio is :mod:`bridge.engines.builtin.synth`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bridge.audio.analysis import Chord, Key
from bridge.audio.timing import Grid, TimeSignature
from bridge.midi.notes import Note

# General MIDI drum numbers, used as the pitch of drum notes.
KICK, SNARE, CLOSED_HAT, OPEN_HAT = 36, 38, 42, 46
__all__ = ["Note", "Music", "Style", "WRITERS"]  # Note (in samples) is bridge.midi.notes.Note
SWING = 1.0 / 3.0  # of a 16th step
HUMANIZE_MS = 4.0


@dataclass(frozen=True)
class Style:
    """What the prompt asked for (see :func:`bridge.engines.builtin.generate.parse_prompt`)."""

    key: Key | None = None
    dark: bool = False
    bright: bool = False
    sparse: bool = False
    busy: bool = False
    staccato: bool = False
    legato: bool = False
    sub808: bool = False
    octave: bool = False
    swing: bool = False
    humanize: bool = False


@dataclass(frozen=True, eq=False)
class Music:
    """What the context told us, for ``bars`` bars on ``grid``.

    Attributes:
        chords: one chord per bar (``bars`` of them).
        groove: ``[sixteenths_per_bar]`` onset strength per step of the context, peak 1; zeros without one.
        low_groove: the same for kick/bass-like onsets (below 150 Hz).
        density: the context's onsets per beat, ``None`` without a context.
    """

    grid: Grid
    bars: int
    key: Key
    chords: tuple[Chord, ...]
    groove: np.ndarray
    low_groove: np.ndarray
    density: float | None = None


# ------------------------------------------------------------------------------------------ metre helpers


def pulses(ts: TimeSignature) -> list[int]:
    """Steps of the felt beats in a bar: quarters in x/4, dotted quarters in 6/8, 2+2+3 eighths in 7/8."""
    unit = max(1, 16 // ts.denominator)
    if ts.denominator < 8:
        return list(range(0, ts.sixteenths_per_bar, unit))
    n = ts.numerator
    if n % 3 == 0:
        groups = [3] * (n // 3)
    else:
        groups = [2] * (n // 2 - 1) + [3] if n % 2 else [2] * (n // 2)
        groups = groups if n > 1 else [1]
    starts, at = [], 0
    for g in groups:
        starts.append(at * unit)
        at += g
    return starts


def metric_weights(ts: TimeSignature) -> np.ndarray:
    """``[sixteenths_per_bar]``: 1 on the downbeat, 0.7 on other pulses, 0.4 on 8ths, 0.15 on 16ths."""
    w = np.full(ts.sixteenths_per_bar, 0.15)
    w[::2] = 0.4
    w[pulses(ts)] = 0.7
    w[0] = 1.0
    return w


def default_groove(stem: str, ts: TimeSignature) -> np.ndarray:
    """The groove a stem follows without a context, ``[sixteenths_per_bar]``."""
    w = metric_weights(ts)
    if stem == "bass":
        w[2::4] = np.maximum(w[2::4], 0.5)  # off-beat 8ths: a little push
        w[-2] = max(w[-2], 0.55)
    elif stem == "keys":
        w[2::4] = np.maximum(w[2::4], 0.6)  # off-beat stabs
    return w


def step_weights(music: Music, stem: str) -> np.ndarray:
    """How much a note is wanted on each step: the context's groove mixed with the metre, peak 1."""
    ts = music.grid.time_signature
    ctx = music.groove + (2.0 * music.low_groove if stem == "bass" else 0.0)
    if ctx.max() <= 0:
        return default_groove(stem, ts)
    w = 0.6 * ctx / ctx.max() + 0.4 * metric_weights(ts)
    return np.asarray(w / w.max())


def activity(music: Music, style: Style) -> float:
    """How busy the part should be, about 0.3 (sparse) to 2 (busy); 1 for a context with 2 onsets per beat."""
    a = 1.0 if music.density is None else float(np.clip(music.density / 2.0, 0.5, 1.5))
    if style.sparse:
        a *= 0.5
    if style.busy:
        a *= 1.6
    return a


def articulation(style: Style, default: float) -> float:
    """Fraction of the gap to the next note that a note sounds."""
    if style.staccato:
        return 0.4
    if style.legato:
        return 1.0
    return default


class Timer:
    """Sample position of a step, with the prompt's swing or humanize applied."""

    def __init__(self, music: Music, style: Style, rng: np.random.Generator) -> None:
        self.grid = music.grid
        self.style = style
        self.rng = rng

    def __call__(self, bar: int, step: float) -> int:
        pos = self.grid.position(bars=bar, steps=step)
        if self.style.swing and int(step) % 2 == 1:
            pos += int(round(SWING * self.grid.samples_per_step))
        if self.style.humanize:
            jitter = float(np.clip(self.rng.normal(0.0, HUMANIZE_MS / 2), -HUMANIZE_MS, HUMANIZE_MS))
            pos += int(round(jitter * self.grid.sample_rate / 1000.0))
        return max(0, pos)

    def velocity(self, v: float) -> float:
        if self.style.humanize:
            v *= 1.0 + float(self.rng.uniform(-0.1, 0.1))
        return float(np.clip(v, 0.05, 1.0))


def in_range(pc: int, low: int) -> int:
    """The MIDI note of pitch class ``pc`` in ``[low, low + 12)``."""
    return low + (pc - low) % 12


def phrase_pattern(bar: int, bars: int) -> int:
    """0 for pattern A, 1 for the variation B on the last bar of each 4-bar phrase (and of the part)."""
    return 1 if (bar % 4 == 3 or bar == bars - 1) and bars > 1 else 0


def _choose_steps(
    rng: np.random.Generator, weights: np.ndarray, count: int, must: tuple[int, ...] = (0,)
) -> list[int]:
    """``count`` distinct steps, always ``must``, the rest drawn with probability ~ weight squared."""
    chosen = set(must)
    free = np.array([s for s in range(weights.size) if s not in chosen])
    extra = min(max(0, count - len(chosen)), free.size)
    if extra:
        p = (weights[free] + 0.02) ** 2
        chosen.update(int(s) for s in rng.choice(free, size=extra, replace=False, p=p / p.sum()))
    return sorted(chosen)


def _lengths(starts: list[int], end: int, factor: float, min_len: int, max_len: int) -> list[int]:
    """Gate lengths: ``factor`` of the gap to the next start (or ``end``), clipped."""
    nxt = starts[1:] + [end]
    return [int(np.clip(factor * (b - a), min_len, max_len)) for a, b in zip(starts, nxt, strict=True)]


def voicings(pcs: tuple[int, ...], low: int, high: int) -> list[list[int]]:
    """Every close-position voicing of ``pcs`` (root first; each inversion and octave) in ``[low, high]``."""
    out = []
    stacked = tuple(sorted(pcs, key=lambda pc: (pc - pcs[0]) % 12))  # close position above the root
    for inv in range(len(stacked)):
        order = stacked[inv:] + stacked[:inv]
        for base in range(low, high + 1):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                notes.append(notes[-1] + (pc - notes[-1]) % 12)
            if notes[-1] <= high:
                out.append(notes)
    return out


def voice_lead(prev: list[int] | None, pcs: tuple[int, ...], low: int, high: int, centre: float) -> list[int]:
    """The voicing of ``pcs`` closest to ``prev`` (smallest total movement), or to ``centre`` at the start."""
    options = voicings(pcs, low, high) or voicings(pcs, low, high + 12)
    # avoid a minor second between neighbouring voices (it beats and rubs) when another voicing can
    options = [v for v in options if all(b - a > 1 for a, b in zip(v, v[1:], strict=False))] or options
    if prev is None:
        return min(options, key=lambda v: (abs(float(np.mean(v)) - centre), v))
    return min(options, key=lambda v: (sum(abs(a - b) for a, b in zip(sorted(prev), v, strict=False)), v))


def chord_colour(key: Key, chord: Chord, extension: int) -> tuple[int, ...]:
    """The chord's pitch classes plus a diatonic extension: ``7`` a seventh, ``9`` a ninth, ``0`` none."""
    pcs = chord.pitch_classes
    scale = key.scale_pitch_classes
    if extension == 0 or chord.root not in scale:
        return pcs
    degree = scale.index(chord.root)
    extra = scale[(degree + (6 if extension == 7 else 1)) % 7]
    return pcs + (extra,) if extra not in pcs else pcs


# --------------------------------------------------------------------------------------------- writers


def write_bass(music: Music, style: Style, rng: np.random.Generator) -> list[Note]:
    """Root on every downbeat, then root/fifth/octave/approach notes where the context's groove hits."""
    grid, ts = music.grid, music.grid.time_signature
    spb = ts.sixteenths_per_bar
    weights = step_weights(music, "bass")
    count = int(np.clip(round(spb * 0.375 * activity(music, style)), 1, spb // 2 + 1))
    riffs = []
    for _ in range(2):
        steps = _choose_steps(rng, weights, count)
        choice = rng.choice(4, size=len(steps), p=[0.45, 0.2, 0.2, 0.15])
        choice[0] = 0
        if style.octave:
            choice = np.arange(len(steps)) % 2 * 2
        riffs.append(list(zip(steps, choice.tolist(), strict=True)))
    low = 28 if style.sub808 else 36
    at = Timer(music, style, rng)
    starts: list[int] = []
    pitches: list[int] = []
    vels: list[float] = []
    scale = music.key.scale_pitch_classes
    strong = set(pulses(ts))
    for bar in range(music.bars):
        chord = music.chords[bar]
        root = in_range(chord.root, low)
        next_root = in_range(music.chords[(bar + 1) % music.bars].root, low)
        riff = riffs[phrase_pattern(bar, music.bars)]
        for i, (step, kind) in enumerate(riff):
            if kind == 1:
                pitch = root + (chord.pitch_classes[2] - chord.root) % 12
            elif kind == 2:
                pitch = root + 12
            elif kind == 3 and i == len(riff) - 1 and next_root != root:
                direction = 1 if next_root > root else -1
                pitch = next_root - direction
                while pitch % 12 not in scale:
                    pitch -= direction
            else:
                pitch = root
            starts.append(at(bar, step))
            pitches.append(pitch)
            vels.append(at.velocity(0.95 if step == 0 else 0.8 if step in strong else 0.68))
    end = grid.samples_for_bars(music.bars)
    factor = articulation(style, 0.95 if style.sub808 else 0.8)
    lengths = _lengths(starts, end, factor, int(grid.samples_per_step / 2), int(grid.samples_per_bar))
    return [Note(s, n, p, v) for s, n, p, v in zip(starts, lengths, pitches, vels, strict=True)]


def _kick_snare(ts: TimeSignature) -> tuple[list[int], list[int]]:
    """Backbeat: kick on the odd pulses and snare on the even ones; odd pulse counts go kick-snare-snare."""
    p = pulses(ts)
    if len(p) == 1:
        return [0], []
    if len(p) % 2 == 0:
        return p[0::2], p[1::2]
    return [p[0]] + p[2:-1:2], p[1:-1:2] + [p[-1]]


def write_drums(music: Music, style: Style, rng: np.random.Generator) -> list[Note]:
    """Kick/snare/hat pattern that follows the metre, hat density from the context, a fill every 4 bars."""
    grid, ts = music.grid, music.grid.time_signature
    spb = ts.sixteenths_per_bar
    act = activity(music, style)
    kicks, snares = _kick_snare(ts)
    hat_steps = list(range(spb)) if act >= 1.5 else pulses(ts) if act < 0.6 else list(range(0, spb, 2))
    metric = metric_weights(ts)
    free = [s for s in range(0, spb, 2) if s not in kicks and s not in snares]
    if music.low_groove.max() > 0:
        extra_kicks = [s for s in free if music.low_groove[s] > 0.45 and rng.random() < 0.8]
    else:
        n_extra = 0 if style.sparse else int(rng.integers(0, 3))
        extra_kicks = (
            [int(s) for s in rng.choice(free, size=min(n_extra, len(free)), replace=False)] if free else []
        )
    open_hat = spb - 2 if rng.random() < 0.5 and not style.sparse else -1
    ghosts = (
        [int(s) for s in rng.choice(range(1, spb, 2), size=2, replace=False)]
        if act >= 1.3 and spb > 4
        else []
    )
    fill_from = pulses(ts)[-1]
    soft_snare = snares[0] if len(snares) > 1 and len(pulses(ts)) % 2 else -1  # waltz: boom-chick-CHICK
    fill = [s for s in range(fill_from, spb) if rng.random() < 0.75 or s == fill_from]
    at = Timer(music, style, rng)
    notes: list[Note] = []
    length = int(grid.samples_per_step)

    def hit(bar: int, step: int, pitch: int, vel: float) -> None:
        notes.append(Note(at(bar, step), length, pitch, at.velocity(vel)))

    for bar in range(music.bars):
        is_fill = phrase_pattern(bar, music.bars) == 1 and not style.sparse
        for s in range(spb):
            in_fill = is_fill and s >= fill_from
            if s in kicks or s in extra_kicks:
                hit(bar, s, KICK, 0.95 if s == 0 else 0.8)
            if in_fill:
                if s in fill:
                    hit(bar, s, SNARE, 0.45 + 0.5 * (s - fill_from) / max(1, spb - fill_from))
                continue
            if s in snares:
                hit(bar, s, SNARE, 0.7 if s == soft_snare else 0.9)
            elif s in ghosts:
                hit(bar, s, SNARE, 0.22)
            if s == open_hat:
                hit(bar, s, OPEN_HAT, 0.5)
            elif s in hat_steps:
                hit(bar, s, CLOSED_HAT, 0.25 + 0.35 * metric[s] + float(rng.uniform(-0.04, 0.04)))
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def write_keys(music: Music, style: Style, rng: np.random.Generator) -> list[Note]:
    """Voice-led chords (with a seeded 7th or 9th colour) struck on the downbeat and where the groove hits."""
    grid, ts = music.grid, music.grid.time_signature
    spb = ts.sixteenths_per_bar
    weights = step_weights(music, "keys")
    weights[0] = 1.0
    count = int(np.clip(round(spb * 0.19 * activity(music, style)), 1, spb // 2))
    rhythms = [_choose_steps(rng, weights, count) for _ in range(2)]
    extension = int(rng.choice([0, 7, 9]))
    centre = 62.0 + float(rng.integers(-3, 4))
    at = Timer(music, style, rng)
    end = grid.samples_for_bars(music.bars)
    hits: list[tuple[int, list[int], float]] = []
    prev: list[int] | None = None
    for bar in range(music.bars):
        voicing = voice_lead(prev, chord_colour(music.key, music.chords[bar], extension), 52, 79, centre)
        prev = voicing
        for step in rhythms[phrase_pattern(bar, music.bars)]:
            hits.append((at(bar, step), voicing, 0.8 if step == 0 else 0.62))
    starts = [h[0] for h in hits]
    lengths = _lengths(starts, end, articulation(style, 0.9), int(grid.samples_per_step / 2), end)
    return [
        Note(start, length, pitch, at.velocity(vel))
        for (start, voicing, vel), length in zip(hits, lengths, strict=True)
        for pitch in voicing
    ]


def write_pad(music: Music, style: Style, rng: np.random.Generator) -> list[Note]:
    """Sustained voice-led chords, one per bar with a root below; notes held across bars are tied."""
    grid = music.grid
    extension = int(rng.choice([0, 7, 9]))
    centre = 64.0 + float(rng.integers(-4, 5))
    bass_low = int(rng.choice([40, 43]))
    hold = 0.5 if style.staccato else 1.0
    prev: list[int] | None = None
    notes: list[Note] = []
    sounding: dict[int, int] = {}  # pitch -> index in notes of the note that may be tied over
    for bar in range(music.bars):
        chord = music.chords[bar]
        voicing = voice_lead(prev, chord_colour(music.key, chord, extension), 55, 77, centre)
        prev = voicing
        start = grid.position(bars=bar)
        stop = grid.position(bars=bar + hold)
        now: dict[int, int] = {}
        for pitch in [in_range(chord.root, bass_low)] + voicing:
            if hold == 1.0 and pitch in sounding:
                i = sounding[pitch]
                old = notes[i]
                notes[i] = Note(old.start, stop - old.start, pitch, old.velocity)
                now[pitch] = i
            else:
                notes.append(Note(start, stop - start, pitch, 0.7))
                now[pitch] = len(notes) - 1
        sounding = now
    return notes


def write_lead(music: Music, style: Style, rng: np.random.Generator) -> list[Note]:
    """A melody in 2-bar phrases answered over 4 bars: chord tones on pulses, mostly stepwise in between."""
    grid, ts = music.grid, music.grid.time_signature
    spb = ts.sixteenths_per_bar
    key = music.key
    scale = sorted(key.scale_pitch_classes)
    pitches_in_scale = [p for p in range(60, 89) if p % 12 in scale]
    strong = set(pulses(ts))
    weights = step_weights(music, "lead")
    count = int(np.clip(round(spb * 0.3 * activity(music, style)), 2, spb // 2))
    motif = [
        (b, s) for b in range(2) for s in _choose_steps(rng, weights, count, must=(0,) if b == 0 else ())
    ]
    at = Timer(music, style, rng)
    starts: list[int] = []
    pitches: list[int] = []
    vels: list[float] = []
    idx = int(np.argmin([abs(p - 72) for p in pitches_in_scale]))
    for phrase_start in range(0, music.bars, 2):
        answer = (phrase_start // 2) % 2 == 1
        for i, (b, s) in enumerate(motif):
            bar = phrase_start + b
            if bar >= music.bars:
                break
            chord = music.chords[bar]
            idx = int(
                np.clip(
                    idx + rng.choice([-2, -1, 1, 2, 3, -3], p=[0.17, 0.3, 0.3, 0.13, 0.05, 0.05]),
                    0,
                    len(pitches_in_scale) - 1,
                )
            )
            last = i == len(motif) - 1
            if s in strong or last:
                tones: tuple[int, ...] = chord.pitch_classes
                if last and answer and key.tonic in tones:
                    tones = (key.tonic,)
                cands = [j for j, p in enumerate(pitches_in_scale) if p % 12 in tones]
                if cands:
                    idx = min(cands, key=lambda j: abs(j - idx))
            starts.append(at(bar, s))
            pitches.append(pitches_in_scale[idx])
            vels.append(at.velocity(0.85 if s in strong else 0.7))
    end = grid.samples_for_bars(music.bars)
    lengths = _lengths(
        starts, end, articulation(style, 0.85), int(grid.samples_per_step / 2), int(grid.samples_per_bar)
    )
    return [Note(s, n, p, v) for s, n, p, v in zip(starts, lengths, pitches, vels, strict=True)]


WRITERS: dict[str, Callable[[Music, Style, np.random.Generator], list[Note]]] = {
    "bass": write_bass,
    "drums": write_drums,
    "keys": write_keys,
    "pad": write_pad,
    "lead": write_lead,
}
