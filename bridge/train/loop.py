"""The training run: data, model, the loop, validation, checkpoints, samples and the result (torch).

:func:`train` takes one :class:`TrainSettings` and leaves ``<models-dir>/<name>/`` holding the merged
weights (the format the musicgen engine loads), ``card.json``, ``samples/`` and ``training/`` (the newest
checkpoints); the codec tokens of the songs are cached in ``<models-dir>/.train-cache/``.

Every step is reproducible on its own: its batch is drawn from a generator seeded by ``(seed, step, micro)``,
its dropout runs under torch's generator seeded the same way, and its learning rate is a function of the
step. A run resumed from the checkpoint of step ``n`` therefore reaches the same weights as a straight run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bridge import __version__
from bridge.audio.timing import TimeSignature
from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.musicgen import loading
from bridge.engines.musicgen.sampler import row_seed, seeded
from bridge.engines.precision import pick_precision
from bridge.errors import InvalidArgument
from bridge.train import checkpoints, examples, objective, setup, songs, tokens
from bridge.train.batches import Pool
from bridge.train.export import export, merged
from bridge.train.samples import write_samples
from bridge.train.settings import AVERAGED, TrainResult, TrainSettings

_log = logging.getLogger(__name__)


def _check_target(folder: Path, work: Path, resume: bool) -> bool:
    """Whether the run resumes from a checkpoint in ``work`` (else it starts fresh), or an error when the name
    is taken."""
    newest = checkpoints.latest(work)
    finished = loading.is_transformers_dir(folder)
    if resume:
        if finished:
            raise InvalidArgument(
                f"{folder.name!r} in {folder.parent} is finished; nothing to resume (train under another --name)"
            )
        if newest is None:
            raise InvalidArgument(f"nothing to resume: no checkpoint in {work}; run without --resume")
        return True
    if finished:
        raise InvalidArgument(
            f"a model named {folder.name!r} exists in {folder.parent}; choose another --name"
        )
    if newest is not None:
        raise InvalidArgument(
            f"{folder.name!r} has an unfinished training in {work}; continue it with --resume, or choose another --name"
        )
    return False


def _separator(settings: TrainSettings, device: str) -> Callable[[Any, int], dict[str, Any]]:
    """Separation of mixes with the best separation engine here (loaded on first use)."""
    engine: list[Any] = []

    def separate(mix: Any, rate: int) -> dict[str, Any]:
        from bridge.engines.base import load_engine

        if not engine:
            engine.append(load_engine("auto", "separate", models_dir=settings.models_dir, device=device))
        sep = engine[0]
        return dict(sep.separate(mix, rate, list(sep.separate_stems)))

    return separate


def _encode_all(
    lm: loading.LoadedModel, chosen: list[songs.Song], settings: TrainSettings, device: str
) -> list[tokens.Encoded]:
    cache = settings.models_dir / ".train-cache"
    separate = _separator(settings, device)
    ts = TimeSignature.parse(settings.time_signature)
    shape = {"stem": settings.stem, "bars": settings.bars, "tags": settings.tags, "ts": str(ts)}
    out = []
    for song in chosen:

        def make(song: songs.Song = song) -> tokens.Encoded:
            audio = songs.load(song, settings.stem, lm.sample_rate, lm.channels, ts, separate)
            bars = settings.bars or examples.default_bars(audio.grid, lm.hop)
            return tokens.encode(
                lm, song.name, examples.segments(audio, bars, settings.stem, settings.tags, lm.hop)
            )

        out.append(tokens.cached(cache, tokens.song_key(song, lm, shape), make))
    return out


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast where the hardware has it (a CUDA GPU that supports it, or the CPU's precision
    choice), else nothing."""
    kind = device.split(":")[0]
    if kind == "cuda":
        on = torch.cuda.is_bf16_supported() and precision != "float32"
    else:
        on = kind == "cpu" and precision == "bfloat16"
    return torch.autocast(device_type=kind, dtype=torch.bfloat16) if on else contextlib.nullcontext()


