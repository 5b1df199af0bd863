"""The demucs engine on tiny HTDemucs models with random weights, saved in the formats demucs's loaders read.

Every test runs with the caches (torch hub, Hugging Face) redirected into ``tmp_path`` and the hub offline, so
nothing here can touch the network or a real cache. Outputs are checked against demucs's own separation
(``demucs.api.Separator``) of the same file, chunk for chunk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import soundfile as sf

from bridge.engines.base import load_engine, resolve_engine_name
from bridge.errors import Cancelled, InvalidArgument, ModelNotFound, UnsupportedOperation
from tests import model_fixtures as mf
from tests import synth

if TYPE_CHECKING:
    from bridge.engines.demucs_engine import DemucsEngine

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("demucs") is None,
    reason="needs the models extra (torch, demucs)",
)

SR = 44100
REPO = Path(__file__).resolve().parent.parent


def _isolate(env: dict[str, str], root: Path) -> dict[str, str]:
    env = dict(env)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(var, None)
    env.update(
        TORCH_HOME=str(root / "torch"),
        HF_HOME=str(root / "hf"),
        XDG_CACHE_HOME=str(root / "cache"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture(autouse=True)
def offline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub and Hugging Face caches under ``tmp_path``; no hub access."""
    root = tmp_path / "caches"
    for key, value in _isolate({}, root).items():
        monkeypatch.setenv(key, value)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with mf.one_torch_thread():
        yield


