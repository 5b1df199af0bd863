"""``stembridge train`` end to end on tiny MusicGen models with random weights and songs the tests render.

The songs are synthetic stems at 240 bpm (a bar lasts one second) written with stembridge's names or as a
multitrack folder; the base models are saved as transformers folders in the models folder, as users' are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from bridge.cli import main  # noqa: E402
from bridge.errors import InvalidArgument, OutOfMemory  # noqa: E402
from bridge.train import checkpoints, setup  # noqa: E402
from bridge.train.loop import train  # noqa: E402
from bridge.train.objective import IGNORE, layout  # noqa: E402
from bridge.train.settings import TrainSettings  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402
from tests import synth  # noqa: E402
from tests.test_daemon import no_leaked_threads  # noqa: E402,F401 - fails a test that leaks threads

RATE = 32000
BPM = 240.0  # one bar = one second
FAST = ["--threads", "1", "--precision", "float32", "--json"]
TRAIN = (
    "--stem bass --name mine --base tiny-melody --full --bars 1 --steps 24 --batch-size 2 --lr 2e-2 "
    "--val-every 8 --checkpoint-every 8 --sample-every 24 --samples 1 " + " ".join(FAST)
)


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    with mf.one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


def _song(n: int, bars: int) -> dict[str, np.ndarray]:
    """A song's stems at :data:`RATE`; song ``n`` is shifted by ``n`` beats, so songs differ."""
    stems = synth.song_stems(bpm=BPM, bars=bars, sr=RATE)
    beat = int(RATE * 60 / BPM)
    return {name: np.roll(a, n * beat, axis=-1) for name, a in stems.items()}


def _album(folder: Path, songs: int = 3, bars: int = 2) -> Path:
    folder.mkdir(parents=True)
    for n in range(songs):
        for stem, audio in _song(n, bars).items():
            sf.write(folder / f"song{n}__{stem}__{BPM:g}bpm__{bars}bars.wav", audio.T, RATE)
    return folder


def _spread(model: Any, audio: np.ndarray, seed: int = 0) -> Any:
    """``model`` with its EnCodec codebooks spread over the embeddings of ``audio`` ``[C, T]`` (its frames
    plus noise, layer by layer on the residual), so that audio like it encodes to codes that change from
    frame to frame: a random codec maps every frame to one code, and a test of what is learned needs more."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        residual = model.audio_encoder.encoder(torch.from_numpy(audio[:1][None]))[0].T  # [frames, dim]
        for layer in model.audio_encoder.quantizer.layers:
            size = layer.codebook.embed.shape[0]
            pick = torch.randint(0, residual.shape[0], (size,), generator=generator)
            noise = (
                torch.randn(size, residual.shape[1], generator=generator)
                * 0.3
                * residual.std(0, keepdim=True)
            )
            embed = residual[pick] + noise
            layer.codebook.embed.copy_(embed)
            layer.codebook.embed_avg.copy_(embed)
            residual = residual - embed[torch.cdist(residual, embed).argmin(-1)]
    return model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    models = root / "models"
    bass = _song(0, 1)["bass"]
    mf.save_musicgen(_spread(mf.musicgen_model(melody=True, seed=1), bass), models / "tiny-melody")
    mf.save_musicgen(_spread(mf.musicgen_model(seed=2), bass), models / "tiny")
    return {"root": root, "models": models, "album": _album(root / "album")}


@pytest.fixture(scope="module")
def trained(world: dict[str, Path]) -> dict[str, Any]:
    """A full fine-tune of the melody model on two songs, the third held out: ``--json``'s object."""
    argv = ["train", "--data", str(world["album"]), "--models-dir", str(world["models"]), *TRAIN.split()]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return dict(json.loads(out.getvalue().strip().splitlines()[-1]))


