"""Conditional generation for the built-in engine: a bass, drums, keys, pad or lead part that fits a context.

The context (the song so far, ``[C, T]``, bar 1 at sample 0) is analysed once: its key, one chord per bar,
its groove (onset strength per 16th step, overall and below 150 Hz) and its density (onsets per beat). A note
writer (:mod:`.parts`) then composes the part on the exact 16th-note grid and a patch (:mod:`.synth`) plays
it. Each result is exactly ``bars`` long, stereo and finite, and levelled to its stem's loudness (see
:data:`TARGET_LUFS`) with no sample above -1 dBFS.

A longer context is read over its first ``bars`` bars; a shorter one's chords repeat. A missing or silent
context gives the prompt's key (else A minor), a diatonic progression and a default groove per stem; an
unpitched one (drums only) gives its groove and density but the same key and progression. The prompt's key
is only used then: with a pitched context the part follows what it hears.

Prompt keywords (case-insensitive; any other word is ignored):

- a key: ``in E minor``, ``F# major``, ``Bb minor``, ``Dm``, ``C#m``, ``in D`` (a bare capital letter such as
  the ``A`` of "A dark bass" is not read as a key);
- ``dark`` / ``bright``: lower / higher filter cutoffs;
- ``sparse`` / ``busy``: fewer / more notes (drums: hats on beats / 16ths);
- ``staccato`` / ``legato``: short / joined notes;
- ``808``: a deep gliding sine bass with a long decay (bass only);
- ``octave`` (``octaves``): bass alternates root and octave;
- ``swing`` (``swung``): odd 16ths are delayed by a third of a step;
- ``humanize`` (``humanise``, ``humanized``): starts move by up to 4 ms, velocities by up to 10 %.

Seeds: variation ``k`` of a request uses a generator seeded from ``(seed, k)`` only, so variation 0 of a
3-variation request equals the 1-variation request with the same seed.
"""

from __future__ import annotations

import re

import numpy as np

from bridge.audio import analysis
from bridge.audio.bassline import bass_per_bar, track_bass
from bridge.audio.loudness import integrated_loudness
from bridge.audio.onsets import rhythm
from bridge.audio.timing import Grid
from bridge.engines.base import GenerateSpec, Progress, ProgressCallback
from bridge.engines.builtin.parts import WRITERS, Music, Style
from bridge.engines.builtin.synth import RENDERERS
from bridge.errors import InvalidArgument, UnsupportedOperation
from bridge.midi.notes import Part

STEMS = ("bass", "drums", "keys", "pad", "lead")
MUSICGEN_STEMS = ("vocals", "guitar", "piano", "other")
# Integrated loudness (BS.1770) of each stem, in LUFS: the balance of a plain mix when the parts are summed as
# they come. Drums and bass carry a groove and sit on top; the lead is next, keys behind it, and the pad is
# a bed under everything. The gaps follow common mixing practice (the pipeline sets parts that many LU
# below their context in the same order); the whole set sits 2 LU below the -14/-15/-17/-18/-20 one might
# first reach for, so that the drums need only about 3 dB of transient clipping (up to 6 when sparse; see
# synth.DRUM_PLR_DB) to stay under the ceiling. Summed, the five parts make a mix of about -11 LUFS.
TARGET_LUFS = {"drums": -16.0, "bass": -17.0, "lead": -19.0, "keys": -20.0, "pad": -22.0}
PEAK_CEILING_DB = -1.0  # no sample above this; the gain only ever goes down to get there
LOW_HZ = 150.0
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY_RE = re.compile(
    r"(?<![\w#\u266f\u266d])(?P<letter>[A-Ga-g])(?P<acc>#|\u266f|b|\u266d|[\s-]?sharp|[\s-]?flat)?"
    r"(?:[\s-]*(?P<mode>major|minor|maj|min)\d*\b|(?P<m>m)\d*(?![\w#]))?(?![\w#\u266f\u266d])",
    re.IGNORECASE,
)
_WORDS = {
    "dark": "dark",
    "bright": "bright",
    "sparse": "sparse",
    "busy": "busy",
    "staccato": "staccato",
    "legato": "legato",
    "808": "sub808",
    "octave": "octave",
    "octaves": "octave",
    "swing": "swing",
    "swung": "swing",
    "humanize": "humanize",
    "humanise": "humanize",
    "humanized": "humanize",
    "humanised": "humanize",
}


