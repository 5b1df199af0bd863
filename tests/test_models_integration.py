"""The real engines behind the daemon and the CLI: warm models between jobs, engine options, which engine and
model made a result, `models pull`, and a named model that is missing.

Tiny demucs and MusicGen models with random weights are saved in the formats users' folders hold
(tests/model_fixtures.py) and loaded by the real code; nothing touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("demucs")
pytest.importorskip("transformers")

from bridge.cli import main  # noqa: E402
from bridge.client import Client, Endpoint  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.engines import base  # noqa: E402
from bridge.engines.base import ENGINES, Engine, load_engine  # noqa: E402
from bridge.errors import Cancelled, InvalidArgument, ModelNotFound  # noqa: E402
from bridge.jobs.runner import PipelineRunner  # noqa: E402
from bridge.jobs.warm import MIB, WarmEngines  # noqa: E402
from bridge.server.daemon import DaemonThread  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402
from tests import synth  # noqa: E402
from tests.test_daemon import no_leaked_threads  # noqa: E402,F401 - fails a test that leaks threads

SR = 44100


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with mf.one_torch_thread():
        yield


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``htdemucs/`` (tiny, 1 s chunks) and ``tiny/`` (a small MusicGen) in one models folder."""
    root = mf.demucs_models_dir(tmp_path_factory.mktemp("models"))
    mf.save_musicgen(mf.musicgen_model(seed=1), root / "tiny")
    return root


@pytest.fixture()
def song(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    sf.write(path, synth.mix(synth.song_stems(bpm=120.0, bars=1)).T, SR)
    return path


def _chunking(engine: Engine) -> dict[str, Any]:
    """An engine's cache settings but its precision (which follows this machine's CPU)."""
    settings = engine.cache_settings()
    assert settings.pop("precision") in ("float32", "bfloat16")
    return settings


def _settings(tmp_path: Path, models_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders",
        state_dir=tmp_path / "state",
        models_dir=models_dir,
        port=0,
        threads=1,
        **overrides,
    )


# --- the daemon ------------------------------------------------------------------------------------------


def test_daemon_separates_with_demucs_and_keeps_it_loaded(
    tmp_path: Path, models_dir: Path, song: Path
) -> None:
    settings = _settings(tmp_path, models_dir, cache_max_mb=0)
    runner = PipelineRunner(settings)
    with (
        DaemonThread(settings, runner, discovery=False) as d,
        Client(Endpoint("127.0.0.1", d.port)) as client,
    ):
        first = client.run("separate", [str(song)], {})
        second = client.run("separate", [str(song)], {"stems": "drums,bass", "shifts": 0})
        third = client.run("separate", [str(song)], {"stems": "vocals"})
    assert (first.engine, first.model) == ("demucs", "htdemucs")
    assert sorted(Path(p).name for p in first.paths) == [
        "song__bass.wav",
        "song__drums.wav",
        "song__other.wav",
        "song__vocals.wav",
    ]
    assert len(second.paths) == 2 and len(third.paths) == 1
    for path in first.paths:
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.subtype) == (SR, sf.info(song).frames, "PCM_24")
    # one model loaded for all three: shifts is set per job, and back to its default after
    assert runner.engines.loads == 1 and len(runner.engines) == 1
    [engine] = runner.engines._engines.values()
    assert _chunking(engine) == {"segment": None, "overlap": 0.25, "shifts": 1}


def test_request_command_reports_engine_model_and_passes_demucs_options(
    tmp_path: Path, models_dir: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path, models_dir, cache_max_mb=0)
    runner = PipelineRunner(settings)
    result = tmp_path / "r.json"
    with DaemonThread(settings, runner, discovery=False) as d:
        argv = ["request", "separate", str(song), "--stems", "bass", "--shifts", "0", "--overlap", "0.5"]
        argv += ["--precision", "bfloat16"]
        assert main([*argv, "--port", str(d.port), "--result-file", str(result), "--json"]) == 0
    payload = json.loads(result.read_text())
    assert (payload["status"], payload["engine"], payload["model"]) == ("done", "demucs", "htdemucs")
    assert [o["stem"] for o in payload["outputs"]] == ["bass"]
    assert json.loads(capsys.readouterr().out)["engine"] == "demucs"
    [engine] = runner.engines._engines.values()
    assert engine.cache_settings() == {"segment": None, "overlap": 0.5, "shifts": 0, "precision": "bfloat16"}


