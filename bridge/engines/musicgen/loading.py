"""Which MusicGen weights a model name means, whether they are here, and loading them.

A model is named by:

- a folder (``--model PATH``): a transformers ``save_pretrained`` folder (``config.json``, ``model.safetensors``,
  ``preprocessor_config.json`` and tokenizer files) or an audiocraft fine-tuning checkpoint (``state_dict.bin``
  and ``compression_state_dict.bin``, converted once into ``<folder>/converted/``, see :mod:`.convert`);
- a name: ``<models-dir>/<name>/`` holding either of the above, else, for the published models
  (``musicgen-small``, ``musicgen-melody``, ``musicgen-stereo-small``...; ``facebook/<name>`` on the hub), the
  Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``).

Nothing is downloaded unless the caller allows it; a missing model raises :class:`ModelNotFound` naming every
place looked and ``stembridge models pull NAME``. Presence checks (:func:`model_status`) only stat files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.engines.base import Progress, ProgressCallback, model_is_path
from bridge.errors import InvalidArgument, ModelNotFound

DEFAULT_MODEL = "musicgen-small"
HUB_ORG = "facebook"
KNOWN_MODELS = (
    "musicgen-small",
    "musicgen-medium",
    "musicgen-large",
    "musicgen-melody",
    "musicgen-melody-large",
    "musicgen-stereo-small",
    "musicgen-stereo-medium",
    "musicgen-stereo-large",
    "musicgen-stereo-melody",
    "musicgen-stereo-melody-large",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
AUDIOCRAFT_LM = "state_dict.bin"
AUDIOCRAFT_CODEC = "compression_state_dict.bin"
CONVERTED = "converted"
# What `models pull` fetches: configs, safetensors weights, tokenizer; not the duplicate .bin weights.
PULL_PATTERNS = ["*.json", "*.safetensors", "spiece.model", "*.txt"]
MODEL_TYPES = ("musicgen", "musicgen_melody")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are.

    Attributes:
        name: what results report: the catalogue name, or the folder's name.
        kind: ``transformers`` (a ``save_pretrained`` folder), ``audiocraft`` (a fine-tuning checkpoint
            folder) or ``hub`` (to be downloaded; only when downloads are allowed).
        path: the folder (``None`` for ``hub``).
        repo_id: the hub id, when the model has one.
    """

    name: str
    kind: str
    path: Path | None
    repo_id: str | None = None


@dataclass
class LoadedModel:
    """A model ready to generate, with what the engine needs to know about it."""

    model: Any
    tokenizer: Any
    name: str
    melody: bool
    sample_rate: int
    channels: int
    hop: int
    num_codebooks: int
    max_frames: int
    device: str
    nbytes: int
    chroma: dict[str, Any] | None = None
    folder: Path | None = None  # where the weights were loaded from (training copies its processor files)


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (not at import)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def repo_id_for(name: str) -> str | None:
    """``musicgen-small`` -> ``facebook/musicgen-small``; ``org/name`` stays; other bare names have none."""
    text = name.strip()
    if "/" in text:
        return text
    if text.lower() in KNOWN_MODELS:
        return f"{HUB_ORG}/{text.lower()}"
    return None


