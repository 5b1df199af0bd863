"""Finishing generated and varied parts: exact length, fades, loudness match, look-ahead peak limiting.

Used on what the engines *make* (generated stems, variations), never on separation stems, which must sum back
to the mix untouched. All functions are pure: ``[C, T]`` float32 in, a new ``[C, T]`` float32 array out.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter1d

from bridge.audio.io import check_audio, check_sample_rate
from bridge.audio.loudness import integrated_loudness, true_peak
from bridge.errors import InvalidArgument

# The loudest mix a made part is levelled against. A context or an input measured louder (a float file driven
# over 0 dBFS, many files summed) is taken as this loud, so its parts come out at a level a DAW can use rather
# than crushed by the limiter or refused. About as loud as finished masters go.
LOUDEST_REFERENCE_LUFS = -6.0
QUIETEST_TARGET_LUFS = -70.0  # BS.1770's absolute gate: nothing quieter can be measured, so none is aimed at


def _check_ms(value: float, name: str, upper: float = 60000.0) -> float:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be a number of milliseconds, got {value!r}") from None
    if not np.isfinite(ms) or not 0.0 <= ms <= upper:
        raise InvalidArgument(f"{name} must be between 0 and {upper:g} ms, got {value!r}")
    return ms


def _check_length(n_samples: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise InvalidArgument(f"n_samples must be a whole number >= 1, got {n_samples!r}")
    return int(n_samples)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine fade-in of ``n`` samples, from exactly 0 towards 1 (float32 ``[n]``)."""
    return (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)


def fit_length(audio: np.ndarray, n_samples: int, sample_rate: int, fade_ms: float = 5.0) -> np.ndarray:
    """Return ``audio`` ``[C, T]`` exactly ``n_samples`` long.

    Longer audio is cut, with a raised-cosine fade-out of ``fade_ms`` ending at the cut (so the cut does not
    click); shorter audio is padded with silence at the end.

    Returns:
        float32 ``[C, n_samples]`` (a new array).
    """
    audio = check_audio(audio, "audio", error=InvalidArgument)
    n_samples = _check_length(n_samples)
    fade = min(n_samples, int(round(_check_ms(fade_ms, "fade_ms") * check_sample_rate(sample_rate) / 1000.0)))
    frames = audio.shape[1]
    if frames <= n_samples:
        return np.pad(audio, ((0, 0), (0, n_samples - frames)))
    out: np.ndarray = audio[:, :n_samples].copy()
    if fade:
        out[:, n_samples - fade :] *= _ramp(fade)[::-1]
    return out


def apply_fades(audio: np.ndarray, sample_rate: int, fade_in_ms: float, fade_out_ms: float) -> np.ndarray:
    """Raised-cosine fade-in at the start and fade-out at the end of ``audio`` ``[C, T]``.

    The first sample of a fade-in and the last sample of a fade-out are exactly 0. Fades longer than the audio
    are cut to its length. Returns a new float32 ``[C, T]`` array.
    """
    audio = check_audio(audio, "audio", error=InvalidArgument)
    rate = check_sample_rate(sample_rate)
    frames = audio.shape[1]
    n_in = min(frames, int(round(_check_ms(fade_in_ms, "fade_in_ms") * rate / 1000.0)))
    n_out = min(frames, int(round(_check_ms(fade_out_ms, "fade_out_ms") * rate / 1000.0)))
    out: np.ndarray = audio.copy()
    if n_in:
        out[:, :n_in] *= _ramp(n_in)
    if n_out:
        out[:, frames - n_out :] *= _ramp(n_out)[::-1]
    return out


def _ceiling(ceiling_db: float) -> float:
    try:
        value = float(ceiling_db)
    except (TypeError, ValueError):
        raise InvalidArgument(f"ceiling_db must be a number of dBFS, got {ceiling_db!r}") from None
    if not np.isfinite(value) or not -60.0 <= value <= 0.0:
        raise InvalidArgument(f"ceiling_db must be between -60 and 0 dBFS, got {ceiling_db!r}")
    return float(10.0 ** (value / 20.0))


