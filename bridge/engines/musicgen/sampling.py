"""One batched MusicGen ``generate`` call: prompts encoded to codes, seeds, progress and cancel per token.

This module imports torch and transformers at the top: the engine imports it only when it generates.

Every row of a batch has the same prompt length and generates the same number of frames, so one call
serves all windows and variations of a request. Sampling draws from torch's global generator, so the call
runs inside :func:`seeded`, which forks the generator state (CPU and the model's GPU), seeds it, and puts the
caller's state back afterwards, even when the call is cancelled.

Two costs of transformers' ``generate`` are avoided, each only where the installed transformers has the code
it relies on (checked by reading its source), so that another version falls back to
the plain call:

- transformers 5's ``MusicgenForConditionalGeneration.generate`` runs the prompt prefill twice (its first
  result, ``generation_mode_kwargs["prefill_outputs"]``, is never read): the first run is skipped.
- Variations of one window share their prompt: the decoder runs over each distinct prompt once (both
  classifier-free-guidance halves) and ``generate`` continues from that cache, copied to every row. On CPU a
  10 s prompt's prefill costs as much as generating several seconds, once per row otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationMixin, StoppingCriteria, StoppingCriteriaList

from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.musicgen.loading import LoadedModel

_SEED_MASK = (1 << 63) - 1
PREFILL_CHUNK = 50  # prompt frames per decoder pass between progress reports (1 s at 50 Hz)
# Frames of the prompt decoded before the continuation so the codec's LSTM state settles: 25 already matched a
# decode of everything to -123 dB (full-size EnCodec, random weights); 50 (1 s) leaves room.
CODEC_WARMUP_FRAMES = 50


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn (audiocraft's defaults: top-k 250, classifier-free guidance 3)."""

    temperature: float = 1.0
    top_k: int = 250
    guidance_scale: float = 3.0


@contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Run the body with torch's generators seeded by ``seed``; the caller's generator states come back after."""
    kind = device.split(":")[0]
    devices = [torch.device(device).index or 0] if kind == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=kind if kind in ("cuda", "mps") else "cuda"):
        torch.manual_seed(int(seed) & _SEED_MASK)
        yield


class _Steps(StoppingCriteria):
    """Told every decoding step; reports progress (the callback may raise Cancelled) and never stops."""

    def __init__(self, total: int, progress: Progress) -> None:
        self.total = max(1, total)
        self.done = 0
        self.progress = progress

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        self.done += 1
        self.progress(self.done / self.total, "generate")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def encode_prompts(lm: LoadedModel, prompts: np.ndarray) -> torch.Tensor:
    """EnCodec codes of ``prompts`` ``[B, C, P]`` (P whole frames) as decoder input ids ``[B * K, P / hop]``;
    stereo models get left and right codebooks interleaved, as MusicGen's stereo models expect."""
    model = lm.model
    x = torch.from_numpy(np.ascontiguousarray(prompts, dtype=np.float32)).to(
        lm.device, _dtype(model.audio_encoder)
    )
    with torch.inference_mode():
        if lm.channels == 1:
            codes = model.audio_encoder.encode(x[:, :1]).audio_codes[0]
        else:
            left = model.audio_encoder.encode(x[:, :1]).audio_codes[0]
            right = model.audio_encoder.encode(x[:, 1:2]).audio_codes[0]
            codes = left.new_empty((left.shape[0], 2 * left.shape[1], left.shape[2]))
            codes[:, ::2], codes[:, 1::2] = left, right
    if codes.shape[1] != lm.num_codebooks:
        raise ValueError(
            f"the audio encoder gave {codes.shape[1]} codebooks, the decoder wants {lm.num_codebooks}"
        )
    ids: torch.Tensor = codes.reshape(-1, codes.shape[-1])
    return ids


