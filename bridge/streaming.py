"""Separating a long input block by block, from the file to the staged output files, in bounded memory.

A separation of a whole song holds the input and every stem as float32 arrays (the built-in engine about ten
copies of the input at its peak: 176 MB a minute of stereo at 44.1 kHz). For an input longer than one block of
the engine's :class:`~bridge.engines.base.BlockPlan`, :func:`separate_to_files` instead reads a window around
each block (:class:`bridge.audio.blocks.AudioSource`), hands it to the engine
(:meth:`~bridge.engines.base.Engine.separate_block`: arrays in, arrays out, as for a short input), keeps the
block's core of each stem and appends it to that stem's temp file (:class:`bridge.audio.stream_writer.StreamWriter`).
Memory then follows the block, not the song. The windows carry enough context that each core equals what the
whole signal gives, so there is no seam to hide, and the built-in stems still sum to the input.

The files are published as a set by a :class:`bridge.audio.writer.Publisher`: all of them or none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.audio.blocks import AudioSource, windows
from bridge.audio.folder import HeldFolder
from bridge.audio.stream_writer import StreamWriter
from bridge.audio.writer import Publisher, Staged
from bridge.engines.base import BlockPlan, Engine, Level, Progress, ProgressCallback
from bridge.errors import InvalidArgument


@dataclass(frozen=True)
class Written:
    """What :func:`separate_to_files` published.

    Attributes:
        paths: ``{stem: published path}``, in the order asked.
        frames, channels: of every file.
        peak: the largest absolute sample of any stem.
        bit_depth: the files' bit depth (32 when the stems peaked above 0 dBFS and were kept unclipped).
    """

    paths: dict[str, Path]
    frames: int
    channels: int
    peak: float
    bit_depth: int


def separate_to_files(
    engine: Engine,
    source: AudioSource,
    stems: Sequence[str],
    plan: BlockPlan,
    targets: Mapping[str, Path],
    *,
    fmt: str = "wav",
    bit_depth: int = 24,
    position: int | None = None,
    description: str = "",
    progress: ProgressCallback | None = None,
    on_publish: Callable[[list[Staged]], None] | None = None,
    folder: HeldFolder | None = None,
) -> Written:
    """Separate ``source`` block by block with ``engine`` and publish one file per stem at ``targets[stem]``.

    Args:
        engine: an engine whose :meth:`~bridge.engines.base.Engine.block_plan` gave ``plan``, working at
            ``source.sample_rate``.
        stems: the stems to write, each a key of ``targets``.
        fmt, bit_depth, position, description: as for :meth:`bridge.audio.writer.Publisher.add`. With
            ``bit_depth`` 16 or 24, stems that peak above 0 dBFS are written as 32-bit float instead, so that
            they stay unclipped (:attr:`Written.bit_depth` says so).
        progress: ``callback(fraction, stage)``: the engine's own stages across the blocks, then ``write``.
        on_publish: told the planned files (a list of :class:`~bridge.audio.writer.Staged`) right before they
            are published; raising stops the job, and nothing appears.
        folder: the targets' folder held open (a daemon job's): everything is written through it (see
            :class:`bridge.audio.writer.Publisher`).

    Raises:
        AudioReadError: the input cannot be decoded, or holds NaN or infinite samples somewhere.
        AudioWriteError: an output cannot be written; nothing is published then.
        Cancelled: from ``progress``; nothing is published.
    """
    missing = [s for s in stems if s not in targets]
    if missing or not stems:
        raise InvalidArgument(f"every stem needs a target file; none for {', '.join(missing) or 'any stem'}")
    report = Progress(progress)
    level = Level(*source.level()) if plan.level else None
    spans = list(windows(source.frames, plan.block, plan.context, plan.align))
    rate = source.sample_rate
    depth = bit_depth
    with Publisher(folder=folder) as publisher, ExitStack() as cleanup:
        writers: dict[str, StreamWriter] = {}
        for stem in stems:
            writer = StreamWriter(
                targets[stem],
                source.channels,
                rate,
                fmt=fmt,
                bit_depth=bit_depth,
                position=position,
                description=description,
                folder=folder,
            )
            cleanup.callback(writer.discard)  # closes the file; the publisher removes the temp file
            publisher.adopt(writer.temp, targets[stem])
            writers[stem] = writer
        for i, w in enumerate(spans):
            window = source.read(w.first, w.last)
            part = report.sub(0.97 * i / len(spans), 0.97 * (i + 1) / len(spans))
            out = engine.separate_block(window, rate, list(stems), part, level)
            del window
            cores = {stem: out[stem][..., w.start - w.first : w.stop - w.first] for stem in stems}
            del out
            if depth != 32 and any(float(np.max(np.abs(c))) > 1.0 for c in cores.values()):
                for writer in writers.values():
                    writer.to_float()  # a mix above 0 dBFS: keep every stem unclipped
                depth = 32
            for stem in stems:
                writers[stem].write(cores[stem])
            del cores  # the window's stems go before the next window is read
        report(0.97, "write")
        for writer in writers.values():
            writer.finish()
        planned: list[Staged] = publisher.reserve()
        if on_publish is not None:
            on_publish(planned)
        paths = publisher.publish()
    return Written(
        dict(zip(stems, paths, strict=True)),
        source.frames,
        source.channels,
        max(w.peak for w in writers.values()),
        depth,
    )