def parse_key(prompt: str) -> analysis.Key | None:
    """The first key named in ``prompt`` ("in E minor", "F# major", "Dm", "in Bb"), or ``None``.

    A capital letter counts with an accidental, a mode ("minor", "maj", "m") or after "in"; a lower-case
    one only with a whole mode word ("e minor") or after "in" with an accidental or mode ("in f#"), so the
    article in "a dark bass" is not a key. A capital ``M`` suffix ("CM") means major.
    """
    for m in _KEY_RE.finditer(prompt):
        letter, acc, mode, suffix = m.group("letter"), m.group("acc") or "", m.group("mode"), m.group("m")
        after_in = re.search(r"\bin\s+$", prompt[: m.start()], re.IGNORECASE) is not None
        if acc == "B":
            continue
        if letter.isupper():
            accepted = bool(acc or mode or suffix or after_in)
        else:
            accepted = not suffix and (
                bool(mode and mode.lower() in ("major", "minor")) or (after_in and bool(acc or mode))
            )
        if not accepted:
            continue
        sharp = "#" in acc or "\u266f" in acc or "sharp" in acc.lower()
        shift = 1 if sharp else -1 if acc else 0
        is_minor = suffix == "m" or (mode is not None and mode.lower().startswith("min"))
        return analysis.Key(_LETTERS[letter.upper()] + shift, "minor" if is_minor else "major")
    return None


def parse_prompt(prompt: str) -> Style:
    """The :class:`Style` a prompt asks for (see the module docstring for the keywords)."""
    flags = {_WORDS[w] for w in re.findall(r"[a-z0-9]+", str(prompt).lower()) if w in _WORDS}
    return Style(key=parse_key(str(prompt)), **{f: True for f in flags})


def _check_stem(stem: str) -> None:
    if stem not in STEMS:
        raise UnsupportedOperation(
            f"the builtin engine cannot generate {stem!r}; it generates: {', '.join(STEMS)} "
            f"({', '.join(MUSICGEN_STEMS)} need the musicgen engine: --engine musicgen)"
        )


