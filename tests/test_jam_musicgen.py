"""The jam with the musicgen engine, on the tiny random MusicGen the tests build: shapes, lengths, the advice.

Random weights make noise, so nothing here judges the sound: only that each cycle's part is exactly one cycle
long at the session's rate, continues under the humans' context, and that the advice says what to do on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bridge.audio.timing import Grid  # noqa: E402
from bridge.engines.musicgen import conditioning  # noqa: E402
from bridge.engines.musicgen.engine import MusicgenEngine  # noqa: E402
from bridge.jam import JamOptions, JamSession  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402
from tests.test_jam import C_MAJOR, band  # noqa: E402

SR = 44100
FAST = conditioning.Settings(prompt=2.0)  # one bar of prompt at 120 bpm: keeps the tiny runs short


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    with mf.one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> MusicgenEngine:
    folder = mf.save_musicgen(mf.musicgen_model(seed=1), tmp_path_factory.mktemp("musicgen") / "tiny")
    return MusicgenEngine(model=str(folder), device="cpu", isolate=False, windows=FAST)


def test_musicgen_answers_each_cycle_with_exactly_one_cycle(engine: MusicgenEngine, tmp_path: Path) -> None:
    session = JamSession(JamOptions("bass", bars=1, sample_rate=SR, lag=1), engine, tmp_path, "mg")
    L = Grid(120.0, sample_rate=SR).samples_for_bars(1)
    humans = band(120, 3, C_MAJOR)
    captured = session.clock.captured(0)
    parts = [session.answer(k, humans[:, k * L : k * L + captured], budget=600.0) for k in range(2)]
    assert [(p.index, p.play_index, p.late) for p in parts] == [(0, 2, False), (1, 3, False)]
    for part in parts:
        assert part.audio is not None and part.audio.shape == (2, L) and np.all(np.isfinite(part.audio))
        assert part.path is not None and sf.info(str(part.path)).frames == L
    audio, _ = sf.read(str(session.stop()), always_2d=True)
    assert audio.shape[0] == 4 * L and not audio[: 2 * L].any()
    assert session.estimate() > 0


def test_musicgen_on_a_cpu_is_told_to_use_lag_1_on_a_gpu(engine: MusicgenEngine, tmp_path: Path) -> None:
    session = JamSession(JamOptions("bass", bars=4, sample_rate=SR), engine, tmp_path, "mg")
    assert session.advice(40.0) == (
        "tiny on this CPU needs about 40 s per 8 s cycle: use lag 1 on a GPU, or the builtin engine"
    )
    assert (
        session.advice(5.0)
        == "tiny on this CPU needs about 5 s per 8 s cycle: use lag 1, or the builtin engine"
    )
    assert session.advice(0.1) is None