class _Run:
    """The state of one run between steps."""

    def __init__(
        self,
        settings: TrainSettings,
        lm: loading.LoadedModel,
        trainable: setup.Trainable,
        train: Pool,
        val: Pool,
        precision: str,
    ) -> None:
        self.s, self.lm, self.trainable, self.train, self.val = settings, lm, trainable, train, val
        self.precision = precision
        self.opt = setup.optimizer(trainable, settings.peak_rate, settings.weight_decay)
        self.state = checkpoints.State(settings=settings.fingerprint())

    def loss(self, pool: Pool, indices: list[int]) -> torch.Tensor:
        with _autocast(self.lm.device, self.precision):
            parts = [
                weight * objective.loss(self.lm.model, self.lm.melody, self.lm.channels, batch)
                for weight, batch in pool.batches(indices, self.lm.tokenizer, self.lm.device)
            ]
        return torch.stack(parts).sum()

    def micro(self, step: int, micro: int) -> float:
        """Forward and backward of one micro-batch; its loss."""
        s = self.s
        indices = self.train.draw(s.batch_size, s.seed, step, micro)
        with seeded(row_seed(s.seed, step, micro), self.lm.device):
            loss = self.loss(self.train, indices)
            (loss / s.accumulate).backward()  # type: ignore[no-untyped-call]
        return float(loss.detach())

    def step(self, step: int) -> float:
        s = self.s
        rate = setup.learning_rate(step, s.steps, s.warmup_steps, s.peak_rate)
        for group in self.opt.param_groups:
            group["lr"] = rate
        total = sum(self.micro(step, m) for m in range(s.accumulate)) / s.accumulate
        torch.nn.utils.clip_grad_norm_(list(self.trainable.params.values()), s.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total

    def validate(self) -> float:
        model = self.lm.model
        model.eval()
        try:
            with torch.no_grad():
                size = self.s.batch_size
                chunks = [list(range(i, min(len(self.val), i + size))) for i in range(0, len(self.val), size)]
                total = sum(float(self.loss(self.val, c)) * len(c) for c in chunks)
        finally:
            model.train()
        return total / len(self.val)

    def snapshot(self) -> checkpoints.State:
        self.state.weights = {n: p.detach().cpu().clone() for n, p in self.trainable.params.items()}
        self.state.optimizer = self.opt.state_dict()
        return self.state

    def restore(self, state: checkpoints.State) -> None:
        with torch.no_grad():
            for name, p in self.trainable.params.items():
                p.copy_(state.weights[name].to(p.device))
        self.opt.load_state_dict(state.optimizer)
        self.state = state

    def measure(self) -> float:
        """Seconds one optimiser step takes (one real forward and backward per micro-batch, weights kept)."""
        began = time.perf_counter()
        self.micro(1 << 30, 0)  # a key no step uses
        self.opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - began) * self.s.accumulate


