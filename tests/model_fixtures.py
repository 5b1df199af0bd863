"""Tiny real-architecture models with random weights, saved in the exact on-disk formats users' caches hold.

Shared by the model-engine tests (append helpers; do not change the ones others use). Everything here imports
torch lazily, inside the helpers, so collecting tests never imports it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

# --- demucs ---------------------------------------------------------------------------------------------------

DEMUCS_SOURCES = ("drums", "bass", "other", "vocals")
DEMUCS_6S_SOURCES = (*DEMUCS_SOURCES, "guitar", "piano")
# The real htdemucs's hyper-parameters (its checkpoint 955717e8: 41,984,456 parameters) but for the sources.
HTDEMUCS_FULL_KWARGS: dict[str, Any] = {
    "bottom_channels": 512,
    "dconv_mode": 3,
    "t_dropout": 0.02,
    "segment": Fraction(39, 5),
}
# The same architecture made tiny: about 85k parameters, a few milliseconds a chunk.
HTDEMUCS_TINY_KWARGS: dict[str, Any] = {
    "channels": 4,
    "dconv_comp": 4,
    "t_layers": 1,
    "t_heads": 2,
    "t_hidden_scale": 1.0,
}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the body (restored after): tiny models are thousands of tiny ops, and with two
    threads on a busy 2-core machine each waits on the other (10x slower at random); one thread is steady."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def htdemucs(
    sources: Sequence[str] = DEMUCS_SOURCES, *, seed: int = 0, full: bool = False, segment: float = 1.0
) -> Any:
    """A ``demucs.htdemucs.HTDemucs`` with random weights (seeded, without touching the global torch RNG).

    ``full=True`` builds the real htdemucs size (its own 7.8 s segment); otherwise a tiny one with chunks of
    ``segment`` seconds.
    """
    import torch
    from demucs.htdemucs import HTDemucs

    kwargs = dict(HTDEMUCS_FULL_KWARGS) if full else {**HTDEMUCS_TINY_KWARGS, "segment": Fraction(segment)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HTDemucs(list(sources), **kwargs).eval()


def demucs_package(model: Any) -> dict[str, Any]:
    """What demucs's ``serialize_model`` stores (without the training arguments): class, init args, half state."""
    args, kwargs = model._init_args_kwargs
    state = {k: v.detach().to("cpu").half() for k, v in model.state_dict().items()}
    return {"klass": type(model), "args": args, "kwargs": kwargs, "state": state}


def signature(name: str, index: int = 0) -> str:
    """An 8-hex-digit signature, as demucs names its checkpoints."""
    return hashlib.sha256(f"{name}/{index}".encode()).hexdigest()[:8]


