"""The ``demucs`` engine: Hybrid Transformer Demucs separation (htdemucs, htdemucs_ft, htdemucs_6s, mdx_extra...).

An engine instance holds one loaded model on one device: it is the unit the daemon keeps warm (keyed by engine,
model and device; :attr:`DemucsEngine.model_bytes` says what it costs). Weights come from ``--model PATH``,
``<models-dir>/<name>/`` or demucs's own caches, never from the network unless ``allow_download`` (see
:mod:`bridge.engines.demucs_engine.weights`).

Importing this package stays light: torch and demucs are only looked up here (so a missing one makes the engine
unavailable with the install hint) and imported when a model loads.

Demucs stems sum to the mix only approximately: each source is estimated on its own and nothing forces the sum
(a trained model keeps the residual small; random test weights do not).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.engines.base import BlockPlan, Engine, Level, ProgressCallback
from bridge.engines.demucs_engine.weights import model_status as _model_status
from bridge.engines.demucs_engine.weights import pull
from bridge.engines.precision import pick_precision
from bridge.errors import InvalidArgument

for _package in ("torch", "demucs"):
    if importlib.util.find_spec(_package) is None:
        raise ImportError(f"{_package} is not installed")

DEFAULT_MODEL = "htdemucs"
DEFAULT_OVERLAP = 0.25
DEFAULT_SHIFTS = 1
MAX_SHIFTS = 20
MAX_WORKERS = 16


class DemucsEngine(Engine):
    """Separation with a demucs model; ``separate_stems`` and ``sample_rate`` are the loaded model's.

    Args:
        model: a model name (``htdemucs``, ``htdemucs_6s``, a folder name in ``models_dir``...) or a path to a
            demucs repo folder, a bag ``.yaml`` or a ``.th`` file. Default ``htdemucs``.
        models_dir: the folder holding ``<name>/`` repo folders.
        device: ``auto`` (default: cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        segment: chunk length in seconds (default: the model's; at most that for transformer models).
        overlap: chunk overlap, 0 to 0.99 (default 0.25).
        shifts: randomly shifted passes averaged, 0 to 20 (default 1); each costs one more pass.
        workers: chunks separated side by side on the CPU, 0 to 16 (default: one per torch thread, at most 4;
            0 or 1: one at a time on all threads, as demucs does). Ignored on a GPU.
        precision: ``auto`` (default: bfloat16 on a CPU that does it in hardware, else float32), ``float32``
            (demucs's own numbers) or ``bfloat16`` (about twice as fast on such CPUs; stems within about -48 dB).
        allow_download: fetch missing weights from the network (demucs's own download).

    Raises:
        ModelNotFound: no weights (the message names every place looked and ``stembridge models pull NAME``).
        InvalidArgument: a bad option value or an unavailable device.
    """

    name = "demucs"
    capabilities = frozenset({"separate"})
    separate_stems = ("drums", "bass", "other", "vocals")
    default_model = DEFAULT_MODEL
    uses_torch = True
    run_options = ("segment", "overlap", "shifts", "precision")
    stem_hints = {"separate": " (guitar and piano need --model htdemucs_6s)"}

    def __init__(
        self,
        model: str | None = None,
        models_dir: Path | None = None,
        device: str | None = None,
        *,
        segment: float | None = None,
        overlap: float = DEFAULT_OVERLAP,
        shifts: int = DEFAULT_SHIFTS,
        workers: int | None = None,
        precision: str | None = None,
        allow_download: bool = False,
    ) -> None:
        super().__init__(model, models_dir, device)
        from bridge.engines.demucs_engine import weights

        workers = _check_workers(workers)
        # Loading finds the weights first, so a missing model fails fast, before torch is imported.
        net, resolved = weights.load(model or DEFAULT_MODEL, models_dir, allow_download)
        from bridge.engines.demucs_engine import run

        self.device = run.pick_device(device)
        self._longest = run.max_segment(net)
        self._net: Any = net.to(self.device)
        self._resolved = resolved
        self.options = run.RunOptions(self.device, workers=workers)
        self.set_run_options(segment=segment, overlap=overlap, shifts=shifts, precision=precision)
        self.sample_rate = int(net.samplerate)
        self.audio_channels = int(net.audio_channels)
        # The stems are the loaded model's (htdemucs_6s has six): an instance value over the class default.
        self.__dict__["separate_stems"] = tuple(str(s) for s in net.sources)
        if {"guitar", "piano"} <= set(self.separate_stems):
            self.__dict__["stem_hints"] = {}
        #: Bytes of the loaded parameters and buffers: what keeping this instance warm costs.
        self.model_bytes = run.parameter_bytes(net)

    @classmethod
    def model_status(cls, model: str, models_dir: Path | None) -> str | None:
        return _model_status(model, models_dir)

    @classmethod
    def pull(cls, model: str, models_dir: Path | None = None) -> Path:
        return pull(model, models_dir)

    def set_run_options(self, **options: Any) -> None:
        """``segment``, ``overlap``, ``shifts`` and ``precision`` for the next jobs (``None`` or left out: the
        default); checked here, so a bad value fails before any work."""
        from dataclasses import replace

        unknown = sorted(set(options) - set(self.run_options))
        if unknown:
            raise InvalidArgument(f"the demucs engine has no option {', '.join(unknown)}")
        segment, overlap, shifts, precision = (options.get(k) for k in self.run_options)
        self.options = replace(
            self.options,
            segment=_check_segment(segment, self._longest),
            overlap=_check_overlap(DEFAULT_OVERLAP if overlap is None else overlap),
            shifts=_check_shifts(DEFAULT_SHIFTS if shifts is None else shifts),
            precision=pick_precision(precision, self.device or "cpu"),
        )

    def cache_settings(self) -> dict[str, Any]:
        o = self.options
        return {"segment": o.segment, "overlap": o.overlap, "shifts": o.shifts, "precision": o.precision}

    @property
    def model_name(self) -> str:
        return self._resolved

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        """Split ``audio`` ``[C, T]`` (C = 1 or 2, at :attr:`sample_rate`) into ``{stem: [C, T]}`` float32.

        Mono input is separated as dual mono and the stems averaged back to one channel.
        """
        return self.separate_block(audio, sample_rate, stems, progress)

    def block_plan(self, sample_rate: int) -> BlockPlan | None:
        from bridge.engines.demucs_engine import run

        return run.block_plan(self._net, self.options) if sample_rate == self.sample_rate else None

    def separate_block(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
        level: Level | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`separate` for a window of a longer input whose level is ``level`` (see :meth:`block_plan`)."""
        from bridge.engines.demucs_engine import run

        wanted = list(stems) or list(self.separate_stems)
        self.require_stems("separate", wanted)
        if sample_rate != self.sample_rate:
            raise InvalidArgument(
                f"the demucs model {self.model_name} works at {self.sample_rate} Hz, got {sample_rate} Hz; "
                "resample first (the pipeline does)"
            )
        channels = audio.shape[0]
        if audio.ndim != 2 or channels not in (1, self.audio_channels):
            raise InvalidArgument(
                f"demucs separates mono or {self.audio_channels}-channel audio [C, T], got shape {audio.shape}; "
                "downmix it first"
            )
        work = np.repeat(audio, self.audio_channels, axis=0) if channels < self.audio_channels else audio
        out = run.separate_array(
            self._net, work.astype(np.float32, copy=False), self.options, progress, level
        )
        result = {}
        for stem in wanted:
            take = out[self.separate_stems.index(stem)]
            result[stem] = take.mean(axis=0, keepdims=True) if channels == 1 else take
        return result


def _check_overlap(overlap: float) -> float:
    value = float(overlap)
    if not 0.0 <= value <= 0.99:
        raise InvalidArgument(f"overlap must be between 0 and 0.99, got {overlap}")
    return value


def _check_shifts(shifts: int) -> int:
    if isinstance(shifts, bool) or int(shifts) != shifts or not 0 <= int(shifts) <= MAX_SHIFTS:
        raise InvalidArgument(f"shifts must be a whole number between 0 and {MAX_SHIFTS}, got {shifts}")
    return int(shifts)


def _check_workers(workers: int | None) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or int(workers) != workers or not 0 <= int(workers) <= MAX_WORKERS:
        raise InvalidArgument(f"workers must be a whole number between 0 and {MAX_WORKERS}, got {workers}")
    return int(workers)


def _check_segment(segment: float | None, longest: float) -> float | None:
    if segment is None:
        return None
    value = float(segment)
    if not 0.1 <= value <= longest:
        raise InvalidArgument(
            f"segment must be between 0.1 and {longest:g} seconds for this model, got {segment}; "
            "leave it unset to use the model's own"
        )
    return value


__all__ = ["DemucsEngine", "pull"]
