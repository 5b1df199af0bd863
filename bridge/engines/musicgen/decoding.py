"""MusicGen's decoding loop, written over the model's public forward pass (torch and transformers at the top).

transformers' ``generate`` is a general machine whose internals move between releases (5.25 renamed the cache
argument and rejected the cache our earlier version handed it); what MusicGen needs is a few dozen lines:

- **The delay pattern.** The decoder predicts one token per codebook per step; codebook ``k`` runs ``k`` steps
  behind the first (stereo models interleave left and right codebooks, which share a delay), so frame ``f`` of
  codebook ``k`` sits at position ``f + 1 + delay(k)`` after a start token. Positions before a codebook's first
  frame or after its last hold the start token, and positions holding prompt frames are forced to the prompt's
  codes: only the rest is sampled. A take of ``F`` frames after a prompt of ``P`` costs ``F + delay`` steps.
- **Classifier-free guidance.** Conditional and unconditional rows run as one batch (the unconditional half
  sees zeroed text, and the melody models a null chroma); the logits are ``u + (c - u) * scale``.
- **Sampling.** Temperature, then the top-k tokens, drawn from one ``torch.Generator`` per row: a row's tokens
  depend only on its seed, not on the other rows of the batch, and torch's global generator is never touched.
  ``top_k=1`` is greedy decoding (no draw).
- **One prefill per distinct prompt.** The rows that share a text and an audio prompt (the variations of one
  window) share the decoder's pass over that prompt: it runs once, in chunks with progress and cancel between
  them, and its key/value cache is copied to each row (transformers' public cache classes).
- **Teacher forcing** (:meth:`Decoder.logits`): the same conditioning over a whole known sequence in one
  pass, which training's loss is computed on (:mod:`bridge.train.objective`).
- **Melody models** take the chroma and the text as a prefix of the decoder's input on the first pass (it then
  lives in the cache); the other models attend to the text through cross-attention, whose keys and values are
  computed once and cached.

Everything here takes and returns tensors; the caller (:mod:`.sampling`) encodes prompts and decodes codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from bridge.engines.base import Progress
from bridge.engines.musicgen.sampler import Sampling

PREFILL_CHUNK = 50  # prompt frames per decoder pass between progress reports (1 s at 50 Hz)


@dataclass(frozen=True)
class Conditions:
    """What the decoder is conditioned on, one entry per *unit* (a distinct text and prompt).

    Attributes:
        input_ids: ``[U, T]`` text token ids.
        attention_mask: ``[U, T]`` their mask.
        chroma: ``[U, frames, 12]`` one-hot chroma for melody models (``None``: the model's null chroma).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    chroma: torch.Tensor | None = None


class DelayPattern:
    """Where each codebook's frames sit in the decoder's sequence.

    Args:
        num_codebooks: ``K``, all codebooks (both channels of a stereo model).
        channels: 1, or 2 for stereo models (left and right codebooks interleaved, sharing delays).
        prompt: ``P``, prompt frames.
        frames: ``F``, frames to generate after them.
        start: the start (and padding) token.
    """

    def __init__(self, num_codebooks: int, channels: int, prompt: int, frames: int, start: int) -> None:
        self.k, self.prompt, self.frames, self.start = num_codebooks, prompt, frames, start
        self.delays = torch.arange(num_codebooks) // channels
        self.max_delay = int(self.delays.max())
        self.length = 1 + prompt + frames + self.max_delay  # start token, frames, the last codebook's lag

    @property
    def steps(self) -> int:
        """Decoding steps after the prefill: one per position after the prompt's first one."""
        return self.frames + self.max_delay

    def frame_at(self, position: int) -> torch.Tensor:
        """``[K]``: the frame index each codebook holds at ``position`` (negative before its first)."""
        return position - 1 - self.delays

    def sequence(self, codes: torch.Tensor) -> torch.Tensor:
        """``[N, K, P]`` prompt codes -> ``[N, K, length]`` ids: the start token, the delayed prompt, and start
        tokens where nothing is known yet (positions after the prompt are overwritten as they are decoded)."""
        n = codes.shape[0]
        seq = torch.full((n, self.k, self.length), self.start, dtype=torch.long, device=codes.device)
        for k in range(self.k):
            d = int(self.delays[k])
            seq[:, k, 1 + d : 1 + d + self.prompt] = codes[:, k]
        return seq

    def forced(self, position: int, device: torch.device) -> torch.Tensor:
        """``[K]`` bool: which codebooks' tokens at ``position`` are fixed (a prompt frame, or padding before
        the first frame or after the last) rather than sampled."""
        f = self.frame_at(position)
        return ((f < self.prompt) | (f >= self.prompt + self.frames)).to(device)

    def generated(self, seq: torch.Tensor) -> torch.Tensor:
        """``[N, K, length]`` -> ``[N, K, F]``: the generated frames, undelayed."""
        first = 1 + self.prompt
        return torch.stack(
            [seq[:, k, first + int(d) : first + int(d) + self.frames] for k, d in enumerate(self.delays)],
            dim=1,
        )


def _dtype(module: Any) -> torch.dtype:
    """The floating-point type of ``module``'s weights."""
    dtype: torch.dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    return dtype


def _guided(tensor: torch.Tensor, guided: bool) -> torch.Tensor:
    """``[U, ...]`` conditional rows -> ``[2U, ...]`` with the unconditional (zeroed) rows after them."""
    return torch.cat([tensor, torch.zeros_like(tensor)]) if guided else tensor


class Decoder:
    """One decoding run of MusicGen (cross-attention) or MusicGen-melody (prefix) over ``R`` rows.

    Args:
        model: a ``MusicgenForConditionalGeneration`` or ``MusicgenMelodyForConditionalGeneration``, in eval
            mode.
        melody: whether ``model`` is a melody model.
        channels: the model's audio channels (1 or 2).
        sampling: temperature, top-k and guidance.
    """

    def __init__(self, model: Any, melody: bool, channels: int, sampling: Sampling) -> None:
        self.model, self.melody, self.channels, self.sampling = model, melody, channels, sampling
        self.k = int(model.decoder.config.num_codebooks)
        self.start = int(model.decoder.config.bos_token_id)
        self.device = next(model.decoder.parameters()).device
        self.cache: Any = None
        self._text: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------ conditioning

    def _text_states(self, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
        """The text encoder's states ``[U, T, D]`` and mask for the conditional rows."""
        states = self.model.text_encoder(
            input_ids=cond.input_ids, attention_mask=cond.attention_mask
        ).last_hidden_state
        return states, cond.attention_mask

    def _melody_prefix(self, cond: Conditions) -> torch.Tensor:
        """MusicGen-melody's conditioning prefix ``[2U or U, chroma_length + T, D]``: projected chroma, then
        the projected text (zeroed where masked); the unconditional rows get zero text and the null chroma."""
        model, guided = self.model, self.sampling.guided
        text, mask = self._text_states(cond)
        if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size:
            text = model.enc_to_dec_proj(text)
        text = _guided(text, guided) * _guided(mask, guided)[..., None]
        proj = model.audio_enc_to_dec_proj
        units = cond.input_ids.shape[0]
        null = torch.zeros((units, 1, int(model.config.num_chroma)), device=self.device, dtype=_dtype(proj))
        null[..., 0] = 1
        chroma = null if cond.chroma is None else cond.chroma.to(self.device, _dtype(proj))
        if guided:
            chroma = torch.cat([chroma, null.expand(-1, chroma.shape[1], -1)])
        audio = chroma
        if model.config.num_chroma != model.decoder.config.hidden_size:
            audio = proj(audio)
        length = int(model.config.chroma_length)
        if audio.shape[1] < length:
            audio = audio.repeat(1, math.ceil(length / audio.shape[1]), 1)
        return torch.cat([audio[:, :length], text.to(audio.dtype)], dim=1)

    # ------------------------------------------------------------------------------------------ forward

    def _forward(self, ids: torch.Tensor, first: bool) -> torch.Tensor:
        """Run the decoder over ``ids`` ``[B, K, n]`` (``B`` = all rows, both guidance halves) and return the
        last position's logits ``[B, K, vocab]``, extending :attr:`cache`."""
        flat = ids.reshape(-1, ids.shape[-1])
        if self.melody:
            out = self.model(
                decoder_input_ids=flat,
                encoder_hidden_states=self._text["prefix"] if first else None,
                cache=self.cache,
                use_cache=True,
            )
        else:
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=self._text["states"]),
                attention_mask=self._text["mask"],
                decoder_input_ids=flat,
                cache=self.cache,
                use_cache=True,
            )
        logits: torch.Tensor = out.logits[:, -1].float()
        return logits.reshape(ids.shape[0], self.k, -1)

    def logits(self, cond: Conditions, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[U, K, n, vocab]`` of ``ids`` ``[U, K, n]`` (one row per unit, without
        guidance) in one pass without a cache: what training computes its loss on, conditioned exactly as
        :meth:`run` conditions the first pass."""
        if self.sampling.guided:
            raise ValueError("teacher forcing takes a decoder without guidance (guidance_scale 1)")
        flat = ids.reshape(-1, ids.shape[-1])
        if self.melody:
            out = self.model(
                decoder_input_ids=flat, encoder_hidden_states=self._melody_prefix(cond), use_cache=False
            )
        else:
            states, mask = self._text_states(cond)
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=mask,
                decoder_input_ids=flat,
                use_cache=False,
            )
        n = ids.shape[-1]
        logits: torch.Tensor = out.logits[:, -n:]  # melody models also return the prefix's positions
        return logits.reshape(ids.shape[0], self.k, n, -1)

    def _condition(self, cond: Conditions) -> None:
        guided = self.sampling.guided
        if self.melody:
            self._text = {"prefix": self._melody_prefix(cond)}
            self.cache = DynamicCache()
        else:
            states, mask = self._text_states(cond)
            self._text = {"states": _guided(states, guided), "mask": _guided(mask, guided)}
            self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def _select(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` of the cache and of the conditioning (rows may repeat)."""
        self.cache.batch_select_indices(index)
        # a melody model's prefix lives in the cache after the first pass
        self._text = {name: t[index] for name, t in self._text.items() if name != "prefix"}

    # ------------------------------------------------------------------------------------------ sampling

    def _draw(self, logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """``[R, K, vocab]`` guided logits -> ``[R, K]`` tokens."""
        s = self.sampling
        if s.top_k == 1:
            return logits.argmax(-1)
        logits = logits / s.temperature
        if 0 < s.top_k < logits.shape[-1]:
            values, indices = logits.topk(s.top_k, dim=-1)
        else:
            values, indices = logits, None
        probs = values.softmax(-1)
        picks = torch.stack(
            [torch.multinomial(probs[r], 1, generator=g)[:, 0] for r, g in enumerate(generators)]
        )
        return picks if indices is None else indices.gather(-1, picks[..., None])[..., 0]

    def _guide(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.sampling.guided:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + (cond - uncond) * self.sampling.guidance_scale

    # -------------------------------------------------------------------------------------------- run

    def run(
        self,
        cond: Conditions,
        codes: torch.Tensor,
        units: Sequence[int],
        seeds: Sequence[int],
        frames: int,
        progress: Progress,
    ) -> torch.Tensor:
        """Decode ``frames`` frames for each row.

        Args:
            cond: the conditioning of each unit (a distinct text and prompt), ``U`` entries.
            codes: ``[U, K, P]`` each unit's prompt codes (``P`` may be 0).
            units: for each of the ``R`` rows, the index of its unit.
            seeds: for each row, the seed of its generator.
            frames: frames to generate after the prompt.
            progress: told ``(fraction, "prompt")`` between prefill chunks and ``(fraction, "generate")``
                after each step; it may raise ``Cancelled``.

        Returns:
            ``[R, K, frames]`` the generated codes.
        """
        n_units = codes.shape[0]
        pattern = DelayPattern(self.k, self.channels, codes.shape[-1], frames, self.start)
        prompt = pattern.sequence(codes.to(self.device))
        self._condition(cond)
        guided = self.sampling.guided
        halves = 2 if guided else 1
        # prefill: positions 0..P of each unit, both guidance halves, in chunks
        feed = prompt[:, :, : 1 + pattern.prompt].repeat(halves, 1, 1)
        prefill = progress.sub(0.0, 0.2 if pattern.prompt else 0.0)
        total = feed.shape[-1]
        for begin in range(0, total, PREFILL_CHUNK):
            logits = self._forward(feed[:, :, begin : begin + PREFILL_CHUNK], first=begin == 0)
            prefill(min(total, begin + PREFILL_CHUNK) / total, "prompt")
        # each row takes its unit's cache (and text), both halves
        unit = torch.as_tensor(list(units), dtype=torch.long, device=self.device)
        index = torch.cat([unit + h * n_units for h in range(halves)])
        self._select(index)
        logits = logits[index]
        seq = prompt[unit]
        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        steps = progress.sub(0.2 if pattern.prompt else 0.0, 1.0)
        position = 1 + pattern.prompt
        for step in range(pattern.steps):
            tokens = self._draw(self._guide(logits), generators)
            forced = pattern.forced(position, self.device)
            seq[:, :, position] = torch.where(forced, seq[:, :, position], tokens)
            steps((step + 1) / pattern.steps, "generate")
            position += 1
            if step + 1 < pattern.steps:
                logits = self._forward(seq[:, :, position - 1 : position].repeat(halves, 1, 1), first=False)
        self.cache, self._text = None, {}
        return pattern.generated(seq)
