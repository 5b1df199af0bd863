"""audiocraft fine-tuning checkpoints -> the transformers format, so fine-tuned MusicGen runs without audiocraft.

An exported audiocraft checkpoint folder holds ``state_dict.bin`` (``{"best_state": <LM state dict>,
"xp.cfg": <YAML>}``, from ``audiocraft.utils.export.export_lm``) and ``compression_state_dict.bin`` (either
``{"best_state": <EnCodec state dict>, "xp.cfg": ...}`` for a fine-tuned EnCodec, or ``{"pretrained":
"facebook/encodec_32khz"}``; without the file, EnCodec 32 kHz is used). It is converted once into
``<folder>/converted/``, a ``save_pretrained`` folder written into a temp folder and renamed into place, and
converted again only when the checkpoint files change.

The LM's names map onto ``MusicgenForConditionalGeneration`` (``MusicgenMelodyForConditionalGeneration`` when
the checkpoint has the chroma conditioner and no cross-attention):

=========================================================  ================================================
audiocraft                                                 transformers
=========================================================  ================================================
``emb.K.weight``                                           ``decoder.model.decoder.embed_tokens.K.weight``
``transformer.layers.N.self_attn.in_proj_weight``          ``...layers.N.self_attn.{q,k,v}_proj.weight`` (split in 3)
``transformer.layers.N.self_attn.out_proj.weight``         ``...layers.N.self_attn.out_proj.weight``
``transformer.layers.N.cross_attention.*``                 ``...layers.N.encoder_attn.*`` (in_proj split too)
``transformer.layers.N.norm1`` / ``norm_cross`` / ``norm2``  ``self_attn_layer_norm`` / ``encoder_attn_layer_norm`` / ``final_layer_norm``
``transformer.layers.N.linear1`` / ``linear2``             ``fc1`` / ``fc2``
``out_norm.*``                                             ``decoder.model.decoder.layer_norm.*``
``linears.K.weight``                                       ``decoder.lm_heads.K.weight``
``condition_provider.conditioners.description.output_proj``  ``enc_to_dec_proj``
``condition_provider.conditioners.self_wav.output_proj``     ``audio_enc_to_dec_proj`` (melody)
``condition_provider.conditioners.description.t5.*``       ``text_encoder.*`` (a fine-tuned T5, rare)
=========================================================  ================================================

The text encoder (T5, ``t5-base`` for every MusicGen) and its tokenizer come from, in order: ``<folder>/t5/``
(a T5 ``save_pretrained`` folder), the Hugging Face cache (the checkpoint's T5 name), or any MusicGen model in
the cache or the models folder with a text encoder of the right width (MusicGen ships T5 inside).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from bridge.engines.base import Progress, ProgressCallback
from bridge.engines.musicgen import loading
from bridge.engines.musicgen.convert_encodec import cfg_value, convert_encodec
from bridge.errors import AudioWriteError, InvalidArgument, ModelNotFound

CONVERTER_VERSION = 1
STAMP = ".stembridge-source.json"
DEFAULT_CODEC = "facebook/encodec_32khz"
_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "cross_attention.out_proj.weight": "encoder_attn.out_proj.weight",
    "linear1.weight": "fc1.weight",
    "linear2.weight": "fc2.weight",
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "norm_cross.weight": "encoder_attn_layer_norm.weight",
    "norm_cross.bias": "encoder_attn_layer_norm.bias",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
}
_FUSED = {"self_attn.in_proj_weight": "self_attn", "cross_attention.in_proj_weight": "encoder_attn"}
_DESCRIPTION = "condition_provider.conditioners.description."
_CHROMA = "condition_provider.conditioners.self_wav."


def load_package(path: Path) -> dict[str, Any]:
    """An exported audiocraft ``.bin``: tensors, strings and numbers only (``weights_only``: no code runs)."""
    import torch

    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise InvalidArgument(
            f"{path} is not an exported audiocraft checkpoint ({type(exc).__name__}: {exc}); export the training "
            "checkpoint first with audiocraft.utils.export.export_lm / export_encodec"
        ) from exc
    if not isinstance(package, dict):
        raise InvalidArgument(f"{path} holds a {type(package).__name__}, not an audiocraft checkpoint dict")
    return package


def unpack(package: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state dict, xp.cfg as a dict)`` of an exported package (or of a bare state dict)."""
    import yaml

    state = package.get("best_state", package)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    raw = package.get("xp.cfg", {})
    cfg = yaml.safe_load(raw) if isinstance(raw, str) else raw
    return dict(state), cfg if isinstance(cfg, dict) else {}


