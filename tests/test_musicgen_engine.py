"""The musicgen engine end to end on tiny MusicGen models with random weights, saved as users' caches hold them.

The models are the real transformers architectures (T5 text encoder, EnCodec 32 kHz, MusicGen decoder) made
tiny; they are loaded back through the engine's own loading path (a folder, ``<models-dir>/<name>/``, the
Hugging Face cache layout) with the hub offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bridge.audio.analysis import Key  # noqa: E402
from bridge.audio.timing import Grid, TimeSignature  # noqa: E402
from bridge.engines.base import GenerateSpec, available_engines, load_engine, resolve_engine_name  # noqa: E402
from bridge.engines.musicgen import conditioning, loading  # noqa: E402
from bridge.engines.musicgen.engine import MusicgenEngine  # noqa: E402
from bridge.errors import Cancelled, InvalidArgument, ModelNotFound  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402

SR = 44100
FAST = conditioning.Settings(prompt=2.0)  # one bar of prompt at 120 bpm: keeps the tiny runs short


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    """No hub, and torch on one thread for these tiny models (restored afterwards)."""
    with mf.one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``models/tiny`` (musicgen), ``models/tiny-melody``, and an HF cache holding facebook/musicgen-small."""
    root = tmp_path_factory.mktemp("musicgen")
    models_dir = root / "models"
    tiny = mf.save_musicgen(mf.musicgen_model(seed=1), models_dir / "tiny")
    melody = mf.save_musicgen(mf.musicgen_model(melody=True, seed=2), models_dir / "tiny-melody")
    cache = root / "hub"
    mf.save_musicgen(mf.musicgen_model(seed=1), mf.hf_cache_folder(cache, "facebook/musicgen-small"))
    return {"root": root, "models_dir": models_dir, "tiny": tiny, "melody": melody, "cache": cache}


@pytest.fixture(scope="module")
def engine(models: dict[str, Path]) -> MusicgenEngine:
    return MusicgenEngine(model=str(models["tiny"]), isolate=False, windows=FAST)


def _context(bpm: float = 120.0, bars: int = 2, sr: int = SR) -> np.ndarray:
    """A stereo A-minor context: an A2 bass note and an A-C-E chord, bar-long."""
    n = Grid(bpm, sample_rate=sr).samples_for_bars(bars)
    t = np.arange(n) / sr
    tone = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 261.63, 329.63)) * 0.1
    env = np.minimum(1.0, 20 * (t % (60 / bpm * 4)))
    return np.stack([tone * env, tone * env * 0.9]).astype(np.float32)


def _write(path: Path, audio: np.ndarray, sr: int = SR) -> None:
    import soundfile as sf

    sf.write(str(path), audio.T, sr, subtype="FLOAT")


# ------------------------------------------------------------------------------------------------ loading


def test_model_status_checks_files_only(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(models["cache"]))
    assert MusicgenEngine.model_status("tiny", models["models_dir"]) is None
    assert MusicgenEngine.model_status(str(models["melody"]), None) is None
    assert MusicgenEngine.model_status("musicgen-small", None) is None  # the HF cache layout
    reason = MusicgenEngine.model_status("musicgen-medium", models["models_dir"])
    assert reason is not None
    assert str(models["models_dir"] / "musicgen-medium") in reason
    assert "models--facebook--musicgen-medium" in reason
    assert "stembridge models pull musicgen-medium" in reason


def test_missing_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFound) as err:
        MusicgenEngine(model="musicgen-melody", models_dir=tmp_path / "models")
    message = str(err.value)
    assert "'musicgen-melody'" in message and str(tmp_path / "models" / "musicgen-melody") in message
    assert "stembridge models pull musicgen-melody" in message
    with pytest.raises(ModelNotFound, match="does not exist"):
        MusicgenEngine(model=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"holds no MusicGen model.*state_dict\.bin"):
        MusicgenEngine(model=str(tmp_path / "empty"))


def test_missing_model_through_the_cli_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    wav = tmp_path / "ctx.wav"
    _write(wav, _context())
    code = main(
        [
            "generate",
            "--stem",
            "bass",
            "--context",
            str(wav),
            "--bpm",
            "120",
            "--bars",
            "2",
            "--engine",
            "musicgen",
        ]
        + ["--models-dir", str(tmp_path / "models"), "--out", str(tmp_path / "out"), "--json"]
    )
    assert code == 2
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error["code"] == "model_not_found" and "stembridge models pull musicgen-small" in error["message"]