@pytest.fixture(autouse=True)
def float32_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """demucs's own float32 numbers for "auto" here, whatever this CPU does (bfloat16 has its own test)."""
    from bridge.engines import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``htdemucs/`` and ``htdemucs_6s/`` (tiny, 1 s chunks) and ``duo/``: a bag of two with per-stem weights."""
    root = mf.demucs_models_dir(tmp_path_factory.mktemp("models"), six=True)
    weights = [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    mf.save_demucs_repo(root / "duo", "duo", [mf.htdemucs(seed=0), mf.htdemucs(seed=2)], weights=weights)
    return root


@pytest.fixture(scope="session")
def mix() -> np.ndarray:
    """Four seconds (2 bars at 120 bpm) of the synthetic song, stereo at 44.1 kHz."""
    return synth.mix(synth.song_stems(bpm=120.0, bars=2))


def _engine(models_dir: Path, **options: Any) -> DemucsEngine:
    from bridge.engines.demucs_engine import DemucsEngine

    eng = load_engine("demucs", "separate", models_dir=models_dir, **options)
    assert isinstance(eng, DemucsEngine)
    return eng


def _demucs_reference(models_dir: Path, name: str, mix: np.ndarray, shifts: int) -> dict[str, np.ndarray]:
    """demucs's own separation of ``mix`` with the repo folder's model (what ``demucs -n NAME --repo`` does)."""
    import torch
    from demucs.api import Separator

    separator = Separator(model=name, repo=models_dir / name, shifts=shifts, device="cpu", progress=False)
    _, stems = separator.separate_tensor(torch.from_numpy(mix), SR)
    return {k: v.numpy() for k, v in stems.items()}


def test_separates_like_demucs_itself(models_dir: Path, mix: np.ndarray) -> None:
    eng = _engine(models_dir, shifts=0)
    assert (eng.name, eng.model_name, eng.sample_rate) == ("demucs", "htdemucs", 44100)
    assert eng.separate_stems == ("drums", "bass", "other", "vocals")
    out = eng.separate(mix, SR, ["vocals", "drums"])
    assert list(out) == ["vocals", "drums"]
    reference = _demucs_reference(models_dir, "htdemucs", mix, shifts=0)
    for stem, audio in out.items():
        assert audio.dtype == np.float32 and audio.shape == mix.shape
        assert float(np.max(np.abs(audio))) > 1e-3
        np.testing.assert_allclose(audio, reference[stem], atol=1e-5)


def test_shift_trick_matches_demucs_with_the_same_offset(
    models_dir: Path, mix: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = _engine(models_dir)  # demucs's default: one shift
    offset = int(np.random.default_rng(0).integers(0, SR // 2 + 1))  # the engine's first offset (seed 0)
    out = eng.separate(mix, SR, [])
    monkeypatch.setattr(random, "randint", lambda low, high: offset)  # what demucs.apply draws shifts with
    reference = _demucs_reference(models_dir, "htdemucs", mix, shifts=1)
    for stem in eng.separate_stems:
        np.testing.assert_allclose(out[stem], reference[stem], atol=1e-5)


def test_deterministic_across_calls_and_instances(models_dir: Path, mix: np.ndarray) -> None:
    first = _engine(models_dir, shifts=2).separate(mix, SR, [])
    eng = _engine(models_dir, shifts=2)
    for again in (eng.separate(mix, SR, []), eng.separate(mix, SR, [])):
        assert all(np.array_equal(first[k], again[k]) for k in first)


def test_chunks_side_by_side_match_one_at_a_time(models_dir: Path, mix: np.ndarray) -> None:
    import threading

    import torch

    calls: list[float] = []
    parallel = _engine(models_dir, workers=3).separate(mix, SR, [], lambda f, s: calls.append(f))
    serial = _engine(models_dir, workers=0).separate(mix, SR, [])
    for stem in serial:
        np.testing.assert_allclose(parallel[stem], serial[stem], atol=1e-6)
    assert calls == sorted(calls) and calls[-1] == 1.0
    # The workers' thread count does not leak into threads started later.
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [torch.get_num_threads()]


def test_mono_in_mono_out(models_dir: Path, mix: np.ndarray) -> None:
    eng = _engine(models_dir, shifts=0)
    mono = mix.mean(axis=0, keepdims=True)
    out = eng.separate(mono, SR, ["bass"])
    dual = eng.separate(np.repeat(mono, 2, axis=0), SR, ["bass"])
    assert out["bass"].shape == mono.shape
    np.testing.assert_allclose(out["bass"], dual["bass"].mean(axis=0, keepdims=True), atol=1e-6)


def test_six_stem_model_by_name_and_by_path(models_dir: Path, mix: np.ndarray) -> None:
    by_name = _engine(models_dir, model="htdemucs_6s", shifts=0)
    by_path = load_engine("demucs", "separate", model=str(models_dir / "htdemucs_6s"), shifts=0)
    assert by_name.separate_stems == by_path.separate_stems == mf.DEMUCS_6S_SOURCES
    assert by_path.model_name == "htdemucs_6s"
    a, b = by_name.separate(mix, SR, []), by_path.separate(mix, SR, [])
    assert list(a) == list(mf.DEMUCS_6S_SOURCES)
    assert all(np.array_equal(a[k], b[k]) and a[k].shape == mix.shape for k in a)
    # The 4-stem model says where guitar and piano are.
    with pytest.raises(UnsupportedOperation, match="cannot separate 'guitar'.*--model htdemucs_6s"):
        _engine(models_dir).separate(mix, SR, ["guitar"])


def test_single_checkpoint_file_as_model(models_dir: Path, mix: np.ndarray) -> None:
    (th,) = (models_dir / "htdemucs").glob("*.th")
    eng = load_engine("demucs", "separate", model=str(th), shifts=0)
    assert eng.model_name == th.stem.split("-")[0]
    folder = _engine(models_dir, shifts=0)
    out, ref = eng.separate(mix, SR, ["drums"]), folder.separate(mix, SR, ["drums"])
    assert np.array_equal(out["drums"], ref["drums"])


def test_bag_weights_pick_each_stem_from_its_model(models_dir: Path, mix: np.ndarray) -> None:
    duo = _engine(models_dir, model="duo")
    solo = _engine(models_dir)  # the same weights as the duo's first model
    seen: list[float] = []
    out = duo.separate(mix, SR, [], lambda f, s: seen.append(f))
    ref = solo.separate(mix, SR, [])
    assert np.array_equal(out["drums"], ref["drums"]) and np.array_equal(out["bass"], ref["bass"])
    assert not np.allclose(out["vocals"], ref["vocals"], atol=1e-3)
    assert duo.model_bytes == 2 * solo.model_bytes
    assert len(seen) == 2 * _chunk_count(mix.shape[-1] + SR // 2 - _first_offset()) + 1


def _first_offset() -> int:
    return int(np.random.default_rng(0).integers(0, SR // 2 + 1))


def _chunk_count(length: int, segment: float = 1.0, overlap: float = 0.25) -> int:
    stride = int((1 - overlap) * int(SR * segment))
    return -(-length // stride)


def test_progress_is_monotonic_per_chunk_and_ends_at_one(models_dir: Path, mix: np.ndarray) -> None:
    calls: list[tuple[float, str]] = []
    _engine(models_dir, shifts=0).separate(mix, SR, [], lambda f, s: calls.append((f, s)))
    fractions = [f for f, _ in calls]
    assert {s for _, s in calls} == {"separate"}
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(calls) == _chunk_count(mix.shape[-1]) + 1  # one per chunk, then the final 1.0


@pytest.mark.parametrize("workers", [0, 2])
def test_cancel_stops_at_the_next_chunk_and_leaves_the_engine_usable(
    models_dir: Path, mix: np.ndarray, workers: int
) -> None:
    eng = _engine(models_dir, workers=workers)
    calls: list[float] = []

    def cancel_second(fraction: float, stage: str) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            raise Cancelled()

    before = eng.separate(mix, SR, ["drums"])
    with pytest.raises(Cancelled):
        eng.separate(mix, SR, ["drums"], cancel_second)
    assert len(calls) == 2 and calls[1] < 0.5
    assert np.array_equal(eng.separate(mix, SR, ["drums"])["drums"], before["drums"])


def test_missing_model_names_it_every_place_and_the_fetch_command(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    with pytest.raises(ModelNotFound) as err:
        load_engine("demucs", "separate", model="htdemucs_ft", models_dir=empty)
    text = str(err.value)
    assert "'htdemucs_ft'" in text
    assert f"{empty / 'htdemucs_ft'}{os.sep} (no such folder)" in text
    assert "Hugging Face cache" in text and "adefossez/HTDemucs-ft" in text
    assert "torch hub cache" in text and "f7e0c4bc-e7e0c4bc.th" not in text
    assert all(sig in text for sig in ("f7e0c4bc-", "d12395a8-", "92cfc3b6-", "04573f0d-"))
    assert "stembridge models pull htdemucs_ft" in text and "--allow-download" in text


def test_model_status_reasons(models_dir: Path, tmp_path: Path, offline_caches: Path) -> None:
    cls = type(_engine(models_dir, shifts=0))
    assert cls.model_status("htdemucs", models_dir) is None
    assert cls.model_status(str(models_dir / "htdemucs_6s"), None) is None
    reason = cls.model_status("htdemucs", tmp_path)
    assert reason is not None and "955717e8-8726e21a.th missing" in reason
    assert reason.endswith("fetch them with: stembridge models pull htdemucs")
    # A bag file whose checkpoint is not there.
    broken = tmp_path / "htdemucs_6s"
    broken.mkdir()
    (broken / "htdemucs_6s.yaml").write_text("models: ['5c90dfd2']\n", encoding="utf-8")
    reason = cls.model_status("htdemucs_6s", tmp_path)
    assert reason is not None and "htdemucs_6s.yaml lists 5c90dfd2 but no such .th file is there" in reason
    # A path that does not exist: no fetch command, the path named.
    reason = cls.model_status(str(tmp_path / "nowhere"), None)
    assert reason is not None and "nowhere (does not exist)" in reason and "pull" not in reason
    # The torch hub cache, as older demucs versions fill it: found by file name, loaded with its checksum.
    hub = offline_caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "955717e8-8726e21a.th").write_bytes(b"not a checkpoint")
    assert cls.model_status("htdemucs", tmp_path) is None
    with pytest.raises(
        ModelNotFound, match=r"could not load demucs model 'htdemucs' from .*checkpoints.*pull"
    ):
        load_engine("demucs", "separate", models_dir=tmp_path)


def test_loads_from_the_hugging_face_cache(offline_caches: Path, mix: np.ndarray, tmp_path: Path) -> None:
    model = mf.htdemucs(mf.DEMUCS_6S_SOURCES, seed=3)
    mf.save_demucs_hf_cache(offline_caches / "hf" / "hub", "htdemucs_6s", [model])
    eng = load_engine("demucs", "separate", model="htdemucs_6s", models_dir=tmp_path, shifts=0)
    assert eng.model_name == "htdemucs_6s" and eng.separate_stems == mf.DEMUCS_6S_SOURCES
    out = eng.separate(mix, SR, ["piano"])
    reference = _bare_apply(model, mix)
    np.testing.assert_allclose(out["piano"], reference[5], atol=1e-5)


def _bare_apply(model: Any, mix: np.ndarray) -> np.ndarray:
    import torch
    from demucs.apply import apply_model

    wav = torch.from_numpy(mix)
    mean, std = wav.mean(0).mean(), wav.mean(0).std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=0, overlap=0.25)
    result: np.ndarray = (out * std + mean)[0].numpy()
    return result


def test_bad_options_and_input(models_dir: Path, mix: np.ndarray) -> None:
    for options, pattern in (
        ({"overlap": 1.0}, "overlap must be between 0 and 0.99, got 1.0"),
        ({"shifts": -1}, "shifts must be a whole number between 0 and 20, got -1"),
        ({"segment": 5.0}, "segment must be between 0.1 and 1 seconds for this model, got 5.0"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        ({"workers": 99}, "workers must be a whole number between 0 and 16, got 99"),
    ):
        with pytest.raises(InvalidArgument, match=pattern):
            _engine(models_dir, **options)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match=r"device 'cuda' is not available on this machine \(0 CUDA"):
            _engine(models_dir, device="cuda")
    eng = _engine(models_dir, device="cpu", segment=0.5, shifts=0)
    assert eng.device == "cpu"
    with pytest.raises(InvalidArgument, match="works at 44100 Hz, got 48000 Hz"):
        eng.separate(mix, 48000, [])
    with pytest.raises(InvalidArgument, match=r"got shape \(3, "):
        eng.separate(np.zeros((3, 100), np.float32), SR, [])


def test_auto_picks_demucs_only_when_its_weights_are_here(models_dir: Path, tmp_path: Path) -> None:
    assert resolve_engine_name("auto", "separate", models_dir=models_dir) == "demucs"
    assert resolve_engine_name("auto", "separate", "htdemucs_6s", models_dir) == "demucs"
    assert resolve_engine_name("auto", "separate", models_dir=tmp_path) == "builtin"
    with pytest.raises(ModelNotFound, match="stembridge models pull mdx_extra"):  # named: no silent fallback
        resolve_engine_name("auto", "separate", "mdx_extra", models_dir)
    assert resolve_engine_name("auto", "separate") == "builtin"
    assert resolve_engine_name("auto", "generate", models_dir=models_dir) != "demucs"
    assert load_engine("auto", "separate", models_dir=models_dir).name == "demucs"


def test_pipeline_auto_writes_demucs_stems(models_dir: Path, mix: np.ndarray, tmp_path: Path) -> None:
    from bridge.pipeline import OutputOptions, separate_file

    song = tmp_path / "song.wav"
    sf.write(song, mix.T, SR, subtype="FLOAT")
    result = separate_file(song, OutputOptions(tmp_path / "out", bit_depth=32), models_dir=models_dir)
    assert (result.engine, result.model) == ("demucs", "htdemucs")
    assert [o.stem for o in result.outputs] == ["drums", "bass", "other", "vocals"]
    eng = _engine(models_dir)
    expected = eng.separate(mix, SR, [])
    for output in result.outputs:
        audio, rate = sf.read(output.path, dtype="float32", always_2d=True)
        assert rate == SR and audio.T.shape == mix.shape
        np.testing.assert_allclose(audio.T, expected[output.stem], atol=1e-6)


def test_cli_separates_with_demucs_and_reports_it(models_dir: Path, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sr_in = 48000  # the pipeline resamples to the model's 44.1 kHz and back
    audio = synth.mix(synth.song_stems(bpm=120.0, bars=1, sr=sr_in))
    sf.write(song, audio.T, sr_in)
    env = _isolate(dict(os.environ), tmp_path / "caches")
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "bridge.cli", "separate", str(song), "--engine", "demucs"]
    cmd += ["--models-dir", str(models_dir), "--out", str(tmp_path / "out"), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["engine"], report["model"]) == ("demucs", "htdemucs")
    assert sorted(o["stem"] for o in report["outputs"]) == ["bass", "drums", "other", "vocals"]
    for output in report["outputs"]:
        info = sf.info(output["path"])
        assert (info.samplerate, info.frames, info.channels) == (sr_in, audio.shape[-1], 2)
    # The same command without weights: exit 2 and the fetch command.
    missing = [*cmd[:7], "--models-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    done = subprocess.run(missing, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "stembridge models pull htdemucs" in done.stderr


def test_finding_weights_and_auto_never_import_torch(models_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from bridge.engines.base import resolve_engine_name;"
        f"print(resolve_engine_name('auto', 'separate', None, Path({str(models_dir)!r})),"
        " 'torch' in sys.modules, 'demucs' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.split() == ["demucs", "False", "False"]


def test_pull(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import demucs.pretrained

    from bridge.engines.demucs_engine import pull

    def offline(name: str, repo: Path | None = None) -> Any:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(demucs.pretrained, "get_model", offline)
    assert pull("htdemucs", models_dir) == models_dir / "htdemucs"  # already here: no download
    with pytest.raises(
        ModelNotFound, match=r"could not download demucs model 'htdemucs'.*Network is unreachable"
    ):
        pull("htdemucs", tmp_path)
    with pytest.raises(ModelNotFound, match="no pretrained model named 'nope'; choose one of: .*htdemucs_6s"):
        pull("nope", tmp_path)
    with pytest.raises(InvalidArgument, match="takes a model name"):
        pull(str(models_dir / "htdemucs"), None)


def test_catalog_entries_are_demucs_models_and_report_their_weights(models_dir: Path) -> None:
    from bridge.catalog import load_catalog, model_statuses
    from bridge.engines.demucs_engine.weights import known_names

    names = [e.name for e in load_catalog() if e.engine == "demucs"]
    assert names and set(names) <= set(known_names())
    statuses = {s.entry.name: s for s in model_statuses(models_dir) if s.entry.engine == "demucs"}
    assert statuses["htdemucs"].available and statuses["htdemucs_6s"].available
    assert not statuses["htdemucs_ft"].available
    assert "stembridge models pull htdemucs_ft" in statuses["htdemucs_ft"].reason


def test_bfloat16_stays_close_to_float32_and_auto_follows_the_cpu(
    models_dir: Path, mix: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.engines import precision

    exact = _engine(models_dir, shifts=0).separate(mix, SR, [])
    fast = _engine(models_dir, shifts=0, precision="bfloat16").separate(mix, SR, [])
    for stem, reference in exact.items():
        error = float(np.sum((fast[stem] - reference) ** 2) / np.sum(reference**2))
        assert 0 < error < 1e-3, (stem, error)  # changed, and by less than -30 dB
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert _engine(models_dir, precision="auto").options.precision == "bfloat16"
    assert precision.pick_precision("auto", "cuda") == "float32"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert _engine(models_dir, precision=None).options.precision == "float32"
    with pytest.raises(InvalidArgument, match="precision must be auto, float32 or bfloat16, got 'half'"):
        _engine(models_dir, precision="half")


@pytest.mark.parametrize("shifts", [0, 2])
def test_long_input_streams_in_blocks_like_the_whole_separation(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shifts: int
) -> None:
    from bridge import pipeline
    from bridge.engines.demucs_engine import DemucsEngine, run

    song = synth.mix(synth.song_stems(bpm=120.0, bars=4))  # 8 s
    path = tmp_path / "long.wav"
    sf.write(str(path), song.T, SR, subtype="FLOAT")
    eng = _engine(models_dir, shifts=shifts)
    whole = eng.separate(song, SR, [])
    monkeypatch.setattr(pipeline, "STREAM_ABOVE_SECONDS", 0.0)
    monkeypatch.setattr(run, "BLOCK_SECONDS", 1.5)  # two 0.75 s strides of the tiny model's 1 s chunks
    windows: list[int] = []
    real = DemucsEngine.separate_block

    def counting(self: DemucsEngine, audio: np.ndarray, *args: Any) -> dict[str, np.ndarray]:
        windows.append(audio.shape[-1])
        return real(self, audio, *args)

    monkeypatch.setattr(DemucsEngine, "separate_block", counting)
    result = pipeline.separate_file(path, pipeline.OutputOptions(tmp_path / "out", bit_depth=32), engine=eng)
    assert len(windows) == -(-song.shape[-1] // 66150)  # 1.5 s blocks...
    assert max(windows) < song.shape[-1]  # ...each with its context, never the whole song
    for out in result.outputs:
        data, rate = sf.read(str(out.path), dtype="float32", always_2d=True)
        assert rate == SR and data.shape == (song.shape[-1], 2)  # to the sample
        np.testing.assert_allclose(data.T, whole[out.stem], atol=1e-5)  # the blocks' seams do not show
