"""MusicGen generation for the engine: prompts encoded to codes, our decoding loop (:mod:`.decoding`), codes
decoded to audio. torch and transformers are imported at the top: the engine imports this module only when it
generates.

Every row of a call has the same prompt length and generates the same number of frames, so one call serves all
windows and variations of a request. Rows that share a text and a prompt (the variations of one window) share
the decoder's pass over the prompt. Each row draws from its own generator, seeded by the caller, so a row's take
does not depend on the batch it ran in.

Only the end of the prompt is decoded with the continuation: the codec needs a little of what came before to
settle (:data:`CODEC_WARMUP_FRAMES`), and the prompt's own audio is never used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.musicgen.decoding import Conditions, Decoder
from bridge.engines.musicgen.loading import LoadedModel
from bridge.engines.musicgen.sampler import Sampling

# Frames of the prompt decoded before the continuation so the codec's LSTM state settles: 25 already matched a
# decode of everything to -123 dB (full-size EnCodec, random weights); 50 (1 s) leaves room.
CODEC_WARMUP_FRAMES = 50


def encode_prompts(lm: LoadedModel, prompts: np.ndarray) -> torch.Tensor:
    """EnCodec codes of ``prompts`` ``[B, C, P]`` (P whole frames) as decoder input ids ``[B * K, P / hop]``;
    stereo models get left and right codebooks interleaved, as MusicGen's stereo models expect."""
    model = lm.model
    x = torch.from_numpy(np.ascontiguousarray(prompts, dtype=np.float32)).to(
        lm.device, next(model.audio_encoder.parameters()).dtype
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


def decode_codes(lm: LoadedModel, codes: torch.Tensor) -> torch.Tensor:
    """``[R, K, n]`` codes -> ``[R, channels, n * hop]`` float32 audio (stereo: left and right codebooks
    interleaved, each channel decoded on its own)."""
    codec = lm.model.audio_encoder
    scales = [None] * codes.shape[0]
    groups = [codes] if lm.channels == 1 else [codes[:, 0::2], codes[:, 1::2]]
    audio = [codec.decode(group[None], audio_scales=scales).audio_values for group in groups]
    return torch.cat(audio, dim=1).float()


def generate_rows(
    lm: LoadedModel,
    texts: Sequence[str],
    prompts: np.ndarray | None,
    melody: np.ndarray | None,
    rows: Sequence[int],
    seeds: Sequence[int],
    frames: int,
    sampling: Sampling,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Generate ``frames`` frames after each row's prompt.

    Args:
        texts: one description per row.
        prompts: ``[W, C, P]`` distinct audio prompts at the model's rate, ``P`` a whole number of frames;
            or ``None``.
        melody: ``[W, L]`` mono audio whose chroma conditions melody models (``None``: no chroma).
        rows: for each row, the index of its prompt (and melody) in ``prompts``.
        seeds: for each row, the seed of its sampling (see :func:`.sampler.row_seed`).
        frames: frames to generate after the prompt.

    Returns:
        ``[len(rows), channels, frames * hop]`` float32: the continuation alone.
    """
    report = Progress(progress)
    if len(texts) != len(rows) or len(seeds) != len(rows):
        raise ValueError(f"{len(rows)} rows need as many texts and seeds, got {len(texts)} and {len(seeds)}")
    keys = list(zip(texts, rows, strict=True))
    distinct = list(dict.fromkeys(keys))
    units = [distinct.index(key) for key in keys]
    # only the prompts (and melodies) this batch's rows use are encoded, each once
    used = sorted({w for _, w in distinct})
    windows = [used.index(w) for _, w in distinct]
    tokens = lm.tokenizer([t for t, _ in distinct], padding=True, return_tensors="pt")
    with torch.inference_mode():
        chroma = None
        if melody is not None and lm.melody:
            chroma = torch.from_numpy(melody_chroma(melody[used], lm))[windows]
        cond = Conditions(tokens["input_ids"].to(lm.device), tokens["attention_mask"].to(lm.device), chroma)
        if prompts is not None and prompts.shape[-1] > 0:
            encoded = encode_prompts(lm, prompts[used]).reshape(len(used), lm.num_codebooks, -1)
            codes = encoded[torch.as_tensor(windows, device=encoded.device)]
        else:
            codes = torch.zeros((len(distinct), lm.num_codebooks, 0), dtype=torch.long, device=lm.device)
        decoder = Decoder(lm.model, lm.melody, lm.channels, sampling)
        made = decoder.run(cond, codes, units, seeds, frames, report.sub(0.0, 0.97))
        unit = torch.as_tensor(units, device=codes.device)
        warmup = codes[unit, :, codes.shape[-1] - min(codes.shape[-1], CODEC_WARMUP_FRAMES) :]
        audio = decode_codes(lm, torch.cat([warmup.to(made.device), made], dim=-1))
    start, want = warmup.shape[-1] * lm.hop, frames * lm.hop
    out = audio[..., start : start + want].cpu().numpy()
    if out.shape[-1] < want:
        out = np.pad(out, ((0, 0), (0, 0), (0, want - out.shape[-1])))
    report(1.0, "generate")
    return np.ascontiguousarray(out, dtype=np.float32)