def save_demucs_repo(
    folder: Path,
    name: str,
    models: Sequence[Any],
    *,
    weights: list[list[float]] | None = None,
    segment: float | None = None,
    checksum: bool = True,
) -> Path:
    """Write ``models`` as the bag ``name`` into the demucs repo folder ``folder`` (created); return it.

    Layout, as ``demucs.pretrained.get_model(name, repo=folder)`` reads it: ``<name>.yaml`` listing the
    signatures, and one ``<sig>-<sha256 prefix>.th`` per model (``<sig>.th`` with ``checksum=False``).
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    sigs = []
    for index, model in enumerate(models):
        sig = signature(name, index)
        buf = io.BytesIO()
        torch.save(demucs_package(model), buf)
        data = buf.getvalue()
        suffix = "-" + hashlib.sha256(data).hexdigest()[:8] if checksum else ""
        (folder / f"{sig}{suffix}.th").write_bytes(data)
        sigs.append(sig)
    lines = [f"models: [{', '.join(repr(s) for s in sigs)}]"]
    if weights is not None:
        lines.append(f"weights: {weights}")
    if segment is not None:
        lines.append(f"segment: {segment}")
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def demucs_models_dir(root: Path, *, six: bool = False, segment: float = 1.0) -> Path:
    """A models folder holding ``htdemucs/`` (tiny, 4 stems) and with ``six`` also ``htdemucs_6s/``."""
    save_demucs_repo(root / "htdemucs", "htdemucs", [htdemucs(segment=segment)])
    if six:
        save_demucs_repo(
            root / "htdemucs_6s", "htdemucs_6s", [htdemucs(DEMUCS_6S_SOURCES, seed=1, segment=segment)]
        )
    return root


def save_demucs_hf_cache(cache_dir: Path, name: str, models: Sequence[Any]) -> Path:
    """Write the bag ``name`` as demucs 4.1 downloads it into the Hugging Face cache ``cache_dir``; return the snapshot.

    Layout (``huggingface_hub``'s): ``models--adefossez--<Repo>/refs/main`` naming a revision and
    ``snapshots/<revision>/`` holding ``<name>.yaml`` and one ``<sig>.safetensors`` per model, with the class and
    its init arguments as JSON in the safetensors metadata (as demucs's ``tools/export_hf.py`` writes them).
    """
    import json

    from safetensors.torch import save_file

    from bridge.engines.demucs_engine.weights import hf_repo_id

    def encode(value: Any) -> Any:
        if isinstance(value, Fraction):
            return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    revision = hashlib.sha1(name.encode()).hexdigest()
    repo = cache_dir / ("models--" + hf_repo_id(name).replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    sigs = []
    for index, model in enumerate(models):
        sig = signature(name, index)
        args, kwargs = model._init_args_kwargs
        klass = type(model)
        metadata = {
            "klass": f"{klass.__module__}.{klass.__name__}",
            "args": json.dumps(encode(list(args))),
            "kwargs": json.dumps(encode(kwargs)),
        }
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        save_file(tensors, str(snapshot / f"{sig}.safetensors"), metadata=metadata)
        sigs.append(sig)
    (snapshot / f"{name}.yaml").write_text(
        f"models: [{', '.join(repr(s) for s in sigs)}]\n", encoding="utf-8"
    )
    return snapshot


# --- musicgen -------------------------------------------------------------------------------------------------

# facebook/musicgen-small's published architecture (config.json): T5-base text encoder, EnCodec 32 kHz, and a
# 24-layer, 1024-wide decoder over 4 codebooks of 2048 codes.
MUSICGEN_SMALL_CONFIG: dict[str, Any] = {
    "text_encoder": {
        "model_type": "t5",
        "vocab_size": 32128,
        "d_model": 768,
        "d_kv": 64,
        "d_ff": 3072,
        "num_layers": 12,
        "num_heads": 12,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "relu",
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
    },
    "audio_encoder": {
        "model_type": "encodec",
        "sampling_rate": 32000,
        "audio_channels": 1,
        "normalize": False,
        "chunk_length_s": None,
        "overlap": None,
        "hidden_size": 128,
        "num_filters": 64,
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 5, 4, 4],
        "codebook_size": 2048,
        "codebook_dim": 128,
        "target_bandwidths": [2.2],
        "use_causal_conv": False,
        "num_lstm_layers": 2,
        "compress": 2,
        "use_conv_shortcut": False,
        "kernel_size": 7,
        "last_kernel_size": 7,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "norm_type": "weight_norm",
        "pad_mode": "reflect",
        "trim_right_ratio": 1.0,
    },
    "decoder": {
        "vocab_size": 2048,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "ffn_dim": 4096,
        "num_codebooks": 4,
        "max_position_embeddings": 2048,
        "activation_function": "gelu",
        "dropout": 0.1,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
        "audio_channels": 1,
    },
}
# The same architecture made tiny (about 290k parameters): every module type is there, every size is small.
MUSICGEN_TINY_CONFIG: dict[str, Any] = {
    "text_encoder": {
        "model_type": "t5",
        "d_model": 24,
        "d_kv": 8,
        "d_ff": 48,
        "num_layers": 2,
        "num_heads": 3,
        "relative_attention_num_buckets": 8,
        "feed_forward_proj": "relu",
    },
    "audio_encoder": {
        **MUSICGEN_SMALL_CONFIG["audio_encoder"],
        "hidden_size": 16,
        "num_filters": 4,
        "codebook_size": 64,
        "codebook_dim": 16,
        "target_bandwidths": [1.2],  # 4 codebooks of 6 bits at 50 Hz
    },
    "decoder": {
        **MUSICGEN_SMALL_CONFIG["decoder"],
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "ffn_dim": 64,
        "pad_token_id": 64,
        "bos_token_id": 64,
    },
}
MELODY_PREPROCESSOR: dict[str, Any] = {
    "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
    "processor_class": "MusicgenMelodyProcessor",
    "feature_size": 12,
    "sampling_rate": 32000,
    "hop_length": 4096,
    "chunk_length": 30,
    "n_fft": 16384,
    "num_chroma": 12,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "stem_indices": [3, 2],
}
TINY_TOKENIZER_WORDS = (
    "solo bass line drum kit groove keyboard chords ambient synth pad sustained lead melody vocals singing "
    "guitar part piano instrumental accompaniment bpm in major minor time funky"
).split()


def t5_tokenizer(vocab_size: int | None = None) -> Any:
    """A T5 (unigram, sentencepiece-style) tokenizer over a small vocabulary: pieces for the words the engine's
    prompts use, every letter and digit (so any text tokenizes), and T5's special tokens."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{w}", -5.0) for w in TINY_TOKENIZER_WORDS]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    pieces += [(c, -10.0) for c in chars + "#,./-"]
    pieces += [(f"\u2581{c}", -9.0) for c in chars]
    if vocab_size is not None:
        pieces += [(f"<filler_{i}>", -20.0) for i in range(vocab_size - len(pieces))]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def musicgen_config(*, melody: bool = False, stereo: bool = False, full: bool = False) -> Any:
    """A ``MusicgenConfig`` (``MusicgenMelodyConfig`` with ``melody``): musicgen-small's size with ``full``,
    else tiny; ``stereo`` doubles the codebooks (left/right interleaved) as musicgen-stereo-* do."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        T5Config,
    )

    spec = MUSICGEN_SMALL_CONFIG if full else MUSICGEN_TINY_CONFIG
    text = {k: v for k, v in spec["text_encoder"].items() if k != "model_type"}
    if not full:
        text["vocab_size"] = len(t5_tokenizer())
    codec = {k: v for k, v in spec["audio_encoder"].items() if k != "model_type"}
    decoder = dict(spec["decoder"])
    if stereo:
        decoder.update(audio_channels=2, num_codebooks=2 * decoder["num_codebooks"])
    t5 = T5Config(**text, is_encoder_decoder=False, use_cache=False)
    if melody:
        return MusicgenMelodyConfig(
            text_encoder=t5,
            audio_encoder=EncodecConfig(**codec),
            decoder=MusicgenMelodyDecoderConfig(**decoder),
        )
    return MusicgenConfig(
        text_encoder=t5, audio_encoder=EncodecConfig(**codec), decoder=MusicgenDecoderConfig(**decoder)
    )


def musicgen_model(*, melody: bool = False, stereo: bool = False, full: bool = False, seed: int = 0) -> Any:
    """A MusicGen model with random weights (seeded, without touching the global torch RNG), in eval mode,
    with MusicGen's generation defaults (sampling, top-k 250, guidance 3)."""
    import torch
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    config = musicgen_config(melody=melody, stereo=stereo, full=full)
    cls = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model = cls(config).eval()
        # EnCodec's codebooks start as zeros (they are learned from data): make them random, so that
        # different codes decode to different audio.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
            layer.codebook.inited.fill_(1.0)
    bos = config.decoder.bos_token_id
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.bos_token_id = bos, bos, bos
    gen.do_sample, gen.guidance_scale, gen.top_k, gen.max_length = True, 3.0, 250, 1500
    return model


def save_musicgen(model: Any, folder: Path) -> Path:
    """``model`` as a transformers ``save_pretrained`` folder with its processor files, as the hub holds it:
    config.json, generation_config.json, model.safetensors, preprocessor_config.json and tokenizer files."""
    import json

    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer = t5_tokenizer(
        model.config.text_encoder.vocab_size if model.config.text_encoder.vocab_size > 1000 else None
    )
    if model.config.model_type == "musicgen_melody":
        tokenizer.save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(MELODY_PREPROCESSOR, indent=2))
    else:
        extractor = EncodecFeatureExtractor(
            feature_size=model.config.decoder.audio_channels,
            sampling_rate=model.config.audio_encoder.sampling_rate,
            padding_side="left",
        )
        MusicgenProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def hf_cache_folder(
    cache: Path, repo_id: str, revision: str = "0123456789abcdef0123456789abcdef01234567"
) -> Path:
    """The snapshot folder of ``repo_id`` in a Hugging Face hub cache laid out as huggingface_hub writes it
    (``models--org--name/refs/main`` naming ``snapshots/<revision>/``); fill it, then load by repo id."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _audiocraft_lm_state(model: Any) -> dict[str, Any]:
    """The LM of a transformers MusicGen under audiocraft's names (``LMModel.state_dict()``), written from
    audiocraft's module layout: ``emb``, ``transformer.layers.N`` (``StreamingTransformerLayer``: fused
    ``in_proj_weight`` for self- and cross-attention, ``linear1/2``, ``norm1/norm_cross/norm2``), ``out_norm``,
    ``linears`` and the conditioners' ``output_proj``."""
    import torch

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dec = "decoder.model.decoder."
    out: dict[str, Any] = {}
    for k in range(model.config.decoder.num_codebooks):
        out[f"emb.{k}.weight"] = sd[f"{dec}embed_tokens.{k}.weight"]
        out[f"linears.{k}.weight"] = sd[f"decoder.lm_heads.{k}.weight"]
    for n in range(model.config.decoder.num_hidden_layers):
        hf, ac = f"{dec}layers.{n}.", f"transformer.layers.{n}."
        attentions = [("self_attn", "self_attn")]
        if f"{hf}encoder_attn.q_proj.weight" in sd:
            attentions.append(("encoder_attn", "cross_attention"))
            out[ac + "norm_cross.weight"] = sd[hf + "encoder_attn_layer_norm.weight"]
            out[ac + "norm_cross.bias"] = sd[hf + "encoder_attn_layer_norm.bias"]
        for ours, theirs in attentions:
            out[f"{ac}{theirs}.in_proj_weight"] = torch.cat(
                [sd[f"{hf}{ours}.{p}_proj.weight"] for p in "qkv"]
            )
            out[f"{ac}{theirs}.out_proj.weight"] = sd[f"{hf}{ours}.out_proj.weight"]
        for ours, theirs in (("self_attn_layer_norm", "norm1"), ("final_layer_norm", "norm2")):
            out[f"{ac}{theirs}.weight"], out[f"{ac}{theirs}.bias"] = (
                sd[f"{hf}{ours}.weight"],
                sd[f"{hf}{ours}.bias"],
            )
        out[ac + "linear1.weight"], out[ac + "linear2.weight"] = sd[hf + "fc1.weight"], sd[hf + "fc2.weight"]
    out["out_norm.weight"], out["out_norm.bias"] = sd[f"{dec}layer_norm.weight"], sd[f"{dec}layer_norm.bias"]
    description = "condition_provider.conditioners.description.output_proj."
    out[description + "weight"], out[description + "bias"] = (
        sd["enc_to_dec_proj.weight"],
        sd["enc_to_dec_proj.bias"],
    )
    if "audio_enc_to_dec_proj.weight" in sd:
        chroma = "condition_provider.conditioners.self_wav."
        out[chroma + "output_proj.weight"] = sd["audio_enc_to_dec_proj.weight"]
        out[chroma + "output_proj.bias"] = sd["audio_enc_to_dec_proj.bias"]
        out[chroma + "chroma.spec.window"] = torch.hann_window(16384)  # fixed buffers audiocraft saves too
        out[chroma + "chroma.fbanks"] = torch.zeros(12, 8193)
    return out


