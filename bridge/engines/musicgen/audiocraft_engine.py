"""The ``audiocraft`` engine: MusicGen through Meta's audiocraft package, where audiocraft installs.

audiocraft 1.3 pins torch 2.1 and torchaudio/av versions that do not install beside current Python and torch,
so this engine is only available in an environment of its own (Python 3.10, torch 2.1:
``pip install 'stembridge[audiocraft]'``). Everywhere else the ``musicgen`` engine runs the same published
models, and audiocraft fine-tuning checkpoints once converted (:mod:`.convert`), on transformers.

It is the ``musicgen`` engine with another model call: the same windows on the bar grid, prompts, text,
stitching and demucs isolation, with audiocraft's ``generate_continuation`` (or ``generate`` without a
context) in place of transformers' ``generate``. Chroma conditioning is not used here (audiocraft's
``generate_with_chroma`` takes no audio prompt).

Not tested in stembridge's development environment, where audiocraft cannot be installed: only its
registration and its unavailability message are; the code follows audiocraft 1.3's documented API
(``MusicGen.get_pretrained``, ``set_generation_params``, ``set_custom_progress_callback``,
``generate_continuation``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.engines.base import Progress, ProgressCallback, model_is_path
from bridge.engines.musicgen import loading
from bridge.engines.musicgen.engine import MusicgenEngine
from bridge.errors import ModelNotFound

if TYPE_CHECKING:
    from bridge.engines.musicgen.sampler import Sampling

if importlib.util.find_spec("audiocraft") is None:
    raise ImportError(
        "audiocraft is not installed; it needs an environment of its own (Python 3.10 with torch 2.1): "
        "pip install 'stembridge[audiocraft]'. The musicgen engine runs the same models without it"
    )


def _find(model: str | None, models_dir: Path | None) -> tuple[Path | None, list[str]]:
    """A folder holding audiocraft's ``state_dict.bin`` for ``model``, and the places looked."""
    text = (model or loading.DEFAULT_MODEL).strip()
    if model_is_path(text):
        folder = Path(text).expanduser()
        return (folder if loading.is_audiocraft_dir(folder) else None), [str(folder)]
    repo_id = loading.repo_id_for(text)
    name = repo_id.split("/")[-1] if repo_id else text
    looked = []
    candidates = []
    if models_dir is not None:
        candidates.append(Path(models_dir).expanduser() / name)
        looked.append(str(candidates[-1]))
    if repo_id is not None:
        snapshots = loading.repo_cache_dir(repo_id) / "snapshots"
        looked.append(f"the Hugging Face cache ({snapshots.parent})")
        candidates += sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    return next((c for c in candidates if loading.is_audiocraft_dir(c)), None), looked


class AudiocraftEngine(MusicgenEngine):
    """MusicGen on audiocraft (see the module docstring); options as :class:`MusicgenEngine`."""

    name = "audiocraft"

    def _load(
        self, model: str | None, models_dir: Path | None, device: str, allow_download: bool
    ) -> loading.LoadedModel:
        from audiocraft.models import MusicGen

        folder, looked = _find(model, models_dir)
        repo_id = loading.repo_id_for((model or loading.DEFAULT_MODEL).strip())
        if folder is None and not (allow_download and repo_id):
            raise ModelNotFound(
                f"audiocraft model {model or loading.DEFAULT_MODEL!r} not found (looked in {'; '.join(looked)}); "
                f"fetch it with: stembridge models pull {model or loading.DEFAULT_MODEL}"
            )
        net: Any = MusicGen.get_pretrained(
            str(folder) if folder is not None else str(repo_id), device=self.device
        )
        name = folder.name if folder is not None and repo_id is None else (repo_id or "").split("/")[-1]
        hop = int(round(net.sample_rate / net.frame_rate))
        return loading.LoadedModel(
            model=net,
            tokenizer=None,
            name=name,
            melody=False,
            sample_rate=int(net.sample_rate),
            channels=int(net.audio_channels),
            hop=hop,
            num_codebooks=int(net.lm.num_codebooks),
            max_frames=int(net.max_duration * net.frame_rate),
            device=device,
            nbytes=sum(p.numel() * p.element_size() for p in net.lm.parameters()),
        )

    @classmethod
    def model_status(cls, model: str, models_dir: Path | None) -> str | None:
        folder, looked = _find(model, models_dir)
        if folder is not None:
            return None
        return f"audiocraft model {model!r} not found (looked in {'; '.join(looked)}); fetch it with: stembridge models pull {model}"

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
        """The continuations ``[B, C, frames * hop]``; audiocraft samples from torch's global generator, seeded
        here by the first row's seed (its rows are drawn together, so a row's take depends on the batch)."""
        import torch

        from bridge.engines.musicgen.sampler import seeded

        report = Progress(progress)
        lm = self._lm
        net = lm.model
        prompt = 0 if prompts is None else prompts.shape[-1]
        net.set_generation_params(
            use_sampling=True,
            top_k=sampling.top_k,
            temperature=sampling.temperature,
            cfg_coef=sampling.guidance_scale,
            duration=(prompt + frames * lm.hop) / lm.sample_rate,
        )
        net.set_custom_progress_callback(lambda done, total: report(done / max(1, total), "generate"))
        with seeded(seeds[0], lm.device):
            if prompts is None:
                wav = net.generate(texts, progress=False)
            else:
                audio = torch.from_numpy(np.ascontiguousarray(prompts[rows])).to(lm.device)
                wav = net.generate_continuation(audio, lm.sample_rate, texts, progress=False)
        out = wav.float().cpu().numpy()[..., prompt:]
        want = frames * lm.hop
        if out.shape[-1] < want:
            out = np.pad(out, ((0, 0), (0, 0), (0, want - out.shape[-1])))
        return np.ascontiguousarray(out[..., :want], dtype=np.float32)
