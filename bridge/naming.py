"""Output file names that say what a file is: ``<source>__<stem>__<bpm>bpm__<bars>bars__v<k>.wav``."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^\w\-+.()]+", re.UNICODE)


def safe_name(text: str, fallback: str = "untitled", max_len: int = 80) -> str:
    """A file-name-safe version of ``text``: no separators, no traversal, no control characters."""
    text = unicodedata.normalize("NFC", str(text))
    text = _UNSAFE.sub("_", text).strip("._ ")
    return text[:max_len].rstrip("._ ") or fallback


def format_bpm(bpm: float) -> str:
    """``120.0`` -> ``"120"``, ``123.456`` -> ``"123.46"``."""
    return f"{round(float(bpm), 2):g}"


def output_name(
    source: str,
    stem: str,
    *,
    bpm: float | None = None,
    bars: int | None = None,
    variation: int | None = None,
    ext: str = "wav",
) -> str:
    """Build an output file name from the source file's stem (name without extension).

    Example:
        >>> output_name("My Song", "bass", bpm=120, bars=8, variation=1)
        'My_Song__bass__120bpm__8bars__v1.wav'
    """
    parts = [safe_name(source), safe_name(stem, "stem")]
    if bpm is not None:
        parts.append(f"{format_bpm(bpm)}bpm")
    if bars is not None:
        parts.append(f"{int(bars)}bars")
    if variation is not None:
        parts.append(f"v{int(variation)}")
    return "__".join(parts) + "." + ext.lstrip(".")


def split_source(stem_of_file: str) -> tuple[str, str | None]:
    """Split a file name stem that stembridge made back into ``(song, stem)``.

    Results of results keep short names: the bass separated from ``song.wav`` is ``song__bass``; a part generated
    against it is named after ``song`` again, not ``song__bass``.

    Example:
        >>> split_source("song__bass__120bpm__8bars__v1")
        ('song', 'bass')
        >>> split_source("my take")
        ('my take', None)
    """
    parts = stem_of_file.split("__")
    if len(parts) >= 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return stem_of_file, None


_TEMPO = re.compile(r"__(\d+(?:\.\d+)?)bpm__(\d+)bars(?:__|$)")


def parse_tempo(stem_of_file: str) -> tuple[float | None, int | None]:
    """The bpm and bars a stembridge file name states, or ``(None, None)``.

    Example:
        >>> parse_tempo("song__bass__87bpm__4bars__v1")
        (87.0, 4)
        >>> parse_tempo("my loop")
        (None, None)
    """
    match = _TEMPO.search(stem_of_file)
    if match is None:
        return None, None
    return float(match.group(1)), int(match.group(2))
