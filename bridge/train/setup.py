"""The model made trainable, the optimiser's schedule, and what a run will cost (torch).

- **LoRA** (the default): low-rank adapters on the decoder's attention projections and feed-forward layers,
  through peft; the rest stays frozen, so a step updates about 1 % of the decoder and the optimiser's state
  is tiny. At the end the adapters are merged into the weights (:mod:`.export`).
- **Full**: every weight of the decoder is trained (the text encoder and the codec stay frozen).
- **Schedule**: linear warm-up to the peak rate, then cosine decay to a tenth of it, a pure function of the
  step (nothing to save for a resume).
- **Estimate**: memory from the sizes of weights, gradients, AdamW's moments and activations, checked before
  anything runs; time per step measured on one real step.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from bridge.errors import OutOfMemory

# The decoder's linear layers LoRA adapts: attention (self and cross) and feed-forward, in every layer.
LORA_TARGETS = r".*decoder\.model\.decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc1|fc2)"
FINAL_FRACTION = 0.1  # the cosine ends at a tenth of the peak rate


@dataclass(frozen=True)
class Trainable:
    """What a run trains.

    Attributes:
        model: the model (with adapters injected, for LoRA).
        params: ``{name: parameter}`` the optimiser updates, by the name checkpoints store them under.
        peft_model: peft's wrapper (LoRA), which merges the adapters at the end; ``None`` for full.
    """

    model: Any
    params: dict[str, torch.nn.Parameter]
    peft_model: Any = None

    @property
    def count(self) -> int:
        return sum(p.numel() for p in self.params.values())


def make_trainable(model: Any, lora: bool, rank: int, seed: int) -> Trainable:
    """LoRA adapters of ``rank`` on the decoder (initialised from ``seed``), or the whole decoder."""
    for p in model.parameters():
        p.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # peft 0.21 asks transformers 5.25 a deprecated question about gradient checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            torch.manual_seed(seed)
            wrapped = get_peft_model(model, config)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        return Trainable(model, params, wrapped)
    for p in model.decoder.parameters():
        p.requires_grad_(True)
    return Trainable(model, {n: p for n, p in model.named_parameters() if p.requires_grad})


def learning_rate(step: int, steps: int, warmup: int, peak: float) -> float:
    """The rate for optimiser step ``step`` (0-based) of ``steps``: warm-up, then cosine to a tenth."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * (FINAL_FRACTION + (1 - FINAL_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(trainable: Trainable, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(trainable.params.values()), lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class Estimate:
    """What one run costs, before it runs.

    Attributes:
        peak_bytes: memory at the peak of a step (weights, gradients, AdamW's moments, activations).
        available_bytes: memory free on the device (``None``: unknown).
        seconds_per_step: measured on one real step (``None`` until measured).
    """

    peak_bytes: int
    available_bytes: int | None
    seconds_per_step: float | None = None


def peak_memory(model: Any, trainable: Trainable, batch: int, length: int) -> int:
    """Bytes a step needs: all weights, the trainable ones' gradients and AdamW moments (float32), and the
    decoder's activations kept for the backward pass for ``batch`` sequences of ``length`` positions."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    optimiser = trainable.count * 4 * 3
    dec = model.decoder.config
    hidden, layers, heads = int(dec.hidden_size), int(dec.num_hidden_layers), int(dec.num_attention_heads)
    per_layer = batch * length * (hidden * 18 + int(dec.ffn_dim) * 2) + batch * heads * length * length * 2
    logits = batch * int(dec.num_codebooks) * length * int(dec.vocab_size) * 3
    return int(weights + optimiser + 4 * (per_layer * layers + logits))


def available_memory(device: str) -> int | None:
    """Free memory on ``device``: the GPU's free memory, or the machine's (and its control group's)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    from bridge.memory import available_bytes

    return available_bytes()


def check_fits(estimate: Estimate, lora: bool, batch: int) -> None:
    """Refuse a run that cannot fit, with what to change.

    Raises:
        OutOfMemory: naming the need, what is free and the fix (a smaller batch, LoRA, shorter segments).
    """
    free = estimate.available_bytes
    if free is None or estimate.peak_bytes <= free:
        return
    fixes = []
    if batch > 1:
        fixes.append(f"a smaller --batch-size (e.g. {max(1, batch // 2)}) with --accumulate to keep its size")
    if not lora:
        fixes.append("--lora instead of --full (adapters need a fraction of the memory)")
    fixes.append("fewer --bars per segment")
    raise OutOfMemory(
        f"training needs about {_size(estimate.peak_bytes)} and {_size(free)} is free on this device; "
        f"try {', or '.join(fixes)}"
    )


def describe(estimate: Estimate, steps: int, device: str) -> str:
    """``"about 0.14 s per step, 4 s for 30 steps on cpu; weights, optimiser and activations about 50 MB of
    21.6 GB free"``."""
    per = estimate.seconds_per_step or 0.0
    free = "" if estimate.available_bytes is None else f" of {_size(estimate.available_bytes)} free"
    text = (
        f"about {per:.3g} s per step, {_duration(per * steps)} for {steps} steps on {device}; "
        f"weights, optimiser and activations about {_size(estimate.peak_bytes)}{free}"
    )
    if device == "cpu" and per * steps > 600:
        text += " (a GPU takes a small fraction of that: --device cuda)"
    return text


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{max(1, round(n / (1 << 20)))} MB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