def _check_context(context: np.ndarray | None) -> np.ndarray | None:
    if context is None:
        return None
    audio = np.asarray(context, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise InvalidArgument(f"context audio must be shaped [channels, samples], got {list(audio.shape)}")
    if not np.all(np.isfinite(audio)):
        raise InvalidArgument("context audio holds NaN or infinite samples; re-export it as plain PCM")
    return audio


def analyse(
    context: np.ndarray | None,
    sample_rate: int,
    grid: Grid,
    bars: int,
    style: Style,
    progress: ProgressCallback | None = None,
) -> Music:
    """What the part must fit: key, chords, groove and density of ``context`` ``[C, T]`` (or defaults)."""
    p = Progress(progress)
    zeros = np.zeros(grid.time_signature.sixteenths_per_bar, dtype=np.float32)
    audio = _check_context(context)
    if audio is None or analysis.is_silent(audio):
        key = style.key or analysis.DEFAULT_KEY
        p(1.0, "analyse")
        return Music(grid, bars, key, tuple(analysis.default_chords(key, bars)), zeros, zeros, None)
    n_ctx = min(bars, analysis.context_bars(audio.shape[1], grid))
    audio = audio[:, : grid.samples_for_bars(n_ctx)]
    line = track_bass(audio, sample_rate)  # names each bar's root; its overtones leave the chroma
    bar_chroma = analysis.chroma_per_bar(audio, sample_rate, grid, n_ctx, bass=line, progress=p.sub(0.0, 0.3))
    if analysis.tonal_clarity(bar_chroma) >= analysis.TONAL_CLARITY:
        key = analysis.estimate_key(bar_chroma)
        bar_bass = bass_per_bar(line, audio.shape[1], grid, n_ctx)
        chords = analysis.chords_from_chroma(bar_chroma, key, bars, bar_bass)
    else:  # drums only: follow the groove, take the harmony from the prompt
        key = style.key or analysis.DEFAULT_KEY
        chords = analysis.default_chords(key, bars)
    found = rhythm(audio, sample_rate, grid, n_ctx, low_hz=LOW_HZ, progress=p.sub(0.3, 1.0))
    p(1.0, "analyse")
    return Music(grid, bars, key, tuple(chords), found.groove, found.low_groove, found.density)


def variation_rngs(seed: int, k: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the notes and the sound of variation ``k`` of ``seed``."""
    sequence = np.random.SeedSequence([abs(int(seed)), int(seed < 0), int(k)])
    notes, sound = sequence.spawn(2)
    return np.random.default_rng(notes), np.random.default_rng(sound)


def level(
    audio: np.ndarray, sample_rate: int, target_lufs: float, ceiling_db: float = PEAK_CEILING_DB
) -> np.ndarray:
    """``audio`` ``[2, n]`` scaled to ``target_lufs`` integrated loudness, then down (never up) so that no
    sample peaks above ``ceiling_db`` dBFS; float32. Silence stays silence.

    A part with too wide a gap between its peaks and its loudness for both comes out quieter than its
    target rather than clipped (the pipeline's limiter comes later; the drum patch keeps that gap small).
    """
    audio = np.asarray(audio, dtype=np.float64)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    loudness = integrated_loudness(audio, sample_rate) if peak > 0 else float("-inf")
    if not np.isfinite(loudness):
        return np.zeros(audio.shape, dtype=np.float32)
    gain = min(10.0 ** ((target_lufs - loudness) / 20.0), 10.0 ** (ceiling_db / 20.0) / peak)
    out: np.ndarray = (audio * gain).astype(np.float32)
    return out


def generate(
    context: np.ndarray | None,
    sample_rate: int,
    spec: GenerateSpec,
    progress: ProgressCallback | None = None,
) -> list[np.ndarray]:
    """The audio of :func:`generate_parts`: ``spec.variations`` arrays ``[2, N]``."""
    return [audio for audio, _ in generate_parts(context, sample_rate, spec, progress)]


def generate_parts(
    context: np.ndarray | None,
    sample_rate: int,
    spec: GenerateSpec,
    progress: ProgressCallback | None = None,
) -> list[tuple[np.ndarray, Part]]:
    """Generate ``spec.variations`` takes of ``spec.stem`` that fit ``context``, each with the notes it plays.

    Args:
        context: ``[C, T]`` (or ``[T]``) audio starting at bar 1, or ``None``.
        sample_rate: of ``context`` and of the result.
        spec: stem, tempo, bars, time signature, prompt, seed and variation count.
        progress: ``callback(fraction, stage)``, stages ``"analyse"`` then ``"render"``; raise
            :class:`bridge.errors.Cancelled` from it to stop.

    Returns:
        ``spec.variations`` pairs: an array ``[2, N]`` float32 with
        ``N = spec.grid(sample_rate).samples_for_bars(spec.bars)``, and the :class:`Part` it plays (notes in
        samples at ``sample_rate``, exactly as rendered, ``N`` samples long).

    Raises:
        UnsupportedOperation: for a stem other than bass, drums, keys, pad, lead.
        InvalidArgument: for a malformed context.
    """
    _check_stem(spec.stem)
    p = Progress(progress)
    grid = spec.grid(sample_rate)
    n = grid.samples_for_bars(spec.bars)
    style = parse_prompt(spec.prompt)
    p(0.0, "analyse")
    music = analyse(context, sample_rate, grid, spec.bars, style, p.sub(0.0, 0.2))
    takes = []
    for k in range(spec.variations):
        step = p.sub(0.2 + 0.8 * k / spec.variations, 0.2 + 0.8 * (k + 1) / spec.variations)
        step(0.0, "render")
        note_rng, sound_rng = variation_rngs(spec.seed, k)
        notes = WRITERS[spec.stem](music, style, note_rng)
        step(0.05, "render")
        audio = RENDERERS[spec.stem](notes, n, grid, style, sound_rng, step.sub(0.05, 1.0))
        takes.append((level(audio, sample_rate, TARGET_LUFS[spec.stem]), Part.of(spec.stem, notes, grid, n)))
        step(1.0, "render")
    return takes