def _result(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def result(trained: dict[str, Any], world: dict[str, Path]) -> dict[str, Any]:
    card = json.loads((world["models"] / "mine" / "card.json").read_text())
    return card


def test_loss_falls_and_validation_is_on_held_out_songs(result: dict[str, Any]) -> None:
    assert result["steps"] == 24
    assert result["train_loss_last"] < 0.6 * result["train_loss_first"]
    assert result["val_loss_last"] is not None and np.isfinite(result["val_loss_last"])
    data = result["data"]
    assert len(data["validation_songs"]) == 1 and len(data["train_songs"]) == 2
    assert not set(data["validation_songs"]) & set(data["train_songs"])
    assert (data["train_segments"], data["validation_segments"]) == (4, 2)  # two 1-bar segments a song
    assert result["base"] == "tiny-melody" and result["stem"] == "bass"
    assert result["command"].startswith("stembridge train --data ")
    assert result["training"]["mode"] == "full"


def test_json_says_where_how_far_and_the_losses(trained: dict[str, Any], world: dict[str, Path]) -> None:
    assert set(trained) == {
        "path",
        "steps",
        "train_loss_first",
        "train_loss_last",
        "val_loss_last",
        "samples",
    }
    assert trained["path"] == str(world["models"] / "mine") and trained["steps"] == 24
    card = json.loads((world["models"] / "mine" / "card.json").read_text())
    for key in ("train_loss_first", "train_loss_last", "val_loss_last"):
        assert trained[key] == card[key]
    assert [Path(p) for p in trained["samples"]] == [world["models"] / "mine" / p for p in card["samples"]]


def test_samples_are_written_as_audio(result: dict[str, Any], world: dict[str, Path]) -> None:
    (sample,) = result["samples"]
    info = sf.info(world["models"] / "mine" / sample)
    assert (info.samplerate, info.frames) == (RATE, RATE)  # one bar at 240 bpm
    assert sample.startswith("samples/step-000024__")


def test_the_result_is_listed_and_generates_bar_exact(
    trained: dict[str, Any], world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["models", "--models-dir", str(world["models"]), "--json"]) == 0
    listed = {m["name"]: m for m in _result(capsys)["trained"]}
    assert set(listed) == {"mine"} and listed["mine"]["stem"] == "bass" and listed["mine"]["steps"] == 24
    context = tmp_path / "drums.wav"
    sf.write(context, synth.song_stems(bpm=BPM, bars=2, sr=44100)["drums"].T, 44100)
    argv = ["generate", "--stem", "bass", "--context", str(context), "--bpm", "240", "--bars", "2"]
    argv += ["--model", "mine", "--models-dir", str(world["models"]), "--out", str(tmp_path / "out"), *FAST]
    assert main(argv) == 0
    out = _result(capsys)
    assert (out["engine"], out["model"]) == ("musicgen", "mine")
    assert not [w for w in out.get("warnings", []) if "isolat" in w]  # it plays the stem alone: kept as it is
    info = sf.info(out["outputs"][0]["path"])
    assert (info.samplerate, info.frames) == (44100, 88200)  # 2 bars at 240 bpm


def test_the_daemon_generates_with_the_trained_model(
    trained: dict[str, Any], world: dict[str, Path], tmp_path: Path
) -> None:
    from bridge.client import Client, Endpoint
    from bridge.config import Settings
    from bridge.jobs.runner import PipelineRunner
    from bridge.server.daemon import DaemonThread

    context = tmp_path / "drums.wav"
    sf.write(context, synth.song_stems(bpm=BPM, bars=1, sr=44100)["drums"].T, 44100)
    settings = Settings(
        out_dir=tmp_path / "renders",
        state_dir=tmp_path / "state",
        models_dir=world["models"],
        port=0,
        threads=1,
    )
    with (
        DaemonThread(settings, PipelineRunner(settings), discovery=False) as d,
        Client(Endpoint("127.0.0.1", d.port)) as client,
    ):
        done = client.run(
            "generate", ["bass"], {"context": str(context), "bpm": 240, "bars": 1, "model": "mine"}
        )
    assert (done.engine, done.model) == ("musicgen", "mine")
    assert sf.info(done.paths[0]).frames == 44100


def _settings(world: dict[str, Path], name: str, data: Path, **overrides: Any) -> TrainSettings:
    options: dict[str, Any] = {
        "base": "tiny",
        "bars": 1,
        "steps": 12,
        "batch_size": 2,
        "learning_rate": 5e-3,
        "val_every": 0,
        "checkpoint_every": 4,
        "samples": 0,
        "precision": "float32",
        "device": "cpu",
        **overrides,
    }
    return TrainSettings(data=(data,), stem="bass", name=name, models_dir=world["models"], **options)


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(world: dict[str, Path]) -> Any:
    """An uninterrupted run of :func:`_settings` on the album, named ``straight``: its result."""
    return train(_settings(world, "straight", world["album"]))


def _cut_at_step_8(world: dict[str, Path], name: str) -> Path:
    """A run of :func:`_settings` interrupted after step 8 (checkpoints at 4 and 8); its training folder."""

    def interrupt(fraction: float, stage: str) -> None:
        if stage.startswith("step 8/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_settings(world, name, world["album"]), interrupt)
    return world["models"] / name / "training"


def test_resume_reaches_the_same_weights_as_a_straight_run(world: dict[str, Path], straight: Any) -> None:
    work = _cut_at_step_8(world, "cut")
    assert sorted(p.name for p in work.iterdir()) == ["step-0000004.pt", "step-0000008.pt"]
    assert not (world["models"] / "cut" / "model.safetensors").exists()
    with pytest.raises(InvalidArgument, match="unfinished training .* --resume"):
        train(_settings(world, "cut", world["album"]))
    resumed = train(_settings(world, "cut", world["album"], resume=True))
    assert resumed.steps == straight.steps == 12
    assert resumed.train_loss_last == straight.train_loss_last
    a, b = _weights(world["models"] / "straight"), _weights(world["models"] / "cut")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with pytest.raises(InvalidArgument, match="'cut' in .* is finished; nothing to resume"):
        train(_settings(world, "cut", world["album"], resume=True))
    with pytest.raises(InvalidArgument, match="a model named 'straight' exists in .*; choose another --name"):
        train(_settings(world, "straight", world["album"]))
    assert _weights(world["models"] / "cut").keys() == a.keys()
    base = _weights(world["models"] / "tiny")
    assert any(not np.array_equal(a[k], base[k]) for k in a if "decoder" in k)  # the adapters were merged in


def test_a_torn_newest_checkpoint_is_skipped_for_the_one_before(
    world: dict[str, Path], straight: Any, caplog: pytest.LogCaptureFixture
) -> None:
    work = _cut_at_step_8(world, "torn")
    newest = work / "step-0000008.pt"
    with newest.open("r+b") as f:  # what a power cut leaves of a file whose data never reached the disk
        f.truncate(newest.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="bridge.train.loop"):
        resumed = train(_settings(world, "torn", world["album"], resume=True))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("the checkpoint step-0000008.pt cannot be read (")
    assert warning.endswith("); resuming from step-0000004.pt (step 4) instead")
    assert resumed.steps == 12 and resumed.train_loss_last == straight.train_loss_last
    a, b = _weights(world["models"] / "straight"), _weights(world["models"] / "torn")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def _tiny_state(step: int) -> checkpoints.State:
    import torch

    return checkpoints.State(step=step, weights={"w": torch.full((2,), float(step))}, settings={"seed": 0})


def test_a_checkpoint_is_on_disk_before_older_ones_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    fsync, replace, unlink = os.fsync, os.replace, Path.unlink

    def spy_fsync(fd: int) -> None:
        calls.append("sync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "sync file")
        fsync(fd)

    def spy_replace(src: str, dst: str) -> None:
        calls.append(f"rename to {Path(dst).name}")
        replace(src, dst)

    def spy_unlink(self: Path, missing_ok: bool = False) -> None:
        calls.append(f"remove {self.name}")
        unlink(self, missing_ok=missing_ok)

    for step in (4, 8):
        checkpoints.save(tmp_path, _tiny_state(step))
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(Path, "unlink", spy_unlink)
    checkpoints.save(tmp_path, _tiny_state(12))
    assert calls == ["sync file", "rename to step-0000012.pt", "sync folder", "remove step-0000004.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000008.pt", "step-0000012.pt"]


def test_resume_names_each_unreadable_checkpoint_and_refuses_when_none_reads(tmp_path: Path) -> None:
    for step in (4, 8):
        checkpoints.save(tmp_path, _tiny_state(step))
    (tmp_path / "step-0000008.pt").write_bytes(b"")
    warned: list[str] = []
    path, state = checkpoints.load_newest(tmp_path, {"seed": 0}, warned.append)
    assert (path.name, state.step, state.weights["w"].tolist()) == ("step-0000004.pt", 4, [4.0, 4.0])
    assert len(warned) == 1 and warned[0].startswith("the checkpoint step-0000008.pt cannot be read (")
    (tmp_path / "step-0000004.pt").write_bytes((tmp_path / "step-0000004.pt").read_bytes()[:100])
    with pytest.raises(InvalidArgument) as caught:
        checkpoints.load_newest(tmp_path, {"seed": 0}, warned.append)
    message = str(caught.value)
    assert message.startswith(f"no checkpoint in {tmp_path} can be read (step-0000008.pt cannot be read (")
    assert "; step-0000004.pt cannot be read (" in message
    assert message.endswith(f"); train under another --name, or remove {tmp_path} and train again")
    checkpoints.save(tmp_path, _tiny_state(12))
    with pytest.raises(InvalidArgument, match=r"made with other settings: seed \(0 then, 1 now\)"):
        checkpoints.load_newest(tmp_path, {"seed": 1}, warned.append)


def test_samples_of_same_named_songs_get_a_file_each_and_never_replace_one(
    world: dict[str, Path], tmp_path: Path
) -> None:
    data = []
    for n, band in enumerate(("first band", "second band")):
        song = tmp_path / band / "riff"  # two songs named "riff"
        song.mkdir(parents=True)
        for stem, audio in _song(n, 1).items():
            sf.write(song / f"{stem}.wav", audio.T, RATE)
        (song / "song.json").write_text(json.dumps({"bpm": BPM, "downbeat": 0}))
        data.append(song.parent)
    samples = world["models"] / "twins" / "samples"
    samples.mkdir(parents=True)
    mine = samples / "step-000001__01-riff__1.wav"
    mine.write_bytes(b"the user's own file")
    settings = _settings(world, "twins", data[0], steps=1, checkpoint_every=0, val_songs=0, samples=2)
    done = train(dataclasses.replace(settings, data=tuple(data)))
    assert mine.read_bytes() == b"the user's own file"
    assert [Path(p).name for p in done.samples] == [
        "step-000001__01-riff__1-2.wav",
        "step-000001__02-riff__1.wav",
    ]
    first, second = (sf.read(p, always_2d=True)[0] for p in done.samples)
    assert len(first) == len(second) == RATE and not np.array_equal(first, second)  # one bar of each song


def test_the_training_layout_is_the_delay_pattern_generation_samples() -> None:
    import torch

    from bridge.engines.musicgen.decoding import DelayPattern

    k, p, f, start = 4, 3, 5, 64
    prompt = torch.randint(0, 64, (1, k, p))
    target = torch.randint(0, 64, (1, k, f))
    inputs, labels = layout(prompt, target, 1, start)
    pattern = DelayPattern(k, 1, p, f, start)
    seq = pattern.sequence(prompt)
    assert torch.equal(inputs[..., : 1 + p], seq[..., : 1 + p])  # what the prefill feeds
    for position in range(1, pattern.length):
        sampled = ~pattern.forced(position, torch.device("cpu"))
        assert torch.equal(labels[0, :, position - 1] != IGNORE, sampled), position
        seq[0, sampled, position] = labels[0, sampled, position - 1]  # generation fills what it samples
    assert torch.equal(pattern.generated(seq), target)


def test_overfit_one_example_then_the_engine_generates_it_back(world: dict[str, Path]) -> None:
    import torch

    from bridge.engines.base import GenerateSpec
    from bridge.engines.musicgen import sampling
    from bridge.engines.musicgen.decoding import Decoder
    from bridge.engines.musicgen.engine import MusicgenEngine

    song = world["root"] / "one" / "take"
    song.mkdir(parents=True)
    stems = _song(0, 1)
    for stem in ("bass", "drums"):
        sf.write(song / f"{stem}.wav", stems[stem].T, RATE)
    (song / "song.json").write_text(json.dumps({"bpm": BPM, "downbeat": 0}))
    settings = _settings(
        world,
        "over",
        song.parent,
        lora=False,
        steps=80,
        batch_size=1,
        learning_rate=1e-2,
        warmup=1,
        checkpoint_every=0,
        tags="warm dub",
    )
    done = train(settings)
    assert done.train_loss_last < 0.05
    (cached,) = [
        p for p in (world["models"] / ".train-cache").glob("*.npz") if "take" in str(np.load(p)["song"])
    ]
    target = torch.from_numpy(np.load(cached)["target"][0])
    text = str(np.load(cached)["texts"][0])
    assert text.startswith("solo bass line, warm dub, 240 bpm")

    made: list[torch.Tensor] = []
    texts: list[str] = []
    run = Decoder.run
    rows = sampling.generate_rows

    def spy_rows(lm: Any, prompts: Any, *args: Any, **kwargs: Any) -> Any:
        texts.extend(prompts)
        return rows(lm, prompts, *args, **kwargs)

    def spy(self: Decoder, *args: Any, **kwargs: Any) -> torch.Tensor:
        codes = run(self, *args, **kwargs)
        made.append(codes)
        return codes

    engine = MusicgenEngine(
        model="over", models_dir=world["models"], isolate=False, top_k=1, guidance_scale=1.0
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Decoder, "run", spy)
        mp.setattr(sampling, "generate_rows", spy_rows)
        context = stems["drums"]
        engine.generate(context, RATE, GenerateSpec(stem="bass", bpm=BPM, bars=1))
    assert texts == [text]  # the request without a prompt is described as the examples were: the tags too
    assert torch.equal(made[0][0], target)


# --- bad data ------------------------------------------------------------------------------------------------


def _bad(tmp_path: Path, files: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, audio in files.items():
        sf.write(folder / name, audio.T, RATE)
    return folder


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        ({}, [], "no audio files in "),
        ({"a__bass.wav": _song(0, 2)["bass"]}, [], "song 'a' has only one stem (a__bass.wav)"),
        (
            {"a__drums.wav": _song(0, 2)["drums"], "a__keys.wav": _song(0, 2)["other"]},
            [],
            "song 'a' has no stem named like 'bass' (it has drums, keys)",
        ),
        (
            {
                "a__bass__240bpm__1bars.wav": _song(0, 1)["bass"],
                "a__drums__240bpm__1bars.wav": _song(0, 1)["drums"],
            },
            ["--bars", "2"],
            "song 'a' lasts 1.00 s from bar 1, shorter than one segment of 2 bar(s)",
        ),
    ],
    ids=["no-audio", "one-stem", "no-target", "too-short"],
)
def test_bad_data_is_one_clear_error(
    world: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, np.ndarray],
    extra: list[str],
    message: str,
) -> None:
    data = _bad(tmp_path, files)
    models = tmp_path / "models"
    if extra:
        mf.save_musicgen(mf.musicgen_model(seed=2), models / "tiny")
    capsys.readouterr()
    argv = ["train", "--data", str(data), "--stem", "bass", "--name", "bad", "--base", "tiny"]
    assert main([*argv, "--models-dir", str(models), "--threads", "1", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stembridge train: error: ")
    assert message in err[0]
    assert not (models / "bad").exists()


def test_a_run_that_cannot_fit_is_refused_with_the_fix() -> None:
    estimate = setup.Estimate(peak_bytes=12 << 30, available_bytes=4 << 30)
    with pytest.raises(OutOfMemory) as caught:
        setup.check_fits(estimate, lora=False, batch=8)
    assert str(caught.value) == (
        "training needs about 12.0 GB and 4.0 GB is free on this device; try a smaller --batch-size (e.g. 4) "
        "with --accumulate to keep its size, or --lora instead of --full (adapters need a fraction of the "
        "memory), or fewer --bars per segment"
    )
    setup.check_fits(setup.Estimate(peak_bytes=1 << 30, available_bytes=4 << 30), lora=True, batch=1)


def test_mixes_are_separated_and_their_tempo_read_from_the_name(
    world: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "mixes"
    data.mkdir()
    for n in range(2):
        mix = synth.mix(_song(n, 2))
        sf.write(data / f"take{n} {BPM:g}bpm.wav", np.pad(mix, ((0, 0), (0, RATE // 5))).T, RATE)
    settings = _settings(world, "from-mixes", data, steps=2, checkpoint_every=0, val_every=1)
    done = train(settings)
    card = json.loads((world["models"] / "from-mixes" / "card.json").read_text())
    assert done.steps == 2 and done.val_loss_last is not None
    assert sorted(card["data"]["train_songs"] + card["data"]["validation_songs"]) == [
        "take0 240bpm",
        "take1 240bpm",
    ]
    assert (card["data"]["train_segments"], card["data"]["validation_segments"]) == (2, 2)
    assert card["data"]["segment_seconds"] == [1.0]
