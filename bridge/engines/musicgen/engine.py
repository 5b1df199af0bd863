"""The ``musicgen`` engine: conditional stem generation and variation with MusicGen (transformers).

An instance holds one loaded model on one device; it is what the daemon keeps warm (:attr:`model_bytes` is
what that costs). Loading happens in the constructor, so a missing model fails before any work starts.

``generate``: the context mix conditions MusicGen through audio continuation (each window of the request is
prompted by the context bars before it, see :mod:`.conditioning` for why and how windows line up with bar 1),
through chroma with melody models, and through a text prompt naming the stem, the user's words, the tempo
and the context's key. All windows and variations run as rows of one batch. The take is then reduced to the
stem with demucs when the stem is one demucs knows (:mod:`.isolation`), unless the model was trained by
``stembridge train`` to generate that stem alone (:mod:`bridge.train`), which is conditioned the same way (its
``--tags`` are the prompt when the request has none).

``vary``: the part itself is the context: its first ``(1 - strength)`` bars are kept and the rest is
regenerated as a continuation of what precedes it; higher strength also samples hotter.

Both return audio at the rate they were given (resampling around the model's 32 kHz when needed), exactly
as long as asked. Seeds are reproducible: the same inputs, seed and number of variations give the same
samples on the same machine and device.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.audio.analysis import is_silent
from bridge.audio.io import conform_channels, resample
from bridge.audio.timing import Grid
from bridge.engines.base import GENERATE_STEMS, Engine, GenerateSpec, Progress, ProgressCallback
from bridge.engines.musicgen import conditioning, loading
from bridge.engines.musicgen.isolation import SOURCES, Isolator
from bridge.engines.musicgen.loading import DEFAULT_MODEL, LoadedModel, pull
from bridge.engines.precision import pick_precision
from bridge.errors import InvalidArgument
from bridge.train import card as train_card

if TYPE_CHECKING:
    from bridge.engines.musicgen.sampler import Sampling

for _package in ("torch", "transformers"):
    if importlib.util.find_spec(_package) is None:
        raise ImportError(f"{_package} is not installed")

MAX_VARIATIONS = 16


class MusicgenEngine(Engine):
    """MusicGen on transformers.

    Args:
        model: a name (``musicgen-small`` by default, ``musicgen-melody``, a folder name in ``models_dir``...)
            or a folder (see :mod:`.loading`).
        models_dir: the folder holding ``<name>/`` model folders.
        device: ``auto`` (default: cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        allow_download: fetch a published model missing from the cache (otherwise nothing touches the network).
        isolate: reduce generated takes to the stem with demucs when it is installed with its weights.
        guidance_scale: classifier-free guidance (1 turns it off and halves the work; default 3).
        top_k: sample among the k likeliest tokens (default 250).
        temperature: sampling temperature (default 1).
        max_batch: rows per ``generate`` call; longer requests (windows x variations) run in several calls.
        precision: ``auto`` (default: bfloat16 text encoder and decoder on a CPU that does bfloat16 in
            hardware, about 2.4 times faster; the audio codec stays float32), ``float32`` or ``bfloat16``.
        windows: prompt and window lengths (:class:`.conditioning.Settings`).

    Raises:
        ModelNotFound: the weights are not here (the message names the places looked and the pull command).
        InvalidArgument: a bad option or an unavailable device.
    """

    name = "musicgen"
    capabilities = frozenset({"generate", "vary"})
    generate_stems = GENERATE_STEMS
    default_model = DEFAULT_MODEL
    uses_torch = True
    sample_rate = 32000

    def __init__(
        self,
        model: str | None = None,
        models_dir: Path | None = None,
        device: str | None = None,
        *,
        allow_download: bool = False,
        isolate: bool = True,
        guidance_scale: float = 3.0,
        top_k: int = 250,
        temperature: float = 1.0,
        max_batch: int = 16,
        windows: conditioning.Settings | None = None,
        precision: str | None = None,
    ) -> None:
        super().__init__(model, models_dir, device)
        if not 1.0 <= float(guidance_scale) <= 20.0:
            raise InvalidArgument(f"guidance_scale must be between 1 and 20, got {guidance_scale}")
        if not 0.05 <= float(temperature) <= 5.0:
            raise InvalidArgument(f"temperature must be between 0.05 and 5, got {temperature}")
        if int(top_k) < 0 or int(max_batch) < 1:
            raise InvalidArgument(f"top_k must be >= 0 and max_batch >= 1, got {top_k} and {max_batch}")
        self.guidance_scale, self.top_k, self.temperature = (
            float(guidance_scale),
            int(top_k),
            float(temperature),
        )
        self.max_batch = int(max_batch)
        self.windows = windows or conditioning.Settings()
        self.device = loading.pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self._lm: LoadedModel = self._load(model, models_dir, self.device, allow_download)
        self.sample_rate = self._lm.sample_rate
        #: Bytes of the loaded parameters and buffers: what keeping this instance warm costs.
        self.model_bytes = self._lm.nbytes
        #: The card of a model made by ``stembridge train`` (empty for other models).
        self._card = (None if self._lm.folder is None else train_card.read(self._lm.folder)) or {}
        self._isolator = Isolator(models_dir, device) if isolate else None
        #: Notes on the last job for its result ("not isolated: demucs weights missing..."), reset per job.
        self.warnings: list[str] = []

    def _load(
        self, model: str | None, models_dir: Path | None, device: str, allow_download: bool
    ) -> LoadedModel:
        source = loading.resolve(model, models_dir, allow_download=allow_download)
        return loading.load(source, device, allow_download=allow_download, precision=self.precision)

    @classmethod
    def model_status(cls, model: str, models_dir: Path | None) -> str | None:
        return loading.model_status(model, models_dir)

    @classmethod
    def pull(cls, model: str, models_dir: Path | None = None) -> Path:
        return pull(model, models_dir)

    @property
    def model_name(self) -> str:
        return self._lm.name

    @property
    def trained_stem(self) -> str | None:
        """The stem the loaded model was trained to generate alone (its ``stembridge train`` card), if any."""
        stem = self._card.get("stem")
        return stem if isinstance(stem, str) else None

    @property
    def _trained_tags(self) -> str:
        """The words a trained model's examples carried (``--tags``): its prompt when the user gives none."""
        tags = self._card.get("tags")
        return tags if isinstance(tags, str) else ""

    @property
    def melody(self) -> bool:
        """Whether the loaded model takes chroma conditioning."""
        return self._lm.melody

    # ------------------------------------------------------------------------------------------ generate

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        """``spec.variations`` takes ``[2, N]`` of ``spec.stem`` over the context's bars 1..``spec.bars``."""
        report = Progress(progress)
        self.require_stems("generate", [spec.stem])
        self.warnings = []
        rate = self._lm.sample_rate
        grid = spec.grid(rate)
        total = grid.samples_for_bars(spec.bars)
        ctx = None if context is None or is_silent(context) else self._to_model(context, sample_rate)
        report(0.0, "analyse")
        key = None if ctx is None else conditioning.context_key(ctx, rate, grid)
        words = spec.prompt if spec.prompt.strip() or spec.stem != self.trained_stem else self._trained_tags
        text = conditioning.text_prompt(spec.stem, words, spec.bpm, key, spec.time_signature)
        plan = conditioning.plan(grid, 0, total, self._lm.hop, self.windows, prompted=ctx is not None)
        loop = None if ctx is None else conditioning.Loop.of_bars(ctx, grid)
        # a model trained on this stem alone (stembridge train) already generates the stem, not a mix
        isolating = self._isolator is not None and spec.stem in SOURCES and spec.stem != self.trained_stem
        end = 0.75 if isolating else 0.97
        base = np.zeros((self._lm.channels, total), dtype=np.float32)
        sampling = self._sampling(self.temperature)
        takes = self._render(
            plan, loop, text, spec.variations, spec.seed, sampling, base, report.sub(0.02, end)
        )
        if isolating and self._isolator is not None:
            takes, warning = self._isolator.isolate(takes, rate, spec.stem, report.sub(end, 0.97))
            self.warnings += [warning] if warning else []
        n_out = spec.grid(sample_rate).samples_for_bars(spec.bars)
        out = [_deliver(take, rate, sample_rate, 2, n_out) for take in takes]
        report(1.0, "done")
        return out

    # ---------------------------------------------------------------------------------------------- vary

    def vary(
        self,
        audio: np.ndarray,
        sample_rate: int,
        n: int,
        strength: float,
        seed: int,
        grid: Grid | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        """``n`` variations of ``audio`` ``[C, T]``, each ``[C, T]``: the first ``(1 - strength)`` of its bars
        kept, the rest regenerated as a continuation (strength 0 returns copies)."""
        if not 1 <= int(n) <= MAX_VARIATIONS:
            raise InvalidArgument(f"variations must be between 1 and {MAX_VARIATIONS}, got {n}")
        if not 0.0 <= float(strength) <= 1.0:
            raise InvalidArgument(f"strength must be between 0 and 1, got {strength}")
        report = Progress(progress)
        self.warnings = []
        if float(strength) == 0.0 or is_silent(audio):
            report(1.0, "done")
            return [np.array(audio, dtype=np.float32, copy=True) for _ in range(int(n))]
        rate = self._lm.sample_rate
        part = self._to_model(audio, sample_rate)
        bar_grid = (grid or Grid(120.0, sample_rate=rate)).with_sample_rate(rate)
        keep = conditioning.keep_bars(part.shape[-1], bar_grid, float(strength))
        plan = conditioning.plan(
            bar_grid, keep, part.shape[-1], self._lm.hop, self.windows, prompted=True, fade_in_first=True
        )
        loop = conditioning.Loop.of_bars(part, bar_grid) if grid is not None else conditioning.Loop(part)
        key = conditioning.context_key(part, rate, bar_grid)
        text = conditioning.text_prompt("", "", bar_grid.bpm, key, bar_grid.time_signature)
        sampling = self._sampling(self.temperature * (0.75 + 0.35 * float(strength)))
        takes = self._render(plan, loop, text, int(n), int(seed), sampling, part, report.sub(0.0, 0.97))
        # Bars kept before the first crossfade come from the input itself, untouched by resampling.
        first = plan.windows[0].begin
        cut = int(round(first * sample_rate / rate))
        out = []
        for take in takes:
            varied = _deliver(take, rate, sample_rate, audio.shape[0], audio.shape[-1])
            varied[:, :cut] = audio[:, :cut]
            out.append(varied)
        report(1.0, "done")
        return out

    # ------------------------------------------------------------------------------------------- helpers

    def _sampling(self, temperature: float) -> Sampling:
        from bridge.engines.musicgen.sampler import Sampling

        return Sampling(temperature=temperature, top_k=self.top_k, guidance_scale=self.guidance_scale)

    def _to_model(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """``[C, T]`` at ``sample_rate`` -> the model's channels and rate."""
        work = np.asarray(audio, dtype=np.float32)
        if work.ndim == 1:
            work = work[None]
        if self._lm.channels == 1:
            work = work.mean(axis=0, keepdims=True)
        else:
            work = conform_channels(work, self._lm.channels)
        if sample_rate != self._lm.sample_rate:
            work = resample(work, sample_rate, self._lm.sample_rate)
        return np.ascontiguousarray(work, dtype=np.float32)

    def _render(
        self,
        plan: conditioning.Plan,
        loop: conditioning.Loop | None,
        text: str,
        n: int,
        seed: int,
        sampling: Sampling,
        base: np.ndarray,
        progress: ProgressCallback,
    ) -> list[np.ndarray]:
        """Generate every window of ``plan`` ``n`` times (rows window-major, in batches of ``max_batch``) and
        stitch each variation's windows onto ``base`` ``[C, T]``."""
        from bridge.engines.musicgen.sampler import row_seed

        report = Progress(progress)
        lm = self._lm
        windows = plan.windows
        prompts = melody = None
        if loop is not None and plan.prompt > 0:
            prompts = np.stack([loop.take(w.begin - plan.prompt, w.begin) for w in windows])
        if loop is not None and lm.melody:
            melody = np.stack(
                [loop.take(w.begin - plan.prompt, w.begin + plan.generated).mean(0) for w in windows]
            )
        rows = [(k, v) for k in range(len(windows)) for v in range(n)]
        chunks = [rows[i : i + self.max_batch] for i in range(0, len(rows), self.max_batch)]
        pieces: dict[tuple[int, int], np.ndarray] = {}
        for c, chunk in enumerate(chunks):
            audio = self._generate_rows(
                [text] * len(chunk),
                prompts,
                melody,
                [k for k, _ in chunk],
                [row_seed(seed, k, v) for k, v in chunk],
                plan.frames,
                sampling,
                report.sub(c / len(chunks), (c + 1) / len(chunks)),
            )
            for row, (k, v) in enumerate(chunk):
                pieces[(k, v)] = audio[row]
        return [
            conditioning.stitch(base, [pieces[(k, v)] for k in range(len(windows))], windows)
            for v in range(n)
        ]

    def _generate_rows(
        self,
        texts: list[str],
        prompts: np.ndarray | None,
        melody: np.ndarray | None,
        rows: list[int],
        seeds: list[int],
        frames: int,
        sampling: Sampling,
        progress: ProgressCallback,
    ) -> np.ndarray:
        """One batch of rows: ``[B, C, frames * hop]``, the continuations (see :func:`.sampling.generate_rows`)."""
        from bridge.engines.musicgen.sampling import generate_rows

        return generate_rows(self._lm, texts, prompts, melody, rows, seeds, frames, sampling, progress)


def _deliver(take: np.ndarray, rate: int, sample_rate: int, channels: int, n_samples: int) -> np.ndarray:
    """A take at the model's ``rate`` -> ``[channels, n_samples]`` float32 at ``sample_rate``."""
    work = resample(take, rate, sample_rate) if rate != sample_rate else take
    work = conform_channels(work, channels)
    out = np.zeros((channels, n_samples), dtype=np.float32)
    n = min(n_samples, work.shape[-1])
    out[:, :n] = work[:, :n]
    return out


__all__ = ["MusicgenEngine", "pull"]