def repo_cache_dir(repo_id: str, cache: Path | None = None) -> Path:
    """``<cache>/models--org--name``, the hub cache's folder for ``repo_id``."""
    return (cache or hf_hub_cache()) / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` holding a complete model (``refs/main`` first), or ``None``."""
    repo_dir = repo_cache_dir(repo_id, cache)
    candidates: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidates.append(repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip())
    snapshots = repo_dir / "snapshots"
    if snapshots.is_dir():
        candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((snap for snap in candidates if is_transformers_dir(snap)), None)


def is_transformers_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def is_audiocraft_dir(folder: Path) -> bool:
    return (folder / AUDIOCRAFT_LM).is_file()


def _looks_like_path(text: str) -> bool:
    return model_is_path(text)


def _folder_source(folder: Path, name: str, repo_id: str | None = None) -> ModelSource | None:
    if is_transformers_dir(folder):
        return ModelSource(name, "transformers", folder, repo_id)
    if is_audiocraft_dir(folder):
        return ModelSource(name, "audiocraft", folder, repo_id)
    return None


def _not_a_model(folder: Path) -> ModelNotFound:
    return ModelNotFound(
        f"the folder {folder} holds no MusicGen model: expected a transformers save_pretrained folder "
        f"(config.json + model.safetensors + processor files) or an audiocraft checkpoint "
        f"({AUDIOCRAFT_LM} + {AUDIOCRAFT_CODEC})"
    )


def find(
    model: str | None, models_dir: Path | None, cache: Path | None = None
) -> tuple[ModelSource | None, list[str]]:
    """The weights of ``model`` on this machine (or ``None``) and the places looked, without loading anything."""
    text = (model or DEFAULT_MODEL).strip()
    if not text:
        raise InvalidArgument("model must be a name such as musicgen-small or a folder, got ''")
    as_path = Path(text).expanduser()
    if _looks_like_path(text):
        if not as_path.is_dir():
            return None, [str(as_path)]
        source = _folder_source(as_path, as_path.name)
        if source is None:
            raise _not_a_model(as_path)
        return source, [str(as_path)]
    repo_id = repo_id_for(text)
    name = repo_id.split("/")[-1] if repo_id else text
    looked: list[str] = []
    if models_dir is not None:
        folder = Path(models_dir).expanduser() / name
        looked.append(f"{folder}{os.sep}")
        source = _folder_source(folder, name, repo_id)
        if source is not None:
            return source, looked
    if repo_id is not None:
        cache = cache or hf_hub_cache()
        looked.append(f"the Hugging Face cache ({repo_cache_dir(repo_id, cache)})")
        snapshot = cached_snapshot(repo_id, cache)
        if snapshot is not None:
            return ModelSource(name, "transformers", snapshot, repo_id), looked
    return None, looked


def missing_message(model: str | None, looked: list[str]) -> str:
    text = (model or DEFAULT_MODEL).strip()
    where = "; ".join(looked) or "nowhere"
    if _looks_like_path(text) or Path(text).expanduser().is_absolute():
        return f"MusicGen model folder {text} does not exist; pass an existing folder to --model"
    repo_id = repo_id_for(text)
    if repo_id is None:
        return (
            f"MusicGen model {text!r} not found (looked in {where}); put a transformers save_pretrained "
            f"folder or an audiocraft checkpoint there, or use one of: {', '.join(KNOWN_MODELS)}"
        )
    name = repo_id.split("/")[-1]
    return (
        f"MusicGen model {name!r} not found (looked in {where}); fetch it with: stembridge models pull {name} "
        f"(or allow downloads with --allow-download, or pass --model /path/to/folder)"
    )


def resolve(
    model: str | None, models_dir: Path | None, *, allow_download: bool = False, cache: Path | None = None
) -> ModelSource:
    """Where the weights of ``model`` are; raises :class:`ModelNotFound` unless they are here or may be fetched."""
    source, looked = find(model, models_dir, cache)
    if source is not None:
        return source
    repo_id = repo_id_for((model or DEFAULT_MODEL).strip())
    if allow_download and repo_id is not None and not _looks_like_path((model or "").strip()):
        return ModelSource(repo_id.split("/")[-1], "hub", None, repo_id)
    raise ModelNotFound(missing_message(model, looked))


def model_status(model: str, models_dir: Path | None) -> str | None:
    """Why ``model`` cannot run here, or ``None``: file checks only."""
    try:
        source, looked = find(model, models_dir)
    except (ModelNotFound, InvalidArgument) as exc:
        return str(exc)
    return None if source is not None else missing_message(model, looked)


def pick_device(device: str | None) -> str:
    """``auto`` (or ``None``): cuda, then mps, then cpu; otherwise check the named device exists here."""
    import torch

    text = (device or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if text == "cpu":
        return text
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if not torch.cuda.is_available():
            raise InvalidArgument(
                f"device {device!r} is not available: no CUDA GPU here; use --device cpu or auto"
            )
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InvalidArgument(
                f"device {device!r} does not exist; this machine has cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return text
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidArgument(f"device {device!r} is not available here; use --device cpu or auto")
        return text
    raise InvalidArgument(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")


def _feature_extractor_config(folder: Path) -> dict[str, Any] | None:
    """The feature extractor's settings: ``preprocessor_config.json`` (the hub's layout) or the
    ``feature_extractor`` of ``processor_config.json`` (what transformers 5 saves)."""
    for name, key in ((PREPROCESSOR_FILES[0], None), (PREPROCESSOR_FILES[1], "feature_extractor")):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data = data.get(key, {}) if key else data
            return data if isinstance(data, dict) else {}
    return None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars and warnings off for the body (they would break into our progress line),
    restored afterwards."""
    from transformers.utils import logging as transformers_logging

    hf_logging: Any = transformers_logging
    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _check_processor_files(folder: Path) -> None:
    missing = (
        [] if any((folder / f).is_file() for f in PREPROCESSOR_FILES) else [" or ".join(PREPROCESSOR_FILES)]
    )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise ModelNotFound(
            f"the MusicGen folder {folder} lacks {', '.join(missing)}; save the processor beside the model "
            "(processor.save_pretrained(folder)) or fetch the model again with stembridge models pull NAME"
        )


def load(
    source: ModelSource,
    device: str,
    *,
    allow_download: bool = False,
    progress: ProgressCallback | None = None,
    precision: str = "float32",
) -> LoadedModel:
    """Load the model and its processor onto ``device`` (already checked by :func:`pick_device`).

    ``precision="bfloat16"`` (a CPU's): the text encoder and the decoder are kept in bfloat16 (about 2.4 times
    faster decoding on a CPU with hardware bfloat16), the EnCodec audio codec stays float32, so prompts are
    encoded and takes decoded at full precision."""
    report = Progress(progress)
    report(0.0, "load")
    folder = source.path
    if source.kind == "hub":
        folder = pull(source.repo_id or source.name)
    elif source.kind == "audiocraft" and folder is not None:
        from bridge.engines.musicgen.convert import ensure_converted

        folder = ensure_converted(folder, allow_download=allow_download, progress=report.sub(0.0, 0.8))
    if folder is None:
        raise ModelNotFound(f"MusicGen model {source.name!r} has no folder to load from")
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelNotFound(
            f"the folder {folder} holds a {model_type!r} model, not MusicGen ({' or '.join(MODEL_TYPES)})"
        )
    _check_processor_files(folder)
    import torch
    from transformers import AutoTokenizer

    if model_type == "musicgen_melody":
        from transformers import MusicgenMelodyForConditionalGeneration as model_class
    else:
        from transformers import MusicgenForConditionalGeneration as model_class  # type: ignore[assignment]
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    dtype_arg: dict[str, Any] = {"dtype": dtype}
    if precision == "bfloat16":
        # torch's fused attention is several times slower in bfloat16 than in float32 on the CPU (1.9 against
        # 0.24 ms per decoding step and layer here), while plain matrix products with a float32 softmax, the
        # "eager" attention, are as fast as float32's fused one
        dtype_arg["attn_implementation"] = "eager"
    try:
        with quiet_transformers():
            model: Any = model_class.from_pretrained(folder, local_files_only=True, **dtype_arg)
            # Only the tokenizer: prompts are encoded and melody chroma computed by the engine (the melody
            # feature extractor would need torchaudio).
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(
            f"could not load the MusicGen model in {folder} ({exc}); fetch it again with "
            f"stembridge models pull {source.name}"
        ) from exc
    model = model.to(device).eval()
    if precision == "bfloat16":
        for name, child in model.named_children():
            if name != "audio_encoder":
                child.to(torch.bfloat16)
    codec = model.config.audio_encoder
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        melody=model_type == "musicgen_melody",
        sample_rate=int(codec.sampling_rate),
        channels=int(model.config.decoder.audio_channels),
        hop=int(codec.hop_length),
        num_codebooks=int(model.config.decoder.num_codebooks),
        max_frames=int(model.config.decoder.max_position_embeddings),
        device=device,
        nbytes=sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())),
        chroma=_feature_extractor_config(folder) if model_type == "musicgen_melody" else None,
        folder=folder,
    )
    report(1.0, "load")
    return loaded


def pull(name: str, models_dir: Path | None = None) -> Path:
    """Download a published MusicGen model into the Hugging Face cache (``stembridge models pull NAME``).

    The models folder is not used: the standard cache is where every tool finds it (the engine looks there).

    Returns:
        The snapshot folder.

    Raises:
        InvalidArgument: ``name`` is a path, or not a hub model.
        ModelNotFound: the download failed (offline, unknown repository...).
    """
    if _looks_like_path(name.strip()):
        raise InvalidArgument(f"models pull takes a model name such as musicgen-small, got the path {name!r}")
    repo_id = repo_id_for(name)
    if repo_id is None:
        raise InvalidArgument(
            f"{name!r} is not a MusicGen model on the Hugging Face hub; known: {', '.join(KNOWN_MODELS)}"
        )
    from huggingface_hub import snapshot_download

    cache = hf_hub_cache()
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=PULL_PATTERNS))
        if not is_transformers_dir(folder):  # a repository with .bin weights only
            folder = Path(
                snapshot_download(repo_id, cache_dir=cache, allow_patterns=[*PULL_PATTERNS, "*.bin"])
            )
    except Exception as exc:  # network and hub errors come in many types; all mean "not fetched"
        raise ModelNotFound(
            f"could not download {repo_id} into {cache} ({type(exc).__name__}: {exc}); check the network "
            "connection and that HF_HUB_OFFLINE is not set"
        ) from exc
    if not is_transformers_dir(folder):
        raise ModelNotFound(f"{repo_id} was downloaded to {folder} but holds no transformers weights")
    return folder