@contextlib.contextmanager
def _training(model: Any) -> Iterator[None]:
    model.train()
    try:
        yield
    finally:
        model.eval()


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def train(
    settings: TrainSettings,
    progress: ProgressCallback | None = None,
    say: Callable[[str], None] = lambda _text: None,
    warn: Callable[[str], None] = _log.warning,
) -> TrainResult:
    """Train, checkpoint, validate and sample as ``settings`` say; export the result.

    ``say`` gets what the run is doing (the estimate, where it resumes), ``warn`` what went wrong on the way
    (a checkpoint that could not be read and was skipped).

    Raises:
        InvalidArgument: bad settings, bad data (:class:`.songs.DataError`), a taken name, nothing to resume.
        ModelNotFound: the base model is not here.
        OutOfMemory: the run cannot fit on the device (the message says what to change).
    """
    settings.check()
    report = Progress(progress)
    folder = settings.models_dir.expanduser() / settings.name
    work = folder / "training"
    resuming = _check_target(folder, work, settings.resume)
    device = loading.pick_device(settings.device)
    precision = pick_precision(settings.precision, device)
    all_songs = songs.discover(settings.data, settings.stem)
    train_songs, val_songs = songs.split(all_songs, settings.val_songs, settings.seed)
    report(0.0, "load")
    source = loading.resolve(settings.base, settings.models_dir, allow_download=settings.allow_download)
    lm = loading.load(source, device)
    if lm.folder is None:  # checked now, not after the whole run
        raise InvalidArgument(
            f"the base model {settings.base!r} has no folder to copy its processor files from"
        )
    lm.model.float()  # the loader gives CUDA half precision for inference; AdamW needs float32 weights
    report(0.02, "encode")
    train_pool = Pool(_encode_all(lm, train_songs, settings, device))
    val_pool = Pool(_encode_all(lm, val_songs, settings, device))
    trainable = setup.make_trainable(lm.model, settings.lora, settings.rank, settings.seed)
    run = _Run(settings, lm, trainable, train_pool, val_pool, precision)
    length = train_pool.sequence_length() + 1
    estimate = setup.Estimate(
        setup.peak_memory(lm.model, trainable, settings.batch_size, length), setup.available_memory(device)
    )
    setup.check_fits(estimate, settings.lora, settings.batch_size)
    if resuming:
        resume_from, state = checkpoints.load_newest(work, settings.fingerprint(), warn)
        run.restore(state)
        say(f"resuming from step {run.state.step} ({resume_from})")
    with _training(lm.model):
        per_step = run.measure()
        left = settings.steps - run.state.step
        say(
            describe_run(train_pool, val_pool)
            + "; "
            + setup.describe(
                setup.Estimate(estimate.peak_bytes, estimate.available_bytes, per_step), left, device
            )
        )
        began, first = time.monotonic(), run.state.step
        for step in range(run.state.step, settings.steps):
            run.state.train_losses.append(run.step(step))
            done = run.state.step = step + 1
            if len(val_pool) and _due(done, settings.val_every, settings.steps):
                run.state.val_losses.append((done, run.validate()))
            if settings.samples and _due(done, settings.sample_every, settings.steps):
                pool = val_pool if len(val_pool) else train_pool
                made = write_samples(lm, pool, settings.samples, done, settings.seed, folder / "samples")
                run.state.samples += [str(p) for p in made if str(p) not in run.state.samples]
            if _due(done, settings.checkpoint_every, settings.steps):
                checkpoints.save(work, run.snapshot())
            elapsed = time.monotonic() - began
            eta = elapsed / (done - first) * (settings.steps - done)
            recent = run.state.train_losses[-AVERAGED:]
            report(
                0.05 + 0.9 * done / settings.steps,
                f"step {done}/{settings.steps} loss {sum(recent) / len(recent):.3f} eta {_clock(eta)}",
            )
    result = _result(folder, run.state)
    report(0.96, "export")
    model = merged(lm.model, trainable.peft_model)
    assert lm.folder is not None  # checked after loading, before any training
    export(
        model,
        lm.folder,
        folder,
        _card(settings, source.name, lm.sample_rate, all_songs, train_pool, val_pool, result),
    )
    report(1.0, "done")
    return result


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def describe_run(train: Pool, val: Pool) -> str:
    return (
        f"{len(train)} segments of {len(train.songs)} songs to train on, "
        f"{len(val)} of {len(val.songs)} held out"
    )


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def _result(folder: Path, state: checkpoints.State) -> TrainResult:
    losses = state.train_losses
    return TrainResult(
        path=folder,
        steps=state.step,
        train_loss_first=_mean(losses[:AVERAGED]),
        train_loss_last=_mean(losses[-AVERAGED:]),
        val_loss_last=state.val_losses[-1][1] if state.val_losses else None,
        samples=list(state.samples),
    )


def _card(
    settings: TrainSettings,
    base: str,
    rate: int,
    all_songs: list[songs.Song],
    train: Pool,
    val: Pool,
    result: TrainResult,
) -> dict[str, Any]:
    return {
        "name": settings.name,
        "base": base,
        "stem": settings.stem,
        "tags": settings.tags,
        "data": {
            "paths": [str(p) for p in settings.data],
            "songs": len(all_songs),
            "train_songs": [s.song for s in train.songs],
            "validation_songs": [s.song for s in val.songs],
            "train_segments": len(train),
            "validation_segments": len(val),
            "segment_seconds": sorted({round(s.samples / rate, 3) for s in train.songs}),
        },
        "training": {
            "mode": "lora" if settings.lora else "full",
            "lora_rank": settings.rank if settings.lora else None,
            "steps": result.steps,
            "batch_size": settings.batch_size,
            "accumulate": settings.accumulate,
            "learning_rate": settings.peak_rate,
            "warmup": settings.warmup_steps,
            "seed": settings.seed,
        },
        "steps": result.steps,
        "train_loss_first": result.train_loss_first,
        "train_loss_last": result.train_loss_last,
        "val_loss_last": result.val_loss_last,
        "samples": [str(Path(p).relative_to(result.path)) for p in result.samples],
        "command": settings.command,
        "stembridge": __version__,
    }