def peak_limit(
    audio: np.ndarray,
    sample_rate: int,
    ceiling_db: float = -1.0,
    *,
    lookahead_ms: float = 5.0,
    release_ms: float = 100.0,
) -> np.ndarray:
    """Look-ahead brickwall limiter (sample peak, channels linked); audio under the ceiling is unchanged.

    The gain reduction (in dB) needed by each sample is held over the look-ahead window before it, released
    linearly in dB afterwards, and smoothed by a Hann-weighted average over the look-ahead window, so the gain
    glides down before a transient instead of clipping it, and glides back up after it. Every sample is at
    least as reduced as it needs to be; a final clip only catches float rounding.

    Args:
        audio: ``[C, T]`` float samples.
        ceiling_db: the highest sample peak allowed, in dBFS (-60 to 0).
        lookahead_ms: attack time; the gain starts falling this long before a peak (0.1-50 ms).
        release_ms: time for the gain to recover from 6 dB of reduction (linear in dB; 1-5000 ms).

    Returns:
        float32 ``[C, T]`` with ``max |x| <= 10 ** (ceiling_db / 20)``; a copy of ``audio`` if it already is.
        This limits sample peaks; inter-sample (true) peaks can still exceed the ceiling slightly.
    """
    audio = check_audio(audio, "audio", error=InvalidArgument)
    rate = check_sample_rate(sample_rate)
    ceiling = _ceiling(ceiling_db)
    lookahead = max(1, int(round(_check_ms(lookahead_ms, "lookahead_ms", 50.0) * rate / 1000.0)))
    release_s = max(_check_ms(release_ms, "release_ms", 5000.0), 1.0) / 1000.0
    ceiling32 = np.float32(ceiling)
    if ceiling32 > ceiling:  # the float32 ceiling must not round above the float64 one
        ceiling32 = np.nextafter(ceiling32, np.float32(0.0))
    envelope = np.abs(audio).max(axis=0)
    if envelope.max() <= ceiling32:
        return np.array(audio, copy=True)
    gain = _limiter_gain(envelope, ceiling, lookahead, 6.0 / (release_s * rate))
    out: np.ndarray = audio * gain
    np.clip(out, -ceiling32, ceiling32, out=out)
    return out


