"""Running a loaded demucs model over a song, chunk by chunk, with progress and cancel between chunks.

The work is demucs's own :func:`demucs.apply.apply_model`: it splits the song into ``segment``-long chunks that
overlap by ``overlap`` and cross-fades them with triangular weights. It hands each chunk to a ``pool`` and
collects the results in order; the pool here (:class:`_ChunkPool`) reports ``done / total`` in the calling
thread as each result is collected, so a :class:`~bridge.errors.Cancelled` raised by the progress callback stops
the job at the next chunk (chunks already running finish first; those not started are dropped).

On the CPU the pool runs chunks side by side on worker threads, each with its share of torch's threads (two
workers of one thread on two cores): small convolutions scale poorly across threads inside one operation, and
whole chunks in parallel measured about 1.6 times faster than demucs's default of one chunk at a time on all
threads. Each worker sets its own thread count (an OpenMP per-thread setting); torch also remembers the last
count as the default for threads started later, so the caller's count is put back when the pool closes. With
``workers=0``, or on a GPU, chunks run one at a time in the calling thread, exactly as demucs runs them.

The shift trick (``shifts`` random time shifts of up to 0.5 s, averaged) is driven here rather than inside
``apply_model``, whose offsets come from Python's global ``random`` module: here they come from a
``numpy.random.default_rng(seed)``, so the same input and seed give bit-identical stems.

Precision: on a CPU with native bfloat16 arithmetic (x86 ``avx512_bf16`` or ``amx_bf16``) the convolutions and
matrix products run in bfloat16 under ``torch.autocast`` (the STFT and the overlap-add stay float32). That
measured 2.3 times faster per chunk here, and the stems moved by about -48 dB relative to float32 (error energy
over signal), far below what separation itself leaves; ``precision="float32"`` gives demucs's own numbers. This
module imports torch: import it only when a model runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from demucs.apply import BagOfModels, TensorChunk, apply_model

from bridge.engines.base import BlockPlan, Level, Progress
from bridge.errors import InvalidArgument

MAX_SHIFT_SECONDS = 0.5
MAX_WORKERS = 4  # chunks in flight at once on the CPU; each holds its own activations (~0.8 GB for htdemucs)
# A long song is separated in blocks of about this many seconds (plus ~12 s of context each side, ~8 % more
# work): each block holds its stems as float32 (~0.5 GB for stereo at 44.1 kHz) besides the model's activations.
BLOCK_SECONDS = 300.0


@dataclass(frozen=True)
class RunOptions:
    """How to run the model.

    Attributes:
        device: a torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        segment: chunk length in seconds; ``None``: the model's own (7.8 s for htdemucs).
        overlap: how much neighbouring chunks overlap, 0..0.99 (demucs's default 0.25).
        shifts: how many randomly shifted passes to average (demucs's default 1; 0 = one unshifted pass).
        seed: seeds the shift offsets.
        workers: chunks run side by side on the CPU; ``None``: as many as torch has threads, at most
            :data:`MAX_WORKERS`; 0 or 1: one at a time on all threads (demucs's way). Ignored on a GPU.
        precision: ``float32`` (demucs's own) or ``bfloat16`` (autocast; see the module docstring).
    """

    device: str = "cpu"
    segment: float | None = None
    overlap: float = 0.25
    shifts: int = 1
    seed: int = 0
    workers: int | None = None
    precision: str = "float32"


def _submodels(model: Any) -> list[Any]:
    return list(model.models) if isinstance(model, BagOfModels) else [model]


def max_segment(model: Any) -> float:
    """The longest chunk, in seconds, the model accepts (transformer models: what they were trained on)."""
    if isinstance(model, BagOfModels):
        return float(model.max_allowed_segment)
    if type(model).__name__ == "HTDemucs":
        return float(model.segment)
    return float("inf")


def count_chunks(model: Any, lengths: list[int], options: RunOptions) -> int:
    """How many chunks ``apply_model`` runs for passes over ``lengths`` samples (each model of a bag its own)."""
    total = 0
    rate = int(model.samplerate)
    for sub in _submodels(model):
        segment = options.segment if options.segment is not None else float(sub.segment)
        stride = int((1 - options.overlap) * int(rate * segment))
        total += sum(len(range(0, n, stride)) for n in lengths)
    return total


def block_plan(model: Any, options: RunOptions) -> BlockPlan | None:
    """How a long input can be separated block by block with the same result as whole (to float rounding).

    ``apply_model`` places chunks every ``stride`` samples from the start and weights them by their position
    in the chunk; a window that starts on a multiple of every model's stride, and reaches a chunk, the largest
    shift and the model's padding past its block on both sides, computes the block's samples from the same
    chunks as the whole input. The input's level (mean, deviation) must be the whole input's (:class:`Level`).
    ``None`` when the strides of a bag's models have no common multiple within a block.
    """
    rate = int(model.samplerate)
    lengths = [
        int(rate * (options.segment if options.segment is not None else float(sub.segment)))
        for sub in _submodels(model)
    ]
    strides = [max(1, int((1 - options.overlap) * n)) for n in lengths]
    align = math.lcm(*strides)
    block = int(BLOCK_SECONDS * rate)
    if align > block:
        return None
    context = max(lengths) + int(MAX_SHIFT_SECONDS * rate) + rate  # + a second for the models' own padding
    return BlockPlan(block, context, align=align, level=True)


def plan_workers(options: RunOptions) -> tuple[int, int]:
    """``(chunks side by side, torch threads each)``; ``(0, 0)``: one at a time in the calling thread."""
    if options.device != "cpu":
        return 0, 0
    threads = torch.get_num_threads()
    workers = min(MAX_WORKERS, threads) if options.workers is None else options.workers
    return (0, 0) if workers <= 1 else (workers, max(1, threads // workers))


def _autocast(options: RunOptions) -> contextlib.AbstractContextManager[Any]:
    """The precision context for a forward pass (a per-thread state: worker threads enter it themselves)."""
    if options.precision != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(options.device.split(":")[0], dtype=torch.bfloat16)


def _in_inference_mode(options: RunOptions, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    with torch.inference_mode(), _autocast(options):  # per-thread modes: worker threads enter them themselves
        return fn(*args, **kwargs)


class _Chunk:
    """A chunk handed to the pool; :meth:`result` (called by ``apply_model`` in order) reports progress."""

    def __init__(self, pool: _ChunkPool, compute: Callable[[], Any]) -> None:
        self._pool, self._compute = pool, compute

    def result(self) -> Any:
        out = self._compute()
        self._pool.collected()
        return out


class _ChunkPool:
    """The ``pool`` that ``apply_model`` submits chunks to; reports ``done / total`` as it collects them."""

    def __init__(
        self, total: int, progress: Progress, workers: int, threads: int, options: RunOptions
    ) -> None:
        self.total, self.done, self.progress = max(1, total), 0, progress
        self._options = options
        self._threads_before = torch.get_num_threads()
        self._executor = (
            ThreadPoolExecutor(
                workers, "demucs-chunk", initializer=torch.set_num_threads, initargs=(threads,)
            )
            if workers
            else None
        )

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Chunk:
        if self._executor is None:  # computed when collected, in the calling thread (demucs's own way)
            return _Chunk(self, lambda: fn(*args, **kwargs))
        return _Chunk(self, self._executor.submit(_in_inference_mode, self._options, fn, args, kwargs).result)

    def collected(self) -> None:
        self.done += 1
        self.progress(min(1.0, self.done / self.total), "separate")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)
            torch.set_num_threads(self._threads_before)  # the default for threads started later (see above)
            self._executor = None

    def __enter__(self) -> _ChunkPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.shutdown(wait=True, cancel_futures=True)


def separate_array(
    model: Any,
    audio: np.ndarray,
    options: RunOptions,
    progress: Callable[[float, str], None] | None = None,
    level: Level | None = None,
) -> np.ndarray:
    """Separate ``audio`` ``[C, T]`` (float32 at the model's rate and channel count) into ``[S, C, T]``.

    Sources come in ``model.sources`` order. The input is normalised as demucs does (minus the mean, over the
    standard deviation of the mono mix; ``level``: those of the whole input ``audio`` is a window of) and the
    stems scaled back, so they sum to about the input (demucs does not enforce the sum exactly).
    """
    report = Progress(progress)
    length = audio.shape[-1]
    if length == 0:
        raise InvalidArgument("cannot separate empty audio (0 samples)")
    rate = int(model.samplerate)
    max_shift = int(MAX_SHIFT_SECONDS * rate)
    rng = np.random.default_rng(options.seed)
    offsets = [int(rng.integers(0, max_shift + 1)) for _ in range(options.shifts)]
    lengths = [length + max_shift - o for o in offsets] if offsets else [length]
    workers, threads = plan_workers(options)
    pool = _ChunkPool(count_chunks(model, lengths, options), report, workers, threads, options)
    kwargs: dict[str, Any] = {
        "shifts": 0,
        "split": True,
        "overlap": options.overlap,
        "segment": options.segment,
        "device": options.device,
        "pool": pool,
    }
    with pool, torch.inference_mode(), _autocast(options):
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if level is None:
            ref = wav.mean(0)
            mean, std = ref.mean(), ref.std() + 1e-8
        else:
            mean, std = torch.tensor(level.mean), torch.tensor(level.std + 1e-8)
        mix = ((wav - mean) / std)[None]
        if not offsets:
            out = apply_model(model, mix, **kwargs)
        else:
            padded = TensorChunk(mix).padded(length + 2 * max_shift)  # type: ignore[no-untyped-call]
            out = torch.zeros(1, len(model.sources), audio.shape[0], length)
            for offset in offsets:
                shifted = TensorChunk(padded, offset, length + max_shift - offset)  # type: ignore[no-untyped-call]
                out += apply_model(model, shifted, **kwargs)[..., max_shift - offset :]
            out /= len(offsets)
        out = out * std + mean
        result: np.ndarray = out[0].to("cpu", torch.float32).numpy()
    report(1.0, "separate")
    return result


def parameter_bytes(model: Any) -> int:
    """Bytes held by the model's parameters and buffers (what a loaded copy costs in memory)."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def pick_device(requested: str | None) -> str:
    """``auto`` (or ``None``): ``cuda`` if present, else ``mps``, else ``cpu``; other names are checked.

    Raises:
        InvalidArgument: not a device name, or a device this machine does not have.
    """
    key = str(requested or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if key == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if key == "cpu":
        return key
    if key == "mps":
        if not has_mps:
            raise InvalidArgument("device 'mps' is not available on this machine; use --device auto or cpu")
        return key
    head, _, index = key.partition(":")
    if head == "cuda" and (not index or index.isdigit()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (index and int(index) >= count):
            raise InvalidArgument(
                f"device {requested!r} is not available on this machine ({count} CUDA device(s)); "
                "use --device auto or cpu"
            )
        return key
    raise InvalidArgument(f"device must be auto, cpu, cuda, cuda:N or mps, got {requested!r}")