@contextmanager
def decode_only_the_end(model: Any, keep: int) -> Iterator[None]:
    """Make ``generate`` decode only the last ``keep`` frames of its codes (the prompt's decoded audio is never
    used: the engine keeps the continuation), leaving silence before them so the audio keeps its length.

    ``generate`` decodes prompt and continuation together; a 10 s prompt before 2 s of new audio cost the
    codec 6 times the work, and with 4 variations it took more time than the decoder's sampling.
    """
    codec = model.audio_encoder
    decode = codec.decode

    def tail(audio_codes: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        start = max(0, audio_codes.shape[-1] - keep)
        out = decode(audio_codes[..., start:], *args, **kwargs)
        if start:
            hop = int(model.config.audio_encoder.hop_length)
            out.audio_values = torch.nn.functional.pad(out.audio_values, (start * hop, 0))
        return out

    codec.decode = tail  # an instance attribute shadows the method for this call only
    try:
        yield
    finally:
        del codec.decode


def _dtype(module: Any) -> torch.dtype:
    """The floating-point type of ``module``'s weights (the codec and the decoder may differ)."""
    dtype: torch.dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    return dtype


def _source_has(cls: type, attribute: str, text: str) -> bool:
    """Whether the source of ``cls.attribute`` contains ``text`` (a few milliseconds; read per call)."""
    try:
        return text in inspect.getsource(getattr(cls, attribute))
    except (OSError, TypeError, AttributeError):
        return False


def duplicate_prefill(model: Any) -> bool:
    """Whether this transformers' ``generate`` computes a prefill that its sampling loop never reads."""
    return _source_has(type(model), "generate", '"prefill_outputs"') and not _source_has(
        GenerationMixin, "_sample", "prefill_outputs"
    )


def can_share_prefill(lm: LoadedModel) -> bool:
    """Whether ``generate`` can continue from a prefilled cache here (cross-attention MusicGen models, and a
    transformers whose prefill skips the cached part of the input)."""
    return (
        not lm.melody
        and _source_has(
            GenerationMixin, "_prefill", "next_sequence_length = input_ids.shape[1] - past_length"
        )
        and _source_has(type(lm.model), "prepare_inputs_for_generation", "next_sequence_length")
    )


@contextmanager
def without_duplicate_prefill(model: Any) -> Iterator[None]:
    """Within the body, a ``generate`` call skips the prefill whose result it never reads (when this
    transformers has that waste, see :func:`duplicate_prefill`; otherwise nothing changes)."""
    if not duplicate_prefill(model):
        yield
        return
    real = model._prefill
    calls = 0

    def prefill(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return None if calls == 1 else real(*args, **kwargs)

    model._prefill = prefill  # an instance attribute over the class's method, removed below
    try:
        yield
    finally:
        del model._prefill


def _shared_prefill(
    lm: LoadedModel,
    inputs: dict[str, Any],
    codes: torch.Tensor,
    rows: list[int],
    steps: int,
    guidance: float,
    progress: Progress,
) -> None:
    """Prefill each distinct prompt once, in chunks of :data:`PREFILL_CHUNK` frames with ``progress(fraction,
    "prompt")`` between them, and give ``generate`` the cache, copied to every row.

    ``codes`` are the prompts' codes ``[W, K, F]`` (``rows`` index them); ``inputs`` (the ``generate`` keyword
    arguments) gain ``past_key_values`` and the full-length ``decoder_attention_mask`` that make it feed only
    the last prompt step.
    """
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    model = lm.model
    present = sorted(set(rows))
    local = [present.index(r) for r in rows]
    codes = codes[torch.as_tensor(present, device=codes.device)]
    distinct, k, frames = codes.shape
    bos = int(model.generation_config.decoder_start_token_id)
    start = torch.full((distinct * k, 1), bos, dtype=codes.dtype, device=codes.device)
    ids = torch.cat([start, codes.reshape(distinct * k, frames)], dim=-1)
    delayed, _ = model.decoder.build_delay_pattern_mask(ids, pad_token_id=bos, max_length=frames + 1 + steps)
    first = [rows.index(w) for w in present]
    text = model.text_encoder(
        input_ids=inputs["input_ids"][first], attention_mask=inputs["attention_mask"][first]
    ).last_hidden_state
    mask = inputs["attention_mask"][first]
    feed = delayed[:, :frames]
    select = torch.as_tensor(local, device=codes.device)
    if guidance > 1.0:
        text, mask = torch.cat([text, torch.zeros_like(text)]), torch.cat([mask, torch.zeros_like(mask)])
        feed = feed.repeat(2, 1)
        select = torch.cat([select, select + distinct])
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for begin in range(0, frames, PREFILL_CHUNK):
        model(
            encoder_outputs=BaseModelOutput(last_hidden_state=text),
            attention_mask=mask,
            decoder_input_ids=feed[:, begin : begin + PREFILL_CHUNK],
            past_key_values=cache,
            use_cache=True,
        )
        progress(min(frames, begin + PREFILL_CHUNK) / frames, "prompt")
    cache.batch_select_indices(select)
    index = select[: len(rows)]
    inputs["decoder_input_ids"] = ids.reshape(distinct, k, -1)[index].reshape(len(rows) * k, -1)
    inputs["decoder_attention_mask"] = torch.ones(
        (len(rows), frames + 1), dtype=torch.long, device=codes.device
    )
    inputs["past_key_values"] = cache


def melody_chroma(audio: np.ndarray, lm: LoadedModel) -> np.ndarray:
    """MusicGen-melody's chroma of mono ``audio`` ``[B, L]``: ``[B, frames, 12]``, one-hot on each frame's
    strongest pitch class (the model's feature extractor, without its torchaudio dependency)."""
    from transformers.audio_utils import chroma_filter_bank

    params = lm.chroma or {}
    n_fft = int(params.get("n_fft", 16384))
    hop = int(params.get("hop_length", 4096))
    n_chroma = int(params.get("num_chroma", 12))
    x = np.asarray(audio, dtype=np.float64)[:, : int(params.get("chunk_length", 30)) * lm.sample_rate]
    if x.shape[-1] < n_fft:
        short = n_fft - x.shape[-1]
        x = np.pad(x, ((0, 0), (short // 2, short - short // 2)))
    x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [B, frames, bins]
    filters = chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=n_chroma, sampling_rate=lm.sample_rate)
    raw = power @ filters.T  # [B, frames, chroma]
    onehot = np.zeros(raw.shape, dtype=np.float32)
    np.put_along_axis(onehot, raw.argmax(axis=-1)[..., None], 1.0, axis=-1)
    return onehot


def generate_rows(
    lm: LoadedModel,
    texts: list[str],
    prompts: np.ndarray | None,
    melody: np.ndarray | None,
    rows: list[int],
    frames: int,
    sampling: Sampling,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Generate ``frames`` frames after each row's prompt in one ``model.generate`` call.

    Rows share prompts (the variations of one window): each distinct prompt is encoded once.

    Args:
        texts: one description per row.
        prompts: ``[W, C, P]`` distinct audio prompts at the model's rate, ``P`` a whole number of frames;
            or ``None``.
        melody: ``[W, L]`` mono audio whose chroma conditions melody models (``None``: no chroma).
        rows: for each row, the index of its prompt (and melody) in ``prompts``.
        frames: frames to generate after the prompt.

    Returns:
        ``[len(rows), channels, P + frames * hop]`` float32: the continuation after ``P`` samples that hold only
        the decoded end of the prompt (its last :data:`CODEC_WARMUP_FRAMES` frames; silence before them).
    """
    report = Progress(progress)
    model = lm.model
    tokens = lm.tokenizer(texts, padding=True, return_tensors="pt")
    inputs: dict[str, Any] = {
        "input_ids": tokens["input_ids"].to(lm.device),
        "attention_mask": tokens["attention_mask"].to(lm.device),
    }
    index = torch.as_tensor(rows, dtype=torch.long)
    # The delay pattern holds codebook k back by k steps: the last frame is complete `delay` steps later.
    delay = lm.num_codebooks // lm.channels - 1
    steps = frames + delay
    prompt_frames = 0
    with (
        torch.inference_mode(),
        without_duplicate_prefill(model),
        decode_only_the_end(model, frames + CODEC_WARMUP_FRAMES),
    ):
        if prompts is not None and prompts.shape[-1] > 0:
            codes = encode_prompts(lm, prompts).reshape(prompts.shape[0], lm.num_codebooks, -1)
            prompt_frames = prompts.shape[-1] // lm.hop
            if can_share_prefill(lm):
                _shared_prefill(lm, inputs, codes, rows, steps, sampling.guidance_scale, report.sub(0.0, 0.2))
            else:
                inputs["decoder_input_ids"] = codes[index.to(codes.device)].reshape(-1, codes.shape[-1])
        if melody is not None and lm.melody:
            chroma = torch.from_numpy(melody_chroma(melody, lm))[index]
            proj = getattr(model, "audio_enc_to_dec_proj", model.decoder)
            inputs["input_features"] = chroma.to(lm.device, _dtype(proj))
        out = model.generate(
            **inputs,
            max_new_tokens=steps,
            do_sample=True,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            guidance_scale=sampling.guidance_scale,
            stopping_criteria=StoppingCriteriaList(
                [_Steps(steps, report.sub(0.2 if prompt_frames else 0.0, 1.0))]
            ),
        )
    audio = out.float().cpu().numpy()
    want = (prompt_frames + frames) * lm.hop
    if audio.shape[-1] < want:
        audio = np.pad(audio, ((0, 0), (0, 0), (0, want - audio.shape[-1])))
    report(1.0, "generate")
    return np.ascontiguousarray(audio[..., :want], dtype=np.float32)