def test_loads_by_models_dir_and_from_the_hf_cache(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(models["cache"]))
    by_name = MusicgenEngine(model="tiny", models_dir=models["models_dir"], isolate=False)
    assert (by_name.model_name, by_name.sample_rate, by_name.melody) == ("tiny", 32000, False)
    cached = MusicgenEngine(model="musicgen-small", isolate=False)  # no models dir: the cache
    assert cached.model_name == "musicgen-small" and cached.model_bytes > 0
    assert MusicgenEngine(model=str(models["melody"]), isolate=False).melody


def test_device_is_checked() -> None:
    import torch

    assert loading.pick_device("auto") in ("cpu", "cuda", "mps")
    assert loading.pick_device("cpu") == "cpu"
    with pytest.raises(InvalidArgument, match="device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"):
        loading.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match="no CUDA GPU"):
            loading.pick_device("cuda")


def test_registry_and_auto(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engines = available_engines()
    assert engines["musicgen"] is None
    assert engines["audiocraft"] is not None and "own" in engines["audiocraft"]  # needs its own environment
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert resolve_engine_name("auto", "generate") == "builtin"  # no MusicGen weights here
    monkeypatch.setenv("HF_HUB_CACHE", str(models["cache"]))
    assert resolve_engine_name("auto", "generate") == "musicgen"  # musicgen-small is cached
    assert resolve_engine_name("auto", "vary") == "musicgen"


def test_pull_downloads_into_the_hf_cache(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_download(repo_id: str, **kwargs: Any) -> str:
        calls.append((repo_id, kwargs))
        return str(models["tiny"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("HF_HUB_CACHE", str(models["cache"]))
    assert loading.pull("musicgen-stereo-small") == models["tiny"]
    assert calls[0][0] == "facebook/musicgen-stereo-small"
    assert calls[0][1]["cache_dir"] == models["cache"] and "*.safetensors" in calls[0][1]["allow_patterns"]
    with pytest.raises(InvalidArgument, match="not a MusicGen model on the Hugging Face hub"):
        loading.pull("my-finetune")


# ---------------------------------------------------------------------------------------------- generate


def test_generate_through_the_cli_is_bar_exact(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    from bridge.cli import main

    wav = tmp_path / "song_keys.wav"
    _write(wav, _context())
    argv = ["generate", "--stem", "bass", "--context", str(wav), "--bpm", "120", "--bars", "2"]
    argv += ["--engine", "musicgen", "--model", str(models["tiny"]), "--out", str(tmp_path / "out"), "--json"]
    assert main([*argv, "--variations", "2", "--seed", "7"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["engine"], result["model"]) == ("musicgen", "tiny")
    assert len(result["outputs"]) == 2
    takes = []
    for output in result["outputs"]:
        info = sf.info(output["path"])
        assert (info.samplerate, info.frames, info.channels) == (SR, 176400, 2)  # 2 bars at 120 bpm, 44.1 kHz
        audio, _ = sf.read(output["path"], always_2d=True)
        assert np.max(np.abs(audio)) > 1e-3
        takes.append(audio)
    assert not np.allclose(takes[0], takes[1])


def test_seeds_are_reproducible(engine: MusicgenEngine) -> None:
    import torch

    spec = GenerateSpec(stem="bass", bpm=240, bars=2, seed=3, variations=2)
    state = torch.random.get_rng_state()
    first = engine.generate(_context(240), SR, spec)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    again = engine.generate(_context(240), SR, spec)
    other = engine.generate(
        _context(240), SR, GenerateSpec(stem="bass", bpm=240, bars=2, seed=4, variations=2)
    )
    n = Grid(240, sample_rate=SR).samples_for_bars(2)
    assert [t.shape for t in first] == [(2, n), (2, n)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.allclose(first[0], other[0]) and not np.allclose(first[0], first[1])


def _spy_rows(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record each call of :func:`sampling.generate_rows` (one batch of rows) with its arguments."""
    from bridge.engines.musicgen import sampling

    calls: list[dict[str, Any]] = []
    real = sampling.generate_rows

    def spy(lm: Any, texts: Any, prompts: Any, melody: Any, rows: Any, seeds: Any, *rest: Any) -> Any:
        calls.append({"texts": texts, "prompts": prompts, "melody": melody, "rows": rows, "seeds": seeds})
        return real(lm, texts, prompts, melody, rows, seeds, *rest)

    monkeypatch.setattr(sampling, "generate_rows", spy)
    return calls


def test_variations_are_one_batch(engine: MusicgenEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_rows(monkeypatch)
    takes = engine.generate(_context(240), SR, GenerateSpec(stem="keys", bpm=240, bars=2, variations=4))
    assert len(takes) == 4 and len(calls) == 1
    assert calls[0]["rows"] == [0, 0, 0, 0] and len(set(calls[0]["seeds"])) == 4  # one window, four seeds
    prompt_frames = conditioning.prompt_samples(Grid(240, sample_rate=32000), 640, FAST.prompt) // 640
    assert calls[0]["prompts"].shape == (1, 1, prompt_frames * 640)  # the shared prompt, once


def test_variations_share_one_prompt_prefill(engine: MusicgenEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder runs over the prompt once for all variations; variation v is the same take whether one or
    three were asked for."""
    from bridge.engines.musicgen import decoding

    decoder = engine._lm.model.decoder
    real = decoder.forward
    calls: list[tuple[int, int]] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs["input_ids"]
        calls.append((int(ids.shape[0]) // 4, int(ids.shape[-1])))  # (rows, positions); 4 codebooks
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", counting)
    spec = GenerateSpec(stem="bass", bpm=240, bars=1, variations=3, seed=11)
    shared = engine.generate(_context(240), SR, spec)
    prompt_frames = conditioning.prompt_samples(Grid(240, sample_rate=32000), 640, FAST.prompt) // 640
    # one prefill, over the start token and the distinct prompt in chunks, both guidance halves
    prefill = [n for rows, n in calls if rows == 2]
    assert sum(prefill) == prompt_frames + 1 and len(prefill) == -(
        -(prompt_frames + 1) // decoding.PREFILL_CHUNK
    )
    assert all(rows == 6 and n == 1 for rows, n in calls[len(prefill) :])  # then 3 rows x 2 halves per step
    one = GenerateSpec(stem="bass", bpm=240, bars=1, variations=1, seed=11)
    (alone,) = engine.generate(_context(240), SR, one)
    np.testing.assert_allclose(shared[0], alone, atol=1e-5)
    assert not np.allclose(shared[0], shared[1])


def test_text_prompt_names_stem_prompt_tempo_and_key(
    engine: MusicgenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        conditioning.text_prompt("bass", " funky slap ", 120, Key(9, "minor"))
        == "solo bass line, funky slap, 120 bpm, in A minor"
    )
    assert conditioning.text_prompt("pad", "", 96.5, None, TimeSignature(6, 8)) == (
        "solo ambient synth pad, sustained chords, 96.5 bpm, 6/8 time"
    )
    calls = _spy_rows(monkeypatch)
    engine.generate(_context(240), SR, GenerateSpec(stem="bass", bpm=240, bars=1, prompt="dub"))
    assert calls[0]["texts"] == ["solo bass line, dub, 240 bpm, in A minor"]


def test_windows_cover_the_context_bars(engine: MusicgenEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each window is prompted by the context right before it (the loop's end for bar 1) and lands on its own
    bars; with a fake model call whose rows are constants, the take shows which window made each sample."""
    rate, hop = 32000, 640
    grid = Grid(120, sample_rate=rate)
    plan = conditioning.plan(grid, 0, grid.samples_for_bars(16), hop, conditioning.Settings())
    assert [(w.start, w.stop) for w in plan.windows] == [(0, 8 * 64000), (8 * 64000, 16 * 64000)]
    assert plan.windows[0].begin == 0 and plan.windows[1].begin == 8 * 64000 - 1280  # 40 ms crossfade
    assert plan.prompt == 5 * 64000 and plan.prompt % hop == 0  # five whole bars = 10 s
    seen: dict[str, Any] = {}

    def fake(
        texts: list[str],
        prompts: Any,
        melody: Any,
        rows: list[int],
        seeds: list[int],
        frames: int,
        *rest: Any,
    ) -> np.ndarray:
        seen.update(prompts=prompts, rows=rows, frames=frames)
        out = np.zeros((len(rows), 1, frames * hop), dtype=np.float32)
        out[:] = (np.asarray(rows, dtype=np.float32) + 1.0)[:, None, None]
        return out

    monkeypatch.setattr(engine, "_generate_rows", fake)
    monkeypatch.setattr(engine, "windows", conditioning.Settings(prompt=2.0, total=10.0))  # 3-bar windows
    context = _context(120, bars=4, sr=rate)
    takes = engine.generate(context, rate, GenerateSpec(stem="bass", bpm=120, bars=6))
    bar = 64000
    assert seen["rows"] == [0, 1]
    prompt = seen["prompts"].shape[-1]
    assert prompt == bar  # one whole bar of prompt
    loop = np.tile(context.mean(axis=0), 3)[4 * bar :]  # the context looped, from bar 1 (index 4 bars)
    np.testing.assert_allclose(seen["prompts"][0, 0], np.tile(context.mean(axis=0), 2)[-prompt:])  # bar 4
    fade = int(round(FAST.crossfade * rate))
    np.testing.assert_allclose(seen["prompts"][1, 0], loop[3 * bar - fade - prompt : 3 * bar - fade])
    take = takes[0][0]
    assert take.shape == (6 * bar,)
    assert np.all(take[: 3 * bar - fade] == 1.0) and np.all(take[3 * bar :] == 2.0)
    mid = take[3 * bar - fade : 3 * bar]
    assert np.all((mid > 0.99) & (mid < 2.24)) and mid[-1] > 1.99  # equal power, full on the downbeat


def test_cancel_mid_generation(engine: MusicgenEngine) -> None:
    import torch

    steps: list[float] = []

    def progress(fraction: float, stage: str) -> None:
        if stage == "generate":
            steps.append(fraction)
            if len(steps) == 10:
                raise Cancelled()

    state = torch.random.get_rng_state()
    with pytest.raises(Cancelled):
        engine.generate(_context(240), SR, GenerateSpec(stem="bass", bpm=240, bars=4), progress)
    assert len(steps) == 10 and steps[-1] < 0.5  # 10 of about 65 decoding steps
    assert torch.equal(torch.random.get_rng_state(), state)


def test_generate_without_context_and_progress_reaches_one(engine: MusicgenEngine) -> None:
    seen: list[tuple[float, str]] = []
    takes = engine.generate(
        None, 48000, GenerateSpec(stem="lead", bpm=240, bars=1), lambda f, s: seen.append((f, s))
    )
    assert [t.shape for t in takes] == [(2, 48000)]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and seen[-1] == (1.0, "done")


def test_melody_model_is_conditioned_on_the_context_chroma(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.engines.musicgen import decoding

    engine = MusicgenEngine(model=str(models["melody"]), isolate=False, windows=FAST)
    seen: list[Any] = []
    real = decoding.Decoder.run

    def spy(self: Any, cond: Any, *args: Any) -> Any:
        seen.append(cond.chroma)
        return real(self, cond, *args)

    monkeypatch.setattr(decoding.Decoder, "run", spy)
    takes = engine.generate(_context(240), SR, GenerateSpec(stem="piano", bpm=240, bars=2, variations=2))
    assert [t.shape for t in takes] == [(2, 88200)] * 2
    chroma = seen[0].float()
    assert chroma.shape[0] == 1 and chroma.shape[-1] == 12  # one window: its two variations share it
    assert np.all(chroma.sum(-1).numpy() == 1.0)  # one-hot frames
    assert np.bincount(chroma.argmax(-1).flatten().numpy(), minlength=12).argmax() in (9, 4, 0)  # A, E or C


def test_stereo_model_makes_two_channels(tmp_path: Path) -> None:
    folder = mf.save_musicgen(mf.musicgen_model(stereo=True, seed=4), tmp_path / "tiny-stereo")
    engine = MusicgenEngine(model=str(folder), isolate=False, windows=FAST)
    (take,) = engine.generate(_context(240), SR, GenerateSpec(stem="pad", bpm=240, bars=1))
    assert take.shape == (2, 44100) and not np.allclose(take[0], take[1])


# --------------------------------------------------------------------------------------------- isolation


def test_isolation_skipped_with_a_warning_when_demucs_weights_are_missing(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    engine = MusicgenEngine(model=str(models["tiny"]), models_dir=tmp_path / "empty", windows=FAST)
    (take,) = engine.generate(_context(240), SR, GenerateSpec(stem="bass", bpm=240, bars=1))
    assert take.shape == (2, 44100)
    assert len(engine.warnings) == 1 and "not isolated" in engine.warnings[0]


def test_isolation_with_demucs(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("demucs")
    demucs_dir = mf.demucs_models_dir(tmp_path)
    spec = GenerateSpec(stem="drums", bpm=240, bars=1, seed=2)
    plain = MusicgenEngine(model=str(models["tiny"]), isolate=False, windows=FAST).generate(
        _context(240), SR, spec
    )
    engine = MusicgenEngine(model=str(models["tiny"]), models_dir=demucs_dir, windows=FAST)
    (take,) = engine.generate(_context(240), SR, spec)
    assert engine.warnings == []
    assert take.shape == plain[0].shape and not np.allclose(take, plain[0])


# -------------------------------------------------------------------------------------------------- vary


def test_vary_keeps_the_first_bars_and_regenerates_the_rest(engine: MusicgenEngine) -> None:
    part = _context(240, bars=4)
    grid = Grid(240, sample_rate=SR)
    takes = engine.vary(part, SR, 3, 0.5, seed=1, grid=grid)
    assert len(takes) == 3 and all(t.shape == part.shape for t in takes)
    fade = int(round(FAST.crossfade * SR))
    kept = grid.samples_for_bars(2) - fade
    for take in takes:
        assert np.array_equal(take[:, :kept], part[:, :kept])  # bars 1-2 untouched
        assert not np.allclose(
            take[:, grid.samples_for_bars(2) :], part[:, grid.samples_for_bars(2) :], atol=1e-3
        )
    assert not np.allclose(takes[0], takes[1])
    assert all(np.array_equal(t, part) for t in engine.vary(part, SR, 2, 0.0, seed=1, grid=grid))
    with pytest.raises(InvalidArgument, match="strength must be between 0 and 1, got 1.5"):
        engine.vary(part, SR, 1, 1.5, seed=1, grid=grid)


def test_vary_through_the_pipeline(models: dict[str, Path], tmp_path: Path) -> None:
    from bridge.pipeline import OutputOptions, vary_file

    wav = tmp_path / "song_bass.wav"
    _write(wav, _context(240, bars=2))
    engine = load_engine("musicgen", "vary", model=str(models["tiny"]), windows=FAST, isolate=False)
    result = vary_file(
        wav, OutputOptions(tmp_path / "out"), variations=2, strength=1.0, bpm=240, bars=2, engine=engine
    )
    assert (result.engine, result.model) == ("musicgen", "tiny")
    for output in result.outputs:
        assert (output.sample_rate, output.samples, output.channels) == (SR, 88200, 2)  # 2 bars at 240 bpm
    assert os.path.getsize(result.outputs[0].path) > 1000


def test_precision_bfloat16_keeps_the_codec_in_float32(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from bridge.engines import precision

    def dtypes(engine: MusicgenEngine) -> tuple[set[Any], set[Any]]:
        model = engine._lm.model
        codec = {p.dtype for p in model.audio_encoder.parameters()}
        return codec, {p.dtype for p in model.decoder.parameters()}

    fast = MusicgenEngine(model=str(models["tiny"]), isolate=False, windows=FAST, precision="bfloat16")
    assert dtypes(fast) == ({torch.float32}, {torch.bfloat16})
    assert fast._lm.model.decoder.config._attn_implementation == "eager"  # torch's fused one is slow in bf16
    (take,) = fast.generate(_context(), SR, GenerateSpec(stem="bass", bpm=120, bars=1, seed=2))
    assert take.dtype == np.float32 and np.all(np.isfinite(take)) and np.max(np.abs(take)) > 1e-4
    exact = MusicgenEngine(model=str(models["tiny"]), isolate=False, windows=FAST, precision="float32")
    assert dtypes(exact) == ({torch.float32}, {torch.float32})
    assert fast.model_bytes < exact.model_bytes  # the decoder's weights take half the memory
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert MusicgenEngine(model=str(models["tiny"]), isolate=False).precision == "float32"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert MusicgenEngine(model=str(models["tiny"]), isolate=False).precision == "bfloat16"


def test_only_the_end_of_the_prompt_is_decoded(
    engine: MusicgenEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.engines.musicgen import sampling

    codec = engine._lm.model.audio_encoder
    lengths: list[int] = []
    decode = type(codec).decode

    def spy(self: Any, audio_codes: Any, *args: Any, **kwargs: Any) -> Any:
        lengths.append(int(audio_codes.shape[-1]))
        return decode(self, audio_codes, *args, **kwargs)

    monkeypatch.setattr(type(codec), "decode", spy)
    warmup = sampling.CODEC_WARMUP_FRAMES
    spec = GenerateSpec(stem="bass", bpm=120, bars=1, seed=5)
    fast = engine.generate(_context(bars=4), SR, spec)[0]
    monkeypatch.setattr(sampling, "CODEC_WARMUP_FRAMES", 10**6)  # decode the whole prompt, as generate does
    full = engine.generate(_context(bars=4), SR, spec)[0]
    hop_frames = engine._lm.sample_rate // engine._lm.hop  # frames per second
    # 1 bar at 120 bpm is 2 s of frames, plus the 0.25 s margin past the window and the warm-up
    assert lengths[0] < lengths[1] and lengths[0] <= hop_frames * 2.25 + warmup + 1
    error = float(np.sum((fast - full) ** 2) / np.sum(full**2))
    assert error < 1e-6  # the same audio: the codec has settled within the warm-up frames