def _limiter_gain(
    envelope: np.ndarray, ceiling: float, lookahead: int, release_db_per_sample: float
) -> np.ndarray:
    """Per-sample gain ``[T]`` (float32) that keeps ``envelope * gain <= ceiling``.

    Works on a control signal decimated by ``step`` samples (block maxima) and interpolates the gain linearly
    between control points; control point ``b`` (at sample ``b * step``) covers blocks ``b - 1`` and ``b``, so
    every sample's gain is a convex mix of two gains that are both low enough for it.
    """
    frames = envelope.size
    step = int(np.clip(lookahead // 8, 1, 16))
    blocks = -(-frames // step)
    padded = np.zeros(blocks * step, dtype=np.float32)
    padded[:frames] = envelope
    block_peak = padded.reshape(blocks, step).max(axis=1).astype(np.float64)
    with np.errstate(divide="ignore"):
        need = np.maximum(20.0 * np.log10(block_peak / ceiling), 0.0)
    need = np.append(need, 0.0)  # control points 0..blocks
    ahead = -(-lookahead // step)
    # Hold: control point u takes the largest reduction needed by blocks u-1 .. u+ahead.
    size = ahead + 2
    held = maximum_filter1d(need, size=size, mode="constant", cval=0.0, origin=1 - size // 2)
    # Release: the reduction falls `slope` dB per block after a peak: r[u] = max_s(held[s] - slope * (u - s)).
    ramp = (release_db_per_sample * step) * np.arange(held.size, dtype=np.float64)
    released = np.maximum.accumulate(held + ramp) - ramp
    # Attack: Hann-weighted average over control points u-ahead .. u; each term covers what u needs.
    weights = np.hanning(ahead + 3)[1:-1]
    weights /= weights.sum()
    smoothed = np.convolve(np.concatenate([np.full(ahead, released[0]), released]), weights, mode="valid")
    control = 10.0 ** (-np.maximum(smoothed, 0.0) / 20.0)
    frac = np.arange(step, dtype=np.float64) / step
    gain = control[:-1, None] + (control[1:] - control[:-1])[:, None] * frac[None, :]
    return gain.reshape(-1)[:frames].astype(np.float32)


def loudness_target(reference_lufs: float, below_lu: float = 0.0) -> float | None:
    """The integrated loudness to set a made part to: ``below_lu`` under ``reference_lufs`` (the context's or
    the input's loudness), the reference taken as at most :data:`LOUDEST_REFERENCE_LUFS` and the result as at
    least :data:`QUIETEST_TARGET_LUFS`; None when the reference is silence (``-inf``: nothing to match)."""
    if not np.isfinite(reference_lufs):
        return None
    return max(min(float(reference_lufs), LOUDEST_REFERENCE_LUFS) - float(below_lu), QUIETEST_TARGET_LUFS)


def match_loudness(
    audio: np.ndarray, sample_rate: int, target_lufs: float, max_gain_db: float = 20.0
) -> np.ndarray:
    """Scale ``audio`` ``[C, T]`` towards ``target_lufs`` (BS.1770 integrated), the gain clamped to
    ``+-max_gain_db``. Silence comes back unchanged. Gain only: peaks may pass 0 dBFS (limit afterwards)."""
    audio = check_audio(audio, "audio", error=InvalidArgument)
    rate = check_sample_rate(sample_rate)
    try:
        target, limit = float(target_lufs), float(max_gain_db)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"target_lufs and max_gain_db must be numbers, got {target_lufs!r}, {max_gain_db!r}"
        ) from None
    if not np.isfinite(target) or not -70.0 <= target <= 0.0:
        raise InvalidArgument(f"target loudness must be between -70 and 0 LUFS, got {target_lufs!r}")
    if not np.isfinite(limit) or not 0.0 <= limit <= 60.0:
        raise InvalidArgument(f"max_gain_db must be between 0 and 60 dB, got {max_gain_db!r}")
    loudness = integrated_loudness(audio, rate)
    if not np.isfinite(loudness):
        return np.array(audio, copy=True)
    gain_db = float(np.clip(target - loudness, -limit, limit))
    scaled: np.ndarray = audio * np.float32(10.0 ** (gain_db / 20.0))
    return scaled


def finish(
    audio: np.ndarray,
    sample_rate: int,
    n_samples: int,
    *,
    target_lufs: float | None = None,
    ceiling_db: float = -1.0,
    fade_in_ms: float = 0.0,
    fade_out_ms: float = 5.0,
) -> np.ndarray:
    """Make a generated part ready to write: exact length, fades, optional loudness match, peak limit.

    Args:
        audio: ``[C, T]`` float samples.
        n_samples: the exact output length (e.g. ``grid.samples_for_bars(bars)``).
        target_lufs: integrated loudness to match (gain clamped to +-20 dB), or None to keep the level.
        ceiling_db: sample-peak ceiling of the limiter.
        fade_in_ms, fade_out_ms: raised-cosine fades at the start and end.

    Returns:
        float32 ``[C, n_samples]`` whose peaks, sample and true (between samples, see
        :func:`~bridge.audio.loudness.true_peak`), stay at or under ``ceiling_db``.
    """
    # A cut made by fit_length is faded there unless the fade-out (which ends at the same place) will do it.
    cut_fade_ms = 0.0 if _check_ms(fade_out_ms, "fade_out_ms") > 0 else 5.0
    out = fit_length(audio, n_samples, sample_rate, fade_ms=cut_fade_ms)
    out = apply_fades(out, sample_rate, fade_in_ms, fade_out_ms)
    if target_lufs is not None:
        out = match_loudness(out, sample_rate, target_lufs)
    out = peak_limit(out, sample_rate, ceiling_db)
    # The limiter holds the samples; the waveform between them can still rise above the ceiling (most after
    # heavy limiting): a little gain brings its true peak under it too.
    over = true_peak(out, sample_rate) / _ceiling(ceiling_db)
    if over > 1.0:
        out *= np.float32(np.nextafter(1.0 / over, 0.0))
    return out