def test_daemon_generates_with_musicgen_bar_exact(tmp_path: Path, models_dir: Path, song: Path) -> None:
    settings = _settings(tmp_path, models_dir)
    runner = PipelineRunner(settings)
    with (
        DaemonThread(settings, runner, discovery=False) as d,
        Client(Endpoint("127.0.0.1", d.port)) as client,
    ):
        options = {"context": str(song), "bpm": 120, "bars": 1, "model": "tiny", "variations": 2, "seed": 3}
        result = client.run("generate", ["keys"], options)
        again = client.run("generate", ["keys"], {**options, "seed": 4})
    assert (result.engine, result.model) == ("musicgen", "tiny")
    assert len(result.paths) == 2 and len(again.paths) == 2
    for path in result.paths:
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.channels) == (SR, 88200, 2)  # 1 bar of 4/4 at 120 bpm
    assert runner.engines.loads == 1


def test_daemon_cancels_a_demucs_job_mid_separation(tmp_path: Path, models_dir: Path) -> None:
    long_song = tmp_path / "long.wav"
    sf.write(long_song, synth.mix(synth.song_stems(bpm=120.0, bars=12)).T, SR)  # 24 s: ~30 one-second chunks
    settings = _settings(tmp_path, models_dir, cache_max_mb=0)
    seen: list[float] = []
    with DaemonThread(settings, discovery=False) as d, Client(Endpoint("127.0.0.1", d.port)) as client:
        with Client(Endpoint("127.0.0.1", d.port)) as other:

            def progress(fraction: float, stage: str) -> None:
                seen.append(fraction)
                if stage == "separate" and len(seen) == 3:
                    other.cancel("long1")

            with pytest.raises(Cancelled):
                client.run(
                    "separate", [str(long_song)], {"shifts": 0}, request_id="long1", on_progress=progress
                )
            assert other.status("long1").state == "cancelled"
    assert max(seen) < 0.9  # stopped within the separation, not after it
    assert not list((tmp_path / "renders").glob("**/*.wav"))