def _audiocraft_encodec_state(codec: Any) -> dict[str, Any]:
    """A transformers ``EncodecModel`` under audiocraft's names (SEANet ``model.N`` stacks with
    ``StreamableConv1d.conv.conv`` / ``StreamableConvTranspose1d.convtr.convtr`` and old-style weight norm
    ``weight_g``/``weight_v``; ``quantizer.vq.layers.K._codebook``)."""
    import re

    out: dict[str, Any] = {}
    for name, value in codec.state_dict().items():
        new = name.replace(".parametrizations.weight.original0", ".weight_g")
        new = new.replace(".parametrizations.weight.original1", ".weight_v")
        new = re.sub(r"^quantizer\.layers\.(\d+)\.codebook\.", r"quantizer.vq.layers.\1._codebook.", new)
        if m := re.match(r"^(encoder|decoder)\.layers\.(\d+)\.(.*)$", new):
            side, index, rest = m.groups()
            layer = getattr(codec, side).layers[int(index)]
            if rest.startswith("conv."):
                wrapper = (
                    "convtr.convtr." if type(layer).__name__ == "EncodecConvTranspose1d" else "conv.conv."
                )
                rest = wrapper + rest[len("conv.") :]
            rest = re.sub(r"^(block\.\d+|shortcut)\.conv\.", r"\1.conv.conv.", rest)
            new = f"{side}.model.{index}.{rest}"
        out[new] = value.detach().clone()
    return out