def lm_to_transformers(state: dict[str, Any], dim: int) -> dict[str, dict[str, Any]]:
    """Split and rename an audiocraft LM state dict: ``{"decoder": ..., "enc_to_dec_proj": ...,
    "audio_enc_to_dec_proj": ..., "text_encoder": ...}`` in transformers names (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {
        "decoder": {},
        "enc_to_dec_proj": {},
        "audio_enc_to_dec_proj": {},
        "text_encoder": {},
    }
    decoder = out["decoder"]
    for key, value in state.items():
        if m := re.match(r"^emb\.(\d+)\.weight$", key):
            decoder[f"model.decoder.embed_tokens.{m.group(1)}.weight"] = value
        elif m := re.match(r"^linears\.(\d+)\.weight$", key):
            decoder[f"lm_heads.{m.group(1)}.weight"] = value
        elif m := re.match(r"^out_norm\.(weight|bias)$", key):
            decoder[f"model.decoder.layer_norm.{m.group(1)}"] = value
        elif m := _LAYER.match(key):
            layer, name = m.groups()
            prefix = f"model.decoder.layers.{layer}."
            if name in _FUSED:
                for part, chunk in zip("qkv", value.split(dim, dim=0), strict=True):
                    decoder[f"{prefix}{_FUSED[name]}.{part}_proj.weight"] = chunk
            elif name in _LAYER_NAMES:
                decoder[prefix + _LAYER_NAMES[name]] = value
            else:
                raise InvalidArgument(
                    f"the LM checkpoint has {key!r}, which MusicGen on transformers has no place for "
                    "(attention biases or layer scales are not supported)"
                )
        elif key.startswith(_DESCRIPTION + "output_proj."):
            out["enc_to_dec_proj"][key.rsplit(".", 1)[1]] = value
        elif key.startswith(_CHROMA + "output_proj."):
            out["audio_enc_to_dec_proj"][key.rsplit(".", 1)[1]] = value
        elif key.startswith(_DESCRIPTION + "t5."):
            out["text_encoder"][key[len(_DESCRIPTION + "t5.") :]] = value
        elif key.startswith(_CHROMA + "chroma."):
            continue  # the chroma extractor's fixed filter banks and windows, computed at run time
        else:
            raise InvalidArgument(f"the LM checkpoint has {key!r}; it is not a MusicGen language model")
    return out


def decoder_config(state: dict[str, Any], cfg: dict[str, Any], channels: int) -> dict[str, Any]:
    """MusicGen decoder config keyword arguments read from the LM's shapes (heads from ``xp.cfg``)."""
    if "emb.0.weight" not in state or "linears.0.weight" not in state:
        raise InvalidArgument(
            "the LM checkpoint lacks emb.0.weight / linears.0.weight; it is not a MusicGen LM"
        )
    card, dim = (int(n) for n in state["linears.0.weight"].shape)
    layers = {int(m.group(1)) for key in state if (m := _LAYER.match(key))}
    heads = int(cfg_value(cfg, "transformer_lm.num_heads", max(1, dim // 64)))
    activation = str(cfg_value(cfg, "transformer_lm.activation", "gelu"))
    if activation != "gelu":
        raise InvalidArgument(
            f"the LM uses the {activation!r} activation; MusicGen on transformers needs gelu"
        )
    return {
        "vocab_size": card,
        "hidden_size": dim,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "ffn_dim": int(state["transformer.layers.0.linear1.weight"].shape[0]),
        "num_codebooks": sum(1 for key in state if re.match(r"^emb\.\d+\.weight$", key)),
        "audio_channels": channels,
        "pad_token_id": card,
        "bos_token_id": card,
        "max_position_embeddings": 2048,
        "activation_function": "gelu",
        "tie_word_embeddings": False,
    }


def _stereo(cfg: dict[str, Any]) -> bool:
    return (
        bool(cfg_value(cfg, "interleave_stereo_codebooks.use", False))
        or int(cfg_value(cfg, "channels", 1)) == 2
    )


# ------------------------------------------------------------------------------------ where T5 and EnCodec are


def _musicgen_folders(folder: Path) -> list[Path]:
    """Transformers MusicGen folders beside ``folder`` (the models folder) and in the Hugging Face cache."""
    found = [p for p in sorted(folder.parent.iterdir()) if p != folder and loading.is_transformers_dir(p)]
    cache = loading.hf_hub_cache()
    if cache.is_dir():
        for repo in sorted(cache.glob("models--*--musicgen*")):
            name = repo.name.removeprefix("models--").replace("--", "/")
            snapshot = loading.cached_snapshot(name, cache)
            found += [snapshot] if snapshot is not None else []
    return found


def _read_prefixed(folder: Path, prefix: str) -> dict[str, Any]:
    """The tensors of a ``save_pretrained`` folder whose names start with ``prefix`` (prefix removed)."""
    import torch
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(
            {folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()}
        )
    else:
        files = [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []
    out: dict[str, Any] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = handle.get_tensor(key)
    if not files and (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return out


def _config_of(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _fill(model: Any, state: dict[str, Any], what: str, tied: tuple[str, ...] = ()) -> Any:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise InvalidArgument(
            f"the {what} weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()


def text_encoder(folder: Path, name: str, width: int, allow_download: bool) -> tuple[Any, Path]:
    """``(T5EncoderModel, folder holding its tokenizer)`` for a checkpoint in ``folder`` (see the module doc)."""
    from transformers import T5Config
    from transformers import T5EncoderModel as _T5

    t5: Any = _T5

    looked = [f"{folder / 't5'}"]
    if loading.is_transformers_dir(folder / "t5"):
        return t5.from_pretrained(folder / "t5", local_files_only=True).eval(), folder / "t5"
    repos = [name] if "/" in name else [name, f"google-t5/{name}"]
    for repo in repos:
        looked.append(f"the Hugging Face cache ({loading.repo_cache_dir(repo)})")
        snapshot = loading.cached_snapshot(repo)
        if snapshot is not None:
            return t5.from_pretrained(snapshot, local_files_only=True).eval(), snapshot
    for candidate in _musicgen_folders(folder):
        text = _config_of(candidate).get("text_encoder", {})
        if text.get("model_type") == "t5" and int(text.get("d_model", -1)) == width:
            config = T5Config(**{k: v for k, v in text.items() if k != "model_type"})
            model = _fill(t5(config), _read_prefixed(candidate, "text_encoder."), "T5", _T5_TIED)
            return model, candidate
    looked.append("MusicGen models in the models folder and the Hugging Face cache")
    if allow_download:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repos[-1], cache_dir=loading.hf_hub_cache(), allow_patterns=_T5_FILES))
        return t5.from_pretrained(path, local_files_only=True).eval(), path
    raise ModelNotFound(
        f"converting the audiocraft checkpoint in {folder} needs the {name} text encoder, not found (looked in "
        f"{'; '.join(looked)}); fetch one with: stembridge models pull musicgen-small (it contains {name}), "
        f"or put a T5 save_pretrained folder in {folder / 't5'}"
    )


_T5_TIED = ("encoder.embed_tokens.weight",)
_T5_FILES = ["*.json", "*.safetensors", "spiece.model"]


def audio_encoder(folder: Path, allow_download: bool) -> Any:
    """The checkpoint's EnCodec as a transformers ``EncodecModel`` (fine-tuned, or the pretrained it names)."""
    path = folder / loading.AUDIOCRAFT_CODEC
    name = DEFAULT_CODEC
    if path.is_file():
        package = load_package(path)
        if "pretrained" not in package:
            return convert_encodec(*unpack(package))
        name = str(package["pretrained"]).removeprefix("//pretrained/")
    from transformers import EncodecConfig
    from transformers import EncodecModel as _Encodec

    encodec: Any = _Encodec
    snapshot = loading.cached_snapshot(name)
    if snapshot is not None:
        return encodec.from_pretrained(snapshot, local_files_only=True).eval()
    for candidate in _musicgen_folders(folder) if name == DEFAULT_CODEC else []:
        codec = _config_of(candidate).get("audio_encoder", {})
        if codec.get("model_type") == "encodec" and int(codec.get("sampling_rate", 0)) == 32000:
            config = EncodecConfig(**{k: v for k, v in codec.items() if k != "model_type"})
            return _fill(encodec(config), _read_prefixed(candidate, "audio_encoder."), "EnCodec")
    if allow_download:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(name, cache_dir=loading.hf_hub_cache(), allow_patterns=_T5_FILES))
        return encodec.from_pretrained(path, local_files_only=True).eval()
    raise ModelNotFound(
        f"converting the audiocraft checkpoint in {folder} needs the {name} EnCodec, not found (looked in "
        f"{loading.repo_cache_dir(name)} and in MusicGen models); fetch one with: stembridge models pull "
        "musicgen-small (it contains it)"
    )


# ------------------------------------------------------------------------------------------------ converting


def convert_checkpoint(
    folder: Path, out: Path, *, allow_download: bool = False, progress: ProgressCallback | None = None
) -> None:
    """Write the transformers version of the audiocraft checkpoint in ``folder`` into ``out``."""
    import torch
    from transformers import (
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForCausalLM,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForCausalLM,
        MusicgenMelodyForConditionalGeneration,
    )

    report = Progress(progress)
    report(0.0, "convert")
    state, cfg = unpack(load_package(folder / loading.AUDIOCRAFT_LM))
    channels = 2 if _stereo(cfg) else 1
    decoder_kwargs = decoder_config(state, cfg, channels)
    parts = lm_to_transformers(state, decoder_kwargs["hidden_size"])
    melody = bool(parts["audio_enc_to_dec_proj"])
    if melody and any(".encoder_attn." in key for key in parts["decoder"]):
        raise InvalidArgument("the LM has both chroma prefix conditioning and cross-attention; not supported")
    if not parts["enc_to_dec_proj"]:
        raise InvalidArgument("the LM checkpoint has no text conditioner projection; it is not MusicGen")
    width = int(parts["enc_to_dec_proj"]["weight"].shape[1])
    t5_name = str(cfg_value(cfg, "conditioners.description.t5.name", "t5-base"))
    report(0.1, "convert")
    with loading.quiet_transformers(), torch.no_grad():
        text, tokenizer_folder = text_encoder(folder, t5_name, width, allow_download)
        if parts["text_encoder"]:
            _fill(text, parts["text_encoder"], "fine-tuned T5", _T5_TIED)
        codec = audio_encoder(folder, allow_download)
        report(0.4, "convert")
        if melody:
            decoder = _fill(
                MusicgenMelodyForCausalLM(MusicgenMelodyDecoderConfig(**decoder_kwargs)),
                parts["decoder"],
                "LM",
            )
            config: Any = MusicgenMelodyConfig(
                text_encoder=text.config,
                audio_encoder=codec.config,
                decoder=decoder.config,
                num_chroma=int(parts["audio_enc_to_dec_proj"]["weight"].shape[1]),
            )
            model: Any = MusicgenMelodyForConditionalGeneration(config, text, codec, decoder)
            model.audio_enc_to_dec_proj.load_state_dict(parts["audio_enc_to_dec_proj"])
        else:
            decoder = _fill(
                MusicgenForCausalLM(MusicgenDecoderConfig(**decoder_kwargs)), parts["decoder"], "LM"
            )
            config = MusicgenConfig(
                text_encoder=text.config, audio_encoder=codec.config, decoder=decoder.config
            )
            model = MusicgenForConditionalGeneration(config, text, codec, decoder)
        model.enc_to_dec_proj.load_state_dict(parts["enc_to_dec_proj"])
        card = decoder_kwargs["vocab_size"]
        gen = model.generation_config
        gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = card
        gen.do_sample, gen.top_k, gen.max_length = True, 250, 1500
        gen.guidance_scale = float(cfg_value(cfg, "classifier_free_guidance.inference_coef", 3.0))
        report(0.6, "convert")
        model.eval().save_pretrained(out)
        _save_processor(out, tokenizer_folder, codec.config, channels, melody)
    report(1.0, "convert")


def _save_processor(out: Path, tokenizer_folder: Path, codec: Any, channels: int, melody: bool) -> None:
    from transformers import AutoTokenizer, EncodecFeatureExtractor

    AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True).save_pretrained(out)
    if melody:
        settings = {
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
            "processor_class": "MusicgenMelodyProcessor",
            "feature_size": 12,
            "sampling_rate": int(codec.sampling_rate),
            "hop_length": 4096,
            "chunk_length": 30,
            "n_fft": 16384,
            "num_chroma": 12,
            "padding_value": 0.0,
            "return_attention_mask": False,
        }
        (out / "preprocessor_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    else:
        extractor = EncodecFeatureExtractor(
            feature_size=channels, sampling_rate=int(codec.sampling_rate), padding_side="left"
        )
        extractor.save_pretrained(out)


def _stamp(folder: Path) -> str:
    """What the conversion was made from: the checkpoint files' sizes and times, and the converter version."""
    files = {}
    for name in (loading.AUDIOCRAFT_LM, loading.AUDIOCRAFT_CODEC):
        path = folder / name
        if path.is_file():
            st = path.stat()
            files[name] = [st.st_size, st.st_mtime_ns]
    return json.dumps({"converter": CONVERTER_VERSION, "files": files}, sort_keys=True)


def _current(out: Path, stamp: str) -> bool:
    marker = out / STAMP
    return (
        loading.is_transformers_dir(out) and marker.is_file() and marker.read_text(encoding="utf-8") == stamp
    )


def ensure_converted(
    folder: Path, *, allow_download: bool = False, progress: ProgressCallback | None = None
) -> Path:
    """``<folder>/converted/``, converting the checkpoint in ``folder`` first when it is missing or stale.

    The conversion is written into a temp folder beside it and renamed into place, so a reader never sees a
    half-written model; two processes converting at once each write their own and the first rename wins.
    """
    out = folder / loading.CONVERTED
    stamp = _stamp(folder)
    if _current(out, stamp):
        return out
    tmp = folder / f".converting-{secrets.token_hex(6)}"
    try:
        tmp.mkdir()
        convert_checkpoint(folder, tmp, allow_download=allow_download, progress=progress)
        (tmp / STAMP).write_text(stamp, encoding="utf-8")
        old = folder / f".old-{secrets.token_hex(6)}"
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if not _current(out, stamp):
                raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise AudioWriteError(
            f"could not write the converted model into {out} ({exc}); make {folder} writable, or convert it "
            "elsewhere with: python -m bridge.engines.musicgen.convert CHECKPOINT_FOLDER OUT_FOLDER"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge.engines.musicgen.convert CHECKPOINT_FOLDER [OUT_FOLDER]``: convert without running."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "checkpoint", type=Path, help="folder holding state_dict.bin (+ compression_state_dict.bin)"
    )
    parser.add_argument("out", type=Path, nargs="?", help="output folder (default: CHECKPOINT/converted)")
    parser.add_argument("--allow-download", action="store_true", help="fetch t5-base / EnCodec if missing")
    args = parser.parse_args(argv)
    if args.out is None:
        print(ensure_converted(args.checkpoint, allow_download=args.allow_download))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(args.checkpoint, args.out, allow_download=args.allow_download)
        print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