def test_daemon_reports_a_missing_model_and_how_to_fetch_it(
    tmp_path: Path, models_dir: Path, song: Path
) -> None:
    settings = _settings(tmp_path, models_dir)
    with DaemonThread(settings, discovery=False) as d, Client(Endpoint("127.0.0.1", d.port)) as client:
        with pytest.raises(ModelNotFound, match="stembridge models pull htdemucs_6s"):
            client.run("separate", [str(song)], {"model": "htdemucs_6s"})
        with pytest.raises(InvalidArgument, match="model must be a model name"):
            client.run("separate", [str(song)], {"model": str(models_dir / "htdemucs")})
        assert client.ping()  # still serving
    assert not list((tmp_path / "renders").glob("**/*.wav"))


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_auto_uses_the_real_engines_and_says_so(
    tmp_path: Path, models_dir: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--models-dir", str(models_dir), "--out", str(tmp_path / "out"), "--threads", "1", "--json"]
    assert main(["separate", str(song), "--stems", "bass", "--shifts", "0", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["engine"], report["model"]) == ("demucs", "htdemucs")
    argv = ["generate", "--stem", "keys", "--context", str(song), "--bpm", "120", "--bars", "1"]
    assert main([*argv, "--model", "tiny", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["engine"], report["model"]) == ("musicgen", "tiny")


def test_cli_named_model_missing_is_an_error_not_a_fallback(
    tmp_path: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["separate", str(song), "--model", "htdemucs_ft", "--models-dir", str(tmp_path / "none")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "htdemucs_ft" in err[0] and "stembridge models pull htdemucs_ft" in err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # without a named model, auto falls back to the built-in engine and says which engine made the files
    assert (
        main(
            [
                "separate",
                str(song),
                "--models-dir",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o2"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["engine"] == "builtin"


def test_cli_options_the_engine_does_not_use_are_named(
    tmp_path: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["separate", str(song), "--engine", "builtin", "--shifts", "2", "--out", str(tmp_path / "out")]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] == ["the builtin engine does not use shifts; ignored"]
    assert "does not use shifts" in captured.err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--device", "gpu", "device in arguments must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("--threads", "-1", "threads in arguments must be a whole number between 0 and 1024, got -1"),
        ("--shifts", "21", "--shifts must be between 0 and 20, got 21"),
    ],
)
def test_cli_bad_engine_options_exit_2_with_one_line(
    tmp_path: Path,
    models_dir: Path,
    song: Path,
    flag: str,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["separate", str(song), "--models-dir", str(models_dir), "--out", str(tmp_path / "out")]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_models_pull_goes_to_the_models_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.engines.demucs_engine import DemucsEngine
    from bridge.engines.musicgen.engine import MusicgenEngine

    pulled: list[tuple[str, str]] = []

    def fake(engine: str) -> Any:
        def pull(model: str, models_dir: Path | None = None) -> Path:
            pulled.append((engine, model))
            return tmp_path / model

        return pull

    monkeypatch.setattr(DemucsEngine, "pull", staticmethod(fake("demucs")))
    monkeypatch.setattr(MusicgenEngine, "pull", staticmethod(fake("musicgen")))
    assert main(["models", "pull", "htdemucs_6s"]) == 0
    assert main(["models", "pull", "musicgen-melody", "--json"]) == 0
    assert main(["models", "pull", "my-separator", "--engine", "demucs"]) == 0
    assert pulled == [("demucs", "htdemucs_6s"), ("musicgen", "musicgen-melody"), ("demucs", "my-separator")]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"htdemucs_6s: ready in {tmp_path / 'htdemucs_6s'}"
    assert json.loads(out[1]) == {
        "model": "musicgen-melody",
        "engine": "musicgen",
        "path": str(tmp_path / "musicgen-melody"),
    }
    assert main(["models", "pull", "nonesuch"]) == 2
    assert main(["models", "pull", "builtin"]) == 2
    assert main(["models", "pull"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nonesuch'" in err and "--engine demucs|musicgen" in err
    assert "needs no download" in err and "name the model to download" in err


# --- warm engines ----------------------------------------------------------------------------------------


class _Fake(Engine):
    name = "fake"
    capabilities = frozenset({"separate"})
    separate_stems = ("drums",)
    default_model = "m"
    made = 0

    def __init__(
        self,
        model: str | None = None,
        models_dir: Path | None = None,
        device: str | None = None,
        size: int = 1,
    ) -> None:
        super().__init__(model, models_dir, device)
        type(self).made += 1
        self.model_bytes = size * MIB


@pytest.fixture()
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[_Fake]:
    monkeypatch.setitem(ENGINES, "fake", f"{__name__}:_Fake")
    monkeypatch.setattr(_Fake, "made", 0)
    return _Fake


def test_warm_engines_reuse_and_drop_the_least_recently_used(fake_engine: type[_Fake]) -> None:
    warm = WarmEngines(budget_bytes=5 * MIB)
    a = warm.get("fake", "separate", "a", None, {"size": 2})
    assert warm.get("fake", "separate", "a", None, {"size": 2}) is a
    b = warm.get("fake", "separate", "b", None, {"size": 2})
    assert warm.get("fake", "separate", "a", None, {"size": 2}) is a  # a is now the most recent
    warm.get("fake", "separate", "c", None, {"size": 2})  # 6 MiB > 5: b goes
    assert len(warm) == 2 and warm.bytes == 4 * MIB
    assert warm.get("fake", "separate", "a", None, {"size": 2}) is a
    assert warm.get("fake", "separate", "b", None, {"size": 2}) is not b
    assert fake_engine.made == 4
    huge = warm.get("fake", "separate", "h", None, {"size": 50})  # alone over budget: kept while in use
    assert len(warm) == 1 and warm.get("fake", "separate", "h", None, {"size": 50}) is huge


def test_unknown_options_are_dropped_and_noted(fake_engine: type[_Fake]) -> None:
    engine = load_engine("fake", "separate", size=1, shifts=3, device="cpu", allow_download=False)
    assert engine.load_notes == ["the fake engine does not use shifts; ignored"]
    assert load_engine("fake", "separate", shifts=None).load_notes == []


def test_auto_with_a_named_model_never_falls_back(tmp_path: Path, models_dir: Path) -> None:
    assert base.resolve_engine_name("auto", "separate", None, tmp_path) == "builtin"
    assert base.resolve_engine_name("auto", "separate", None, models_dir) == "demucs"
    assert base.resolve_engine_name("auto", "generate", "tiny", models_dir) == "musicgen"
    assert base.resolve_engine_name("auto", "generate", "builtin", tmp_path) == "builtin"
    with pytest.raises(ModelNotFound, match="musicgen-medium"):
        base.resolve_engine_name("auto", "generate", "musicgen-medium", tmp_path)


def test_separation_cache_key_depends_on_demucs_options(models_dir: Path) -> None:
    one = load_engine("demucs", "separate", models_dir=models_dir, shifts=0)
    two = load_engine("demucs", "separate", models_dir=models_dir, shifts=1, overlap=0.5)
    assert _chunking(one) == {"segment": None, "overlap": 0.25, "shifts": 0}
    assert two.cache_settings()["overlap"] == 0.5 and one.cache_settings() != two.cache_settings()
    assert np.isfinite(one.model_bytes) and one.model_bytes > 0


def test_warm_demucs_takes_run_options_per_job_without_reloading(models_dir: Path) -> None:
    warm = WarmEngines(budget_bytes=10**10)
    first = warm.get("demucs", "separate", None, models_dir, {"shifts": 0, "overlap": 0.5})
    assert (first.options.shifts, first.options.overlap) == (0, 0.5)
    again = warm.get("auto", "separate", "htdemucs", models_dir, {})  # the default model, named
    assert again is first and warm.loads == 1
    assert (again.options.shifts, again.options.overlap) == (1, 0.25)  # defaults restored
    with pytest.raises(InvalidArgument, match="shifts must be a whole number between 0 and 20"):
        warm.get("demucs", "separate", None, models_dir, {"shifts": 99})


def test_auto_with_downloads_allowed_picks_the_engine_that_will_fetch(tmp_path: Path) -> None:
    assert base.resolve_engine_name("auto", "separate", None, tmp_path, allow_download=True) == "demucs"
    assert base.resolve_engine_name("auto", "generate", "musicgen-melody", tmp_path, True) == "musicgen"
    with pytest.raises(ModelNotFound, match="no model 'nonesuch' here"):
        base.resolve_engine_name("auto", "separate", "nonesuch", tmp_path, allow_download=True)
    with pytest.raises(InvalidArgument, match="'htdemucs' is a demucs model for separate, not for generate"):
        base.resolve_engine_name("auto", "generate", "htdemucs", tmp_path)


def test_builtin_with_a_model_says_it_ignored_it() -> None:
    engine = load_engine("builtin", "separate", model="htdemucs")
    assert engine.model_name == "builtin"
    assert engine.load_notes == ["the builtin engine has no models; --model htdemucs ignored"]


def test_a_model_name_never_loads_a_file_from_the_current_folder(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon started in a folder holding checkpoints must not load them for a request naming them."""
    import shutil

    from bridge.server.protocol import model_option as _model

    planted = tmp_path / "cwd"
    shutil.copytree(models_dir / "htdemucs", planted)  # htdemucs.yaml + <sig>.th, and the tiny musicgen:
    shutil.copytree(models_dir / "tiny", planted / "songs")
    monkeypatch.chdir(planted)
    th = next(planted.glob("*.th")).name
    for name in (th, "htdemucs.yaml", "songs"):
        with pytest.raises((ModelNotFound, InvalidArgument)):
            load_engine(
                "auto", "separate" if name != "songs" else "generate", model=name, models_dir=tmp_path
            )
    for name in (th, "x.yaml", "../x", "~/x", "C:x"):
        with pytest.raises(InvalidArgument, match="model must be a model name"):
            _model(name)
    # as a path it is the user's explicit choice, from the command line
    assert load_engine("demucs", "separate", model=f"./{th}").name == "demucs"


def test_cli_checks_demucs_options_even_when_another_engine_runs(
    tmp_path: Path, song: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["separate", str(song), "--engine", "builtin", "--out", str(tmp_path / "out")]
    assert main([*argv, "--overlap", "1.5"]) == 2
    assert "--overlap must be between 0 and 0.99, got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_warm_engines_unload_the_others_when_a_load_runs_out_of_memory(
    fake_engine: type[_Fake], monkeypatch: pytest.MonkeyPatch
) -> None:
    warm = WarmEngines(budget_bytes=100 * MIB)
    warm.get("fake", "separate", "a", None, {"size": 2})
    real_init = _Fake.__init__
    failures = []

    def flaky(self: _Fake, *args: Any, **kwargs: Any) -> None:
        if len(warm) and not failures:  # fails while another model is loaded, as a GPU would
            failures.append(1)
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(_Fake, "__init__", flaky)
    engine = warm.get("fake", "separate", "b", None, {"size": 2})
    assert (
        failures == [1] and len(warm) == 1 and warm.get("fake", "separate", "b", None, {"size": 2}) is engine
    )
    monkeypatch.setattr(
        _Fake, "__init__", lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("bad shape"))
    )
    with pytest.raises(RuntimeError, match="bad shape"):  # other errors are not retried
        warm.get("fake", "separate", "c", None, {"size": 2})
