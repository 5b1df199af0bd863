"""What every variation of one input shares: the audio, its grid, the snapped 16th cuts and a few facts.

:func:`analyse` runs once per :func:`bridge.engines.builtin.vary.vary` call; the rearrangement
(:mod:`~bridge.engines.builtin.vary_slices`) and the effects (:mod:`~bridge.engines.builtin.vary_effects`)
read the :class:`VaryContext` it returns and never change it.

Two musical guards live here, so that both passes obey them:

- :func:`pitch_choices`: which intervals may move a stretch of the input. Octaves keep every note in key;
  a fourth or fifth only when the stretch's notes land on pitch classes the input itself uses (each with
  at least ``USED_SHARE`` of its pitch-class energy: its scale, in practice; an input whose seven strongest
  pitch classes hold less than ``PITCHED_SHARE`` of it is unpitched), so a fifth up cannot turn the
  B of A minor into F#, nor a fourth up its F into Bb. The interval may raise the stretch's share of energy
  on unused pitch classes by at most ``KEY_TOLERANCE``. This needs no key estimate, which a bass line
  cannot settle (A-C-D-F-G is A minor or F major), and unpitched input (drums: every pitch class used)
  takes any interval. Nothing moves down so far that a quarter of its energy would land below ``SUB_HZ``
  (rumble that most speakers do not play): a bass line in the second octave does not go down an octave.
- :func:`reverses_cleanly`: a slice may play reversed only when the reversed audio never rises sharply
  between its start and its last few milliseconds. Reversal turns every fall into a rise (a note-off into
  an attack, a decay into a swell), and such a rise in the middle of a slice is an onset off the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from bridge.audio.analysis import chroma, nearest_pow2, to_mono
from bridge.audio.timing import Grid

XFADE_S = 0.003  # crossfade at every joint
EDGE_S = 0.008  # wet/dry ramps at the edges of an effect region
SNAP_S = 0.006  # how far a cut may move to sit before an early transient
SNAP_LOOKBACK = 10  # 1 ms windows a transient must rise above
SNAP_RISE_DB = 9.0  # by this much for a cut to move to it
SPLIT_RISE_DB = 6.0  # by this much for a pitch shift to start a new piece there (see transient_cuts)
INTERVALS = (12, 7, 5, -5, -7, -12)  # semitones of every pitch change: octaves, fifths and fourths
USED_SHARE = 0.04  # a pitch class with less of the input's pitch-class energy is foreign to it
PITCHED_SHARE = 0.8  # ... if its 7 strongest classes hold this much of it (a scale); else it is unpitched
KEY_TOLERANCE = 0.04  # a pitch change may raise its stretch's energy share on foreign classes by this much
SUB_HZ = 40.0  # a downward shift may put at most SUB_SHARE of its material's energy below this
SUB_SHARE = 0.25
DOWN = (5, 7, 12)  # the downward intervals, in semitones
ENV_S = 0.001  # block of the peak envelope that reversal is checked on
HOLD_S = 0.01  # the envelope holds each peak this long, so a tone down to 50 Hz does not ripple
HIGH_HZ = 2000.0  # reversal is also checked above this, where hats and snares swell under a loud bass
RISE_WINDOW_S = 0.01  # a reversed slice may not rise more than RISE_DB above its minimum over this long
RISE_DB = 3.0
RISE_TAIL_S = 0.006  # except in its last few ms, where the reversed attack swells into the next grid line


@dataclass(frozen=True)
class VaryContext:
    """What every variation of one input shares: the audio, its grid and its analysis."""

    audio: np.ndarray  # [C, T] float32
    sample_rate: int
    grid: Grid
    cuts: np.ndarray  # [S + 1] sample index of each 16th step after snapping; cuts[S] >= T
    percussive: bool
    seamless: bool  # the input loops without a step from its last sample to its first
    rms: float
    xfade: int
    edge: int
    step_chroma: np.ndarray  # [12, S] pitch-class energy per 16th step (zeros without pitch analysis)
    foreign: np.ndarray  # [12] bool: pitch classes the input hardly uses (none without pitch analysis)
    step_power: np.ndarray  # [S] energy of the mono input per 16th step
    step_low: np.ndarray  # [len(DOWN), S] the part of it that moving down by DOWN[i] puts below SUB_HZ
    envelope: np.ndarray  # [2, T // env_block] peak magnitude per ENV_S block: mono, mono above HIGH_HZ
    env_block: int

    @property
    def length(self) -> int:
        return int(self.audio.shape[1])

    def step_at(self, sample: int) -> int:
        """The 16th step (from bar 1) nearest to ``sample``, within ``0 .. S - 1``."""
        steps = self.step_power.size
        return int(np.clip(round(sample / self.grid.samples_per_step), 0, max(0, steps - 1)))


def min_length(sample_rate: int) -> int:
    """The fewest samples :func:`analyse` works on at ``sample_rate``: one ``ENV_S`` block of the envelope."""
    return max(1, int(round(ENV_S * sample_rate)))


def analyse(x: np.ndarray, sample_rate: int, grid: Grid, pitch: bool = True) -> VaryContext:
    """The shared context of ``x`` ``[C, T]`` float32 on ``grid`` (at ``sample_rate``).

    ``pitch``: also read the pitch-class energy per step (what :func:`pitch_choices` needs).
    """
    total = x.shape[1]
    step = grid.samples_per_step
    n_steps = int(np.ceil(total / step)) + 1
    grid_cuts = np.round(np.arange(n_steps + 1) * step).astype(np.int64)
    grid_cuts = grid_cuts[: int(np.searchsorted(grid_cuts, total)) + 1]  # last one is >= total
    mono = to_mono(x)
    cuts = _snap(mono, grid_cuts, sample_rate, step)
    level = rms(x)
    xfade = max(1, min(int(round(XFADE_S * sample_rate)), total // 4))
    edge = max(1, min(int(round(EDGE_S * sample_rate)), total // 4))
    percussive = _is_percussive(mono, sample_rate)
    steps = cuts.size - 1
    step_power, step_low = _step_energy(mono, sample_rate, grid, steps)
    step_chroma = _step_chroma(mono, sample_rate, grid, steps) if pitch else np.zeros((12, steps))
    profile = step_chroma.sum(axis=1)
    pitched = np.sort(profile)[-7:].sum() >= PITCHED_SHARE * profile.sum()
    foreign = (profile < USED_SHARE * profile.sum()) & pitched
    block = min_length(sample_rate)
    usable = total // block * block
    high = signal.sosfilt(signal.butter(2, HIGH_HZ, "highpass", fs=sample_rate, output="sos"), mono[:usable])
    envelope = np.abs(np.stack([mono[:usable], high])).astype(np.float64).reshape(2, -1, block).max(axis=2)
    return VaryContext(
        x,
        sample_rate,
        grid,
        cuts,
        percussive,
        _is_seamless(x),
        level,
        xfade,
        edge,
        step_chroma,
        foreign,
        step_power,
        step_low,
        envelope,
        block,
    )


def pitch_choices(
    ctx: VaryContext, first: int, last: int, intervals: tuple[int, ...] = INTERVALS
) -> list[int]:
    """The ``intervals`` that may move 16th steps ``first .. last - 1`` of the input (see the module
    docstring).

    Octaves up always qualify, so the list holds ``12`` whenever ``intervals`` does.
    """
    steps = ctx.step_power.size
    first = int(np.clip(first, 0, max(0, steps - 1)))
    last = int(np.clip(last, first + 1, max(first + 1, steps)))
    power = float(ctx.step_power[first:last].sum())
    low = ctx.step_low[:, first:last].sum(axis=1) / power if power > 0 else np.zeros(len(DOWN))
    return _choices(ctx, ctx.step_chroma[:, first:last].sum(axis=1), low, intervals)


def pitch_choices_of(
    ctx: VaryContext, audio: np.ndarray, intervals: tuple[int, ...] = INTERVALS
) -> list[int]:
    """The ``intervals`` that may move ``audio`` ``[C, T]``: a stretch of a variation, whose rearranged
    notes are not those of the input at the same place (see :func:`pitch_choices`)."""
    mono = to_mono(audio)
    n_fft = nearest_pow2(0.093 * ctx.sample_rate)
    c = chroma(mono, ctx.sample_rate, n_fft=n_fft, hop=n_fft // 4).sum(axis=1, dtype=np.float64)
    power = float(np.sum(np.square(mono, dtype=np.float64)))
    factor, lows = _below(mono, ctx.sample_rate)
    low = factor * np.sum(np.square(lows), axis=1)
    return _choices(ctx, c, low / power if power > 0 else np.zeros(len(DOWN)), intervals)


def _choices(ctx: VaryContext, c: np.ndarray, low: np.ndarray, intervals: tuple[int, ...]) -> list[int]:
    """The ``intervals`` allowed for material with pitch-class energy ``c`` ``[12]`` and ``low[i]`` of its
    energy where moving down by ``DOWN[i]`` semitones would put it below ``SUB_HZ``."""
    total = float(c.sum())
    before = float(c[ctx.foreign].sum()) / total if total > 0 else 0.0
    allowed = []
    for k in intervals:
        if k < 0 and (-k not in DOWN or low[DOWN.index(-k)] >= SUB_SHARE):
            continue
        if total > 0 and k % 12 and float(np.roll(c, k)[ctx.foreign].sum()) / total > before + KEY_TOLERANCE:
            continue
        allowed.append(int(k))
    return allowed


def reverses_cleanly(ctx: VaryContext, source: int, span: int) -> bool:
    """True when ``span`` samples from ``source``, played backwards, rise no more than ``RISE_DB`` above their
    minimum over the last ``RISE_WINDOW_S`` anywhere but at their start (the slot's cut) and in their last
    ``RISE_TAIL_S`` (the reversed attack, which ends on the next cut).

    The envelopes (full band, and above ``HIGH_HZ``, where a hat's swell hides under a loud bass) are the
    peak magnitude per ``ENV_S`` block, held for ``HOLD_S`` (in the reversed direction): the swings of a low
    tone within one period are not rises, a note-off played backwards is. Their first ``HOLD_S`` count as
    the start.
    """
    block = ctx.env_block
    peaks = ctx.envelope[:, -(-max(0, source) // block) : (source + span) // block][:, ::-1]
    size = peaks.shape[1]
    head = -(-ctx.xfade // block) + 1
    tail = int(round(RISE_TAIL_S * ctx.sample_rate / block))
    if size <= head + tail:
        return True
    hold = max(1, int(round(HOLD_S * ctx.sample_rate / block)))
    window = max(1, int(round(RISE_WINDOW_S * ctx.sample_rate / block)))
    view = np.lib.stride_tricks.sliding_window_view
    floor = 0.03 * ctx.rms + 1e-12  # rises 30 dB below the input's level do not count
    for band in peaks:
        # the first hold counts as one block: the start of the slice is on the grid line, whatever it holds
        held = view(np.concatenate([np.full(hold - 1, band[:hold].max()), band]), hold).max(axis=1)
        before = view(np.concatenate([np.full(window, held[0]), held]), window)[:size].min(axis=1)
        rise = 20.0 * np.log10((held[head : size - tail] + floor) / (before[head : size - tail] + floor))
        if rise.max() > RISE_DB:
            return False
    return True


def _step_edges(grid: Grid, steps: int, total: int) -> np.ndarray:
    """Sample index of the start of each of ``steps`` 16th steps and of the end of the last (at most
    ``total``)."""
    return np.minimum(np.round(np.arange(steps + 1) * grid.samples_per_step).astype(np.int64), total)


def _step_energy(mono: np.ndarray, sample_rate: int, grid: Grid, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy of ``mono`` per 16th step ``[S]``, and the parts of it below ``SUB_HZ`` once moved down by each
    of ``DOWN`` ``[len(DOWN), S]``."""
    edges = _step_edges(grid, steps, mono.size)
    csum = np.concatenate([[0.0], np.cumsum(np.square(mono, dtype=np.float64))])
    factor, lows = _below(mono, sample_rate)
    low_edges = np.minimum(edges // factor, lows.shape[1])
    low_csum = np.concatenate([np.zeros((len(DOWN), 1)), np.cumsum(np.square(lows), axis=1)], axis=1)
    return np.diff(csum[edges]), factor * np.diff(low_csum[:, low_edges], axis=1)


def _below(mono: np.ndarray, sample_rate: int) -> tuple[int, np.ndarray]:
    """``mono`` low-passed where moving down by each of ``DOWN`` would take it below ``SUB_HZ``, at a
    ``factor`` times lower rate: ``(factor, [len(DOWN), T // factor])``.

    One low-pass at the highest of those corners runs at the full rate; the rest, on every ``factor``-th
    sample of its output (which holds nothing near the lower rate's Nyquist frequency).
    """
    corners = [SUB_HZ * 2.0 ** (k / 12.0) for k in DOWN]
    factor = max(1, int(sample_rate // (16.0 * max(corners))))
    top = signal.sosfilt(signal.butter(4, max(corners), "lowpass", fs=sample_rate, output="sos"), mono)[
        ::factor
    ]
    rate = sample_rate / factor
    return factor, np.stack(
        [
            top
            if corner == max(corners)
            else signal.sosfilt(signal.butter(4, corner, "lowpass", fs=rate, output="sos"), top)
            for corner in corners
        ]
    )


def _step_chroma(mono: np.ndarray, sample_rate: int, grid: Grid, steps: int) -> np.ndarray:
    """Pitch-class energy per 16th step ``[12, S]`` (STFT frames counted in the step their centre is in)."""
    n_fft = nearest_pow2(0.093 * sample_rate)
    hop = n_fft // 4
    frames = chroma(mono, sample_rate, n_fft=n_fft, hop=hop).astype(np.float64)
    step_of = (np.arange(frames.shape[1]) * hop / grid.samples_per_step).astype(np.int64)
    keep = step_of < steps
    return np.stack([np.bincount(step_of[keep], weights=f[keep], minlength=steps) for f in frames])


def rms(x: np.ndarray) -> float:
    """Root mean square of all samples of ``x`` (0 when empty), in float64."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _is_seamless(x: np.ndarray) -> bool:
    """True when the step from the last sample to the first is no bigger than steps near either end."""
    if x.shape[1] < 64:
        return False
    step = float(np.max(np.abs(x[:, 0] - x[:, -1])))
    near = float(max(np.max(np.abs(np.diff(x[:, :32]))), np.max(np.abs(np.diff(x[:, -32:])))))
    return step <= 2.0 * near + 1e-4


def _snap(mono: np.ndarray, grid_cuts: np.ndarray, sample_rate: int, step: float) -> np.ndarray:
    """Move each inner cut to just before a transient starting within a few ms (see :func:`_transients`),
    else to a zero crossing. Cuts at 0 and at the end stay where they are."""
    total = mono.size
    cuts: np.ndarray = grid_cuts.copy()
    inner = np.nonzero((grid_cuts > 0) & (grid_cuts < total))[0]
    if inner.size == 0:
        return cuts
    reach = int(min(round(SNAP_S * sample_rate), step / 4))
    onset_cut, strong = _transients(mono, grid_cuts[inner], sample_rate, reach)
    zero = max(1, int(round(0.001 * sample_rate)))
    for i, idx in enumerate(inner):
        c = int(grid_cuts[idx])
        if strong[i]:
            cuts[idx] = int(onset_cut[i])
            continue
        lo, hi = max(1, c - zero), min(total - 1, c + zero)
        seg = mono[lo - 1 : hi + 1]
        crossings = np.nonzero((seg[:-1] <= 0) & (seg[1:] > 0))[0] + lo
        if crossings.size:
            cuts[idx] = int(crossings[np.argmin(np.abs(crossings - c))])
    # keep the cuts strictly increasing whatever moved
    for i in range(1, cuts.size):
        if cuts[i] <= cuts[i - 1]:
            cuts[i] = max(grid_cuts[i], cuts[i - 1] + 1)
    return cuts


def transient_cuts(ctx: VaryContext, audio: np.ndarray, start: int) -> list[int]:
    """Where transients start at the grid lines inside ``audio`` ``[C, T]``, a stretch of a variation that
    begins at sample ``start``: sample indices into ``audio``, each just before its transient, ascending.

    The rise asked for is ``SPLIT_RISE_DB``, lower than a cut's: a note struck again over a louder one
    still needs its own piece, and a sustained tone does not rise that much within 10 ms.
    """
    step = ctx.grid.samples_per_step
    total = audio.shape[1]
    first = int(np.floor(start / step)) + 1
    lines = np.round(np.arange(first, first + int(total / step) + 2) * step).astype(np.int64) - start
    lines = lines[(lines > 0) & (lines < total)]
    if lines.size == 0:
        return []
    reach = int(min(round(SNAP_S * ctx.sample_rate), step / 4))
    at, strong = _transients(to_mono(audio), lines, ctx.sample_rate, reach, SPLIT_RISE_DB)
    return sorted({int(c) for c in at[strong] if 0 < c < total})


def _transients(
    mono: np.ndarray, centres: np.ndarray, sample_rate: int, reach: int, rise_db: float = SNAP_RISE_DB
) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``centres`` ``[N]``: the sample just before the sharpest rise within ``reach`` of it, and
    whether that rise is a transient.

    A transient is a rise of more than ``rise_db`` from the loudest of the ten 1 ms energy windows before it
    to the next one, above -40 dB of the mean power, in the pre-emphasised signal: the ripple of a low tone
    (a 50 Hz bass swings far more than 9 dB from one 1 ms window to the next) neither counts as a
    transient nor hides one.
    """
    total = mono.size
    w = max(1, int(round(0.001 * sample_rate)))
    pre = max(1, w // 2)
    emphasised = mono.astype(np.float64)
    emphasised[1:] -= 0.97 * emphasised[:-1].copy()
    power = np.square(emphasised)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    floor = 1e-4 * float(power.mean()) + 1e-20
    offsets = np.arange(-reach, reach + 1)
    t = np.clip(centres[:, None] + offsets[None, :], 0, total)

    def energy(end: np.ndarray) -> np.ndarray:
        end = np.clip(end, w, total)
        result: np.ndarray = (csum[end] - csum[end - w]) / w
        return result

    now = energy(t)
    before = energy(t - w)
    for k in range(2, SNAP_LOOKBACK + 1):
        np.maximum(before, energy(t - k * w), out=before)
    rise = 10.0 * np.log10((now + floor) / (before + floor))
    best = np.argmax(rise, axis=1)
    rows = np.arange(centres.size)
    strong = (rise[rows, best] > rise_db) & (now[rows, best] > 10.0 * floor)
    at = np.clip(t[rows, best] - w - pre, centres - reach, centres + reach)
    return at, strong


def _is_percussive(mono: np.ndarray, sample_rate: int) -> bool:
    """True for drum-like material: noisy spectra (median spectral flatness 200 Hz-8 kHz above 0.03)."""
    if mono.size < 4096:
        return False
    excerpt = 30 * sample_rate  # the middle 30 s tell enough
    if mono.size > excerpt:
        mono = mono[(mono.size - excerpt) // 2 :][:excerpt]
    freqs, _, spec = signal.stft(mono, fs=sample_rate, nperseg=2048, noverlap=1024)
    band = (freqs > 200) & (freqs < min(8000.0, 0.45 * sample_rate))
    power = np.abs(spec[band]) ** 2 + 1e-18
    loud = power.mean(axis=0)
    keep = loud > 1e-3 * loud.max()
    if not np.any(keep):
        return False
    flatness = np.exp(np.log(power[:, keep]).mean(axis=0)) / loud[keep]
    return bool(np.median(flatness) > 0.03)