def save_audiocraft(model: Any, folder: Path, *, fine_tuned_codec: bool = True) -> Path:
    """``model`` as an exported audiocraft fine-tuning checkpoint: ``state_dict.bin`` (``best_state`` = the LM,
    ``xp.cfg`` = its YAML) and ``compression_state_dict.bin`` (the EnCodec's ``best_state``, or a pointer to the
    pretrained ``facebook/encodec_32khz`` with ``fine_tuned_codec=False``)."""
    import torch
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    dec = model.config.decoder
    cfg = {
        "sample_rate": model.config.audio_encoder.sampling_rate,
        "channels": dec.audio_channels,
        "transformer_lm": {
            "dim": dec.hidden_size,
            "num_heads": dec.num_attention_heads,
            "num_layers": dec.num_hidden_layers,
            "n_q": dec.num_codebooks,
            "card": dec.vocab_size,
            "activation": "gelu",
        },
        "interleave_stereo_codebooks": {"use": dec.audio_channels == 2},
        "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}}},
        "classifier_free_guidance": {"inference_coef": 3.0},
    }
    lm = {
        "best_state": _audiocraft_lm_state(model),
        "xp.cfg": yaml.safe_dump(cfg),
        "version": "1.3.0",
        "exported": True,
    }
    torch.save(lm, folder / "state_dict.bin")
    if fine_tuned_codec:
        codec_cfg = {
            "sample_rate": model.config.audio_encoder.sampling_rate,
            "channels": 1,
            "seanet": {"dilation_base": 2, "causal": False, "pad_mode": "reflect"},
        }
        codec = {
            "best_state": _audiocraft_encodec_state(model.audio_encoder),
            "xp.cfg": yaml.safe_dump(codec_cfg),
            "version": "1.3.0",
            "exported": True,
        }
    else:
        codec = {"pretrained": "facebook/encodec_32khz", "version": "1.3.0", "exported": True}
    torch.save(codec, folder / "compression_state_dict.bin")
    return folder
