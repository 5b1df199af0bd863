"""How close a transcription is to the truth: onset and note F-measures, chord-per-bar accuracy.

The usual MIR measures (as mir_eval defines them, here on plain lists): an estimated onset matches a true one
within ``tolerance`` seconds (50 ms by default), each used once; precision is the share of estimates matched,
recall the share of the truth, F their harmonic mean. A note matches when its onset does and its pitch is the
same (offsets are not scored). Used by the tests and by bench/bench_transcribe.py.
"""

from __future__ import annotations

from collections.abc import Sequence

TOLERANCE_S = 0.05


def _matches(truth: Sequence[float], estimate: Sequence[float], tolerance: float) -> int:
    """Matched pairs, closest first, one-to-one."""
    pairs = sorted(
        (abs(t - e), i, j)
        for i, t in enumerate(truth)
        for j, e in enumerate(estimate)
        if abs(t - e) <= tolerance
    )
    used_t: set[int] = set()
    used_e: set[int] = set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_e:
            used_t.add(i)
            used_e.add(j)
    return len(used_t)


def f_measure(matched: int, n_truth: int, n_estimate: int) -> float:
    """F1 of ``matched`` pairs; 1.0 when both are empty (nothing to find, nothing found)."""
    if n_truth == 0 and n_estimate == 0:
        return 1.0
    if matched == 0:
        return 0.0
    precision, recall = matched / n_estimate, matched / n_truth
    return 2 * precision * recall / (precision + recall)


def onset_f(truth: Sequence[float], estimate: Sequence[float], tolerance: float = TOLERANCE_S) -> float:
    """Onset F-measure of onset times in seconds."""
    return f_measure(_matches(truth, estimate, tolerance), len(truth), len(estimate))


def note_f(
    truth: Sequence[tuple[float, int]], estimate: Sequence[tuple[float, int]], tolerance: float = TOLERANCE_S
) -> float:
    """Note F-measure of ``(onset seconds, MIDI pitch)`` notes: onset within ``tolerance`` and the same pitch."""
    matched = 0
    for pitch in {p for _, p in truth} | {p for _, p in estimate}:
        matched += _matches(
            [t for t, p in truth if p == pitch], [t for t, p in estimate if p == pitch], tolerance
        )
    return f_measure(matched, len(truth), len(estimate))


def chord_accuracy(truth: Sequence[frozenset[int]], estimate: Sequence[frozenset[int]]) -> float:
    """Share of bars whose estimated pitch classes equal the true ones (bars past the estimate count as wrong)."""
    if not truth:
        return 1.0
    right = sum(1 for i, t in enumerate(truth) if i < len(estimate) and estimate[i] == t)
    return right / len(truth)
