"""The file-level pipeline's all-or-none writing: the publish hook, rollback, and two jobs that want the same names."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.audio.writer import Staged
from bridge.engines.base import Engine, GenerateSpec, ProgressCallback
from bridge.errors import Cancelled
from bridge.pipeline import OutputOptions, generate_files, separate_file

SR = 8000


class SplitEngine(Engine):
    """A fast fake: "low" is the input times 0.25, "high" the rest; generates a ramp. Counts its calls."""

    name = "split"
    capabilities = frozenset({"separate", "generate"})
    separate_stems = ("low", "high")
    generate_stems = ("bass",)

    def __init__(self, gain: float = 0.25) -> None:
        super().__init__()
        self.gain = gain
        self.calls = 0

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        if progress is not None:
            progress(1.0, "split")
        low = (audio * self.gain).astype(np.float32)
        return {"low": low, "high": (audio - low).astype(np.float32)}

    def generate(
        self,
        context: np.ndarray | None,
        sample_rate: int,
        spec: GenerateSpec,
        progress: ProgressCallback | None = None,
    ) -> list[np.ndarray]:
        n = spec.grid(sample_rate).samples_for_bars(spec.bars)
        ramp = np.linspace(-0.5, 0.5, n, dtype=np.float32)
        return [np.stack([ramp, ramp]) * (k + 1) / spec.variations for k in range(spec.variations)]


def write_song(path: Path, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, (2, int(seconds * SR))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, SR, subtype="FLOAT")
    return audio


def read(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T)


def everything(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_hook_sees_the_planned_files_before_any_is_visible(tmp_path: Path) -> None:
    song = tmp_path / "in" / "song.wav"
    audio = write_song(song)
    out = tmp_path / "out"
    seen: list[tuple[list[str], list[str]]] = []

    def on_publish(planned: list[Staged]) -> None:
        seen.append(([s.target.name for s in planned], everything(out)))

    result = separate_file(
        song, OutputOptions(out, bit_depth=32), engine=SplitEngine(), on_publish=on_publish
    )
    ((planned, present),) = seen
    assert planned == ["song__low.wav", "song__high.wav"] == [o.path.name for o in result.outputs]
    assert len(present) == 4 and all(name.startswith(".") for name in present)  # two temp files, two claims
    assert everything(out) == ["song__high.wav", "song__low.wav"]  # and nothing hidden left
    np.testing.assert_array_equal(read(out / "song__low.wav") + read(out / "song__high.wav"), audio)
    assert result.info["cached"] is False


def test_a_hook_that_raises_stops_the_job_before_anything_appears(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def cancelled(planned: list[Staged]) -> None:
        raise Cancelled("cancelled by request")

    spec = GenerateSpec("bass", bpm=120, bars=1, variations=3)
    with pytest.raises(Cancelled):
        generate_files([], spec, OutputOptions(out), engine=SplitEngine(), on_publish=cancelled)
    assert everything(out) == []


def test_two_jobs_that_want_the_same_names_at_once_never_clobber_each_other(tmp_path: Path) -> None:
    """Both reserve their names before either publishes (a barrier in the hook), the worst interleaving."""
    out = tmp_path / "out"
    songs = [tmp_path / f"in{k}" / "song.wav" for k in range(2)]  # same name, different audio
    audio = [write_song(song, seed=k) for k, song in enumerate(songs)]
    (out / "song__low.wav").parent.mkdir(parents=True)
    (out / "song__low.wav").write_bytes(b"the user's")
    both_reserved = threading.Barrier(2, timeout=10)
    outputs: dict[int, list[Path]] = {}

    def job(k: int) -> None:
        result = separate_file(
            songs[k],
            OutputOptions(out, bit_depth=32),
            engine=SplitEngine(),
            on_publish=lambda _: both_reserved.wait(),
        )
        outputs[k] = [o.path for o in result.outputs]

    threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for paths in outputs.values() for p in paths)
    assert names == ["song__high-2.wav", "song__high.wav", "song__low-2.wav", "song__low-3.wav"]
    for k, (low, high) in outputs.items():  # each job's files hold that job's audio, complete
        np.testing.assert_array_equal(read(low) + read(high), audio[k])
        np.testing.assert_array_equal(read(low), audio[k] * np.float32(0.25))
    assert (out / "song__low.wav").read_bytes() == b"the user's"
    assert not [name for name in everything(out) if name.startswith(".")]
