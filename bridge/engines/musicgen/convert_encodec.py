"""An audiocraft EnCodec state dict (``compression_state_dict.bin``'s ``best_state``) as transformers' EnCodec.

audiocraft's SEANet encoder and decoder are ``nn.Sequential`` stacks, and transformers' ``EncodecEncoder`` and
``EncodecDecoder`` keep the same layer indices (activations included), so the names map by rule:

====================================================  ==============================================
audiocraft                                            transformers
====================================================  ==============================================
``encoder.model.N.conv.conv.weight_g`` / ``weight_v``    ``encoder.layers.N.conv.parametrizations.weight.original0`` / ``original1``
``encoder.model.N.block.M.conv.conv.*``               ``encoder.layers.N.block.M.conv.*``
``encoder.model.N.shortcut.conv.conv.*``              ``encoder.layers.N.shortcut.conv.*``
``encoder.model.N.lstm.*``                            ``encoder.layers.N.lstm.*``
``decoder.model.N.convtr.convtr.*``                   ``decoder.layers.N.conv.*``
``quantizer.vq.layers.K._codebook.*``                 ``quantizer.layers.K.codebook.*``
====================================================  ==============================================

The architecture (filters, ratios, residual layers, codebooks...) is read from the tensors' shapes; only the
sample rate, dilation base, padding mode and causality come from the checkpoint's ``xp.cfg`` (with EnCodec
32 kHz's values as defaults).
"""

from __future__ import annotations

import math
import re
from typing import Any

from bridge.errors import InvalidArgument

_RULES = (
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.(conv\.conv|convtr\.convtr)\."), ".conv."),
    (re.compile(r"\.(conv|convtr)\.norm\."), ".norm."),
    (re.compile(r"\.weight_g$"), ".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), ".parametrizations.weight.original1"),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\."), r"quantizer.layers.\1.codebook."),
)


def rename(name: str) -> str:
    """An audiocraft EnCodec parameter name -> its transformers ``EncodecModel`` name."""
    for pattern, replacement in _RULES:
        name = pattern.sub(replacement, name)
    return name


def cfg_value(cfg: dict[str, Any], path: str, default: Any) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``, or ``default`` when any part is missing."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _shape(state: dict[str, Any], key: str) -> tuple[int, ...]:
    if key not in state:
        raise InvalidArgument(
            f"the EnCodec checkpoint lacks {key!r}; it is not an audiocraft EnCodec (SEANet)"
        )
    return tuple(int(n) for n in state[key].shape)


def _indices(state: dict[str, Any], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state if (m := regex.match(key))})


def encodec_config(state: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``EncodecConfig`` keyword arguments for an audiocraft EnCodec ``state`` (see the module docstring)."""
    if not any(key.endswith(".weight_g") for key in state):
        raise InvalidArgument(
            "only weight-normalised EnCodec checkpoints (as MusicGen's) can be converted; this one uses "
            "another normalisation"
        )
    convs = _indices(state, r"^encoder\.model\.(\d+)\.conv\.conv\.weight_v$")
    first = _shape(state, f"encoder.model.{convs[0]}.conv.conv.weight_v")
    last = _shape(state, f"encoder.model.{convs[-1]}.conv.conv.weight_v")
    up = _indices(state, r"^decoder\.model\.(\d+)\.convtr\.convtr\.weight_v$")
    ratios = [_shape(state, f"decoder.model.{n}.convtr.convtr.weight_v")[-1] // 2 for n in up]
    blocks = _indices(state, r"^encoder\.model\.(\d+)\.block\.1\.conv\.conv\.weight_v$")
    residual = _shape(state, f"encoder.model.{blocks[0]}.block.1.conv.conv.weight_v")
    codebooks = _indices(state, r"^quantizer\.vq\.layers\.(\d+)\._codebook\.embed$")
    bins, dim = _shape(state, "quantizer.vq.layers.0._codebook.embed")
    lstm = _indices(state, r"^encoder\.model\.\d+\.lstm\.weight_ih_l(\d+)$")
    rate = int(cfg_value(cfg, "sample_rate", 32000))
    frame_rate = rate / math.prod(ratios)
    return {
        "sampling_rate": rate,
        "audio_channels": first[1],
        "num_filters": first[0],
        "kernel_size": first[-1],
        "hidden_size": last[0],
        "last_kernel_size": last[-1],
        "upsampling_ratios": ratios,
        "num_residual_layers": max(1, len(blocks) // max(1, len(ratios))),
        "residual_kernel_size": residual[-1],
        "compress": residual[1] // residual[0],
        "use_conv_shortcut": any(".shortcut." in key for key in state),
        "num_lstm_layers": len(lstm),
        "codebook_size": bins,
        "codebook_dim": dim,
        "target_bandwidths": [len(codebooks) * math.log2(bins) * frame_rate / 1000.0],
        "dilation_growth_rate": int(cfg_value(cfg, "seanet.dilation_base", 2)),
        "use_causal_conv": bool(cfg_value(cfg, "seanet.causal", False)),
        "pad_mode": str(cfg_value(cfg, "seanet.pad_mode", "reflect")),
        "norm_type": "weight_norm",
        "normalize": False,
        "chunk_length_s": None,
        "overlap": None,
        "trim_right_ratio": 1.0,
    }


def convert_encodec(state: dict[str, Any], cfg: dict[str, Any]) -> Any:
    """A transformers ``EncodecModel`` holding the audiocraft EnCodec weights ``state``."""
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(**encodec_config(state, cfg))
    model: Any = EncodecModel(config)
    model.eval()
    renamed = {rename(key): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise InvalidArgument(
            f"the EnCodec checkpoint does not match the EnCodec it describes: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model
