"""audiocraft checkpoints -> transformers: a round trip through audiocraft's on-disk format.

audiocraft cannot be installed here, so the checkpoints are written from tiny transformers MusicGen models by
the inverse mapping (tests/model_fixtures.py, written from audiocraft's module names, independently of the
converter's tables); converting them back must give the same weights and the same generated audio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bridge.engines.base import GenerateSpec  # noqa: E402
from bridge.engines.musicgen import conditioning  # noqa: E402
from bridge.engines.musicgen.convert import STAMP, ensure_converted, lm_to_transformers  # noqa: E402
from bridge.engines.musicgen.convert_encodec import rename  # noqa: E402
from bridge.engines.musicgen.engine import MusicgenEngine  # noqa: E402
from bridge.errors import InvalidArgument, ModelNotFound  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402

FAST = conditioning.Settings(prompt=2.0)


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    with mf.one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for this test."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _save_t5(cache: Path, model: Any) -> None:
    """The model's text encoder and tokenizer as t5-base in the HF cache (where MusicGen users have it)."""
    snapshot = mf.hf_cache_folder(cache, "t5-base")
    model.text_encoder.save_pretrained(snapshot)
    mf.t5_tokenizer().save_pretrained(snapshot)


def _same_weights(a: Any, b: Any, prefix: str = "") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    different = [k for k in sa if k.startswith(prefix) and not np.array_equal(sa[k].numpy(), sb[k].numpy())]
    assert different == []


@pytest.mark.parametrize("melody", [False, True], ids=["musicgen", "melody"])
def test_round_trip_gives_the_same_model_and_audio(hub: Path, tmp_path: Path, melody: bool) -> None:
    original = mf.musicgen_model(melody=melody, seed=5)
    reference = mf.save_musicgen(original, tmp_path / "reference")
    _save_t5(hub, original)
    checkpoint = mf.save_audiocraft(original, tmp_path / "models" / "my-finetune")
    converted = ensure_converted(checkpoint)
    assert converted == checkpoint / "converted" and (converted / STAMP).is_file()
    assert [p.name for p in checkpoint.iterdir() if p.name.startswith(".")] == []  # no temp folders left
    _same_weights(original, type(original).from_pretrained(converted))

    spec = GenerateSpec(stem="bass", bpm=240, bars=1, variations=2, seed=9)
    context = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32) * 0.1
    by_name = MusicgenEngine(model="my-finetune", models_dir=tmp_path / "models", isolate=False, windows=FAST)
    assert by_name.model_name == "my-finetune" and by_name.melody == melody
    ours = by_name.generate(context, 44100, spec)
    theirs = MusicgenEngine(model=str(reference), isolate=False, windows=FAST).generate(context, 44100, spec)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_pretrained_codec_and_t5_come_from_a_cached_musicgen(hub: Path, tmp_path: Path) -> None:
    """No t5-base and a compression_state_dict.bin naming facebook/encodec_32khz: both come from the
    musicgen-small in the cache (MusicGen ships T5 and EnCodec inside)."""
    original = mf.musicgen_model(seed=6)
    mf.save_musicgen(original, mf.hf_cache_folder(hub, "facebook/musicgen-small"))
    checkpoint = mf.save_audiocraft(original, tmp_path / "ft", fine_tuned_codec=False)
    converted = ensure_converted(checkpoint)
    _same_weights(original, type(original).from_pretrained(converted))


def test_missing_text_encoder_names_what_to_fetch(hub: Path, tmp_path: Path) -> None:
    checkpoint = mf.save_audiocraft(mf.musicgen_model(seed=7), tmp_path / "ft")
    with pytest.raises(ModelNotFound) as err:
        MusicgenEngine(model=str(checkpoint))
    message = str(err.value)
    assert "t5-base" in message and "models--t5-base" in message
    assert "stembridge models pull musicgen-small" in message and str(checkpoint / "t5") in message


def test_reconverts_when_the_checkpoint_changes(hub: Path, tmp_path: Path) -> None:
    original = mf.musicgen_model(seed=8)
    _save_t5(hub, original)
    checkpoint = mf.save_audiocraft(original, tmp_path / "ft")
    first = ensure_converted(checkpoint)
    stamp = (first / STAMP).read_text()
    weights = first / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert ensure_converted(checkpoint) == first and weights.stat().st_mtime_ns == mtime  # cached
    changed = mf.musicgen_model(seed=9)
    mf.save_audiocraft(changed, checkpoint)  # a new fine-tune in the same folder
    os.utime(checkpoint / "state_dict.bin", ns=(1, 1))
    again = ensure_converted(checkpoint)
    assert (again / STAMP).read_text() != stamp
    reloaded = type(changed).from_pretrained(again)
    _same_weights(changed, reloaded, "decoder.")  # the new fine-tune...
    _same_weights(original, reloaded, "text_encoder.")  # ...with the T5 from the cache (not part of it)


def test_unsafe_or_foreign_checkpoints_are_refused(hub: Path, tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(
        {"best_state": {"emb.0.weight": torch.zeros(3, 2)}, "xp.cfg": Path("x")}, folder / "state_dict.bin"
    )
    with pytest.raises(InvalidArgument, match="not an exported audiocraft checkpoint"):
        ensure_converted(folder)
    torch.save({"best_state": {"encoder.weight": torch.zeros(3, 2)}}, folder / "state_dict.bin")
    with pytest.raises(InvalidArgument, match="lacks emb.0.weight"):
        ensure_converted(folder)


def test_name_mapping() -> None:
    import torch

    dim = 4
    fused = torch.arange(3 * dim * dim, dtype=torch.float32).reshape(3 * dim, dim)
    parts = lm_to_transformers(
        {
            "transformer.layers.3.cross_attention.in_proj_weight": fused,
            "transformer.layers.3.norm_cross.bias": torch.ones(dim),
            "linears.2.weight": torch.ones(8, dim),
            "condition_provider.conditioners.description.output_proj.weight": torch.ones(dim, 6),
        },
        dim,
    )
    decoder = parts["decoder"]
    assert torch.equal(decoder["model.decoder.layers.3.encoder_attn.k_proj.weight"], fused[dim : 2 * dim])
    assert "model.decoder.layers.3.encoder_attn_layer_norm.bias" in decoder and "lm_heads.2.weight" in decoder
    assert list(parts["enc_to_dec_proj"]) == ["weight"]
    assert (
        rename("decoder.model.12.convtr.convtr.weight_g")
        == "decoder.layers.12.conv.parametrizations.weight.original0"
    )
    assert rename("quantizer.vq.layers.3._codebook.embed_avg") == "quantizer.layers.3.codebook.embed_avg"
    assert rename("encoder.model.1.shortcut.conv.conv.bias") == "encoder.layers.1.shortcut.conv.bias"
    with pytest.raises(InvalidArgument, match="in_proj_bias"):
        lm_to_transformers({"transformer.layers.0.self_attn.in_proj_bias": torch.ones(3 * dim)}, dim)
