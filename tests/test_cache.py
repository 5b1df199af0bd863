"""The separation cache: hits skip the engine and give the same samples, misses, eviction, broken entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.config import Settings, load_settings
from bridge.engines.base import ProgressCallback
from bridge.engines.builtin import BuiltinEngine
from bridge.errors import ConfigError
from bridge.jobs.cache import ResultCache, file_digest, separation_key
from bridge.pipeline import OutputOptions, separate_file
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from tests.test_daemon import OscPeer, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads
from tests.test_pipeline import SR, SplitEngine, read, write_song

MB = 1 << 20


def stems_of(seed: int, samples: int = 1000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.uniform(-1, 1, (2, samples)).astype(np.float32) for s in ("drums", "bass")}


def key_of(path: Path, stems: Sequence[str] = ("low", "high"), model: str = "split") -> str:
    digest = file_digest(path)
    assert digest is not None
    return separation_key(digest, engine="split", model=model, stems=stems, settings={})


# --- through the daemon -----------------------------------------------------------------------------------------


def test_a_second_identical_separation_comes_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = BuiltinEngine.separate
    calls: list[int] = []

    def counting(
        self: BuiltinEngine,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        calls.append(audio.shape[-1])
        return real(self, audio, sample_rate, stems, progress)

    monkeypatch.setattr(BuiltinEngine, "separate", counting)
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "m", port=0
    )
    song = tmp_path / "in" / "Song.wav"
    sr = 22050
    t = np.arange(sr) / sr
    audio = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.2 * np.sin(2 * np.pi * 330 * t)]).astype(
        np.float32
    )
    song.parent.mkdir()
    sf.write(song, audio.T, sr, subtype="FLOAT")

    def separate(peer: OscPeer, rid: str) -> tuple[list[Path], list[str]]:
        peer.request(protocol.SEPARATE, rid, str(song), "stems", "drums bass", "bitdepth", 32)
        address, args = peer.wait_for(rid, protocol.DONE, protocol.ERROR)
        assert address == protocol.DONE, args
        stages = [a[2] for addr, a in peer.received if addr == protocol.PROGRESS and a[0] == rid]
        return [Path(p) for p in args[1:]], stages

    with DaemonThread(settings, discovery=False) as d:
        peer = OscPeer(d.port)
        try:
            first, first_stages = separate(peer, "c1")
            second, second_stages = separate(peer, "c2")
            assert len(calls) == 1  # the engine ran once
            song.write_bytes(song.read_bytes()[:-8])  # a changed file (its last frame cut): a miss
            third, _ = separate(peer, "c3")
        finally:
            peer.close()
    assert len(calls) == 2 and calls[1] == sr - 1
    assert [p.name for p in first] == ["Song__drums.wav", "Song__bass.wav"]
    assert [p.name for p in second] == ["Song__drums-2.wav", "Song__bass-2.wav"]  # new files, as asked
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(read(a), read(b))  # sample for sample
    assert second_stages[-1] == "cache" and "cache" not in first_stages  # the last progress always goes out
    assert read(third[0]).shape == (2, sr - 1)
    entries = [p for p in (settings.state_dir / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # the song as it was and as it is now


# --- the pipeline with a cache ----------------------------------------------------------------------------------


def test_a_hit_writes_files_as_the_request_asks_identical_to_an_uncached_run(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    write_song(song)
    cache = ResultCache(tmp_path / "cache")
    engine = SplitEngine()
    seen: list[tuple[float, str]] = []
    first = separate_file(song, OutputOptions(tmp_path / "a", bit_depth=32), engine=engine, cache=cache)
    other = OutputOptions(tmp_path / "b", fmt="aiff", bit_depth=24, sample_rate=11025)
    hit = separate_file(song, other, engine=engine, cache=cache, progress=lambda f, s: seen.append((f, s)))
    assert engine.calls == 1 and (first.info["cached"], hit.info["cached"]) == (False, True)
    assert ("cache" in [s for _, s in seen]) and seen[-1][0] == 1.0
    uncached = separate_file(song, OutputOptions(tmp_path / "c", "aiff", 24, 11025), engine=SplitEngine())
    for a, b in zip(hit.outputs, uncached.outputs, strict=True):
        assert a.path.suffix == ".aif" and sf.info(str(a.path)).samplerate == 11025 == a.sample_rate
        assert a.path.read_bytes() == b.path.read_bytes()  # the same file as without a cache, byte for byte


def test_what_changes_the_result_changes_the_key(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    write_song(song)
    cache = ResultCache(tmp_path / "cache")
    engine = SplitEngine()
    opts = OutputOptions(tmp_path / "out")
    separate_file(song, opts, engine=engine, cache=cache)
    separate_file(song, opts, engine=engine, stems=["low"], cache=cache)  # other stems
    engine.model = "another-model"
    separate_file(song, opts, engine=engine, cache=cache)  # another model
    assert engine.calls == 3
    separate_file(
        song, opts, engine=engine, stems=["low"], cache=cache
    )  # one stem was cached for the first model only
    assert engine.calls == 4
    assert key_of(song) != key_of(song, model="x") != key_of(song, stems=("high", "low"))


# --- the cache on its own ---------------------------------------------------------------------------------------


def test_least_recently_used_entries_are_evicted_to_fit(tmp_path: Path) -> None:
    one = sum(a.nbytes for a in stems_of(0).values())
    cache = ResultCache(
        tmp_path, max_bytes=2 * one + 4000
    )  # room for two entries with their headers and meta.json
    assert cache.put("a", stems_of(1), SR) and cache.put("b", stems_of(2), SR)
    os.utime(tmp_path / "a" / "meta.json", (1000, 1000))  # a is older than b...
    os.utime(tmp_path / "b" / "meta.json", (2000, 2000))
    got = cache.get("a", ["drums", "bass"], (2, 1000), SR)  # ...until it is used
    assert got is not None and np.array_equal(got["bass"], stems_of(1)["bass"])
    assert cache.put("c", stems_of(3), SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]  # b was the least recently used
    assert cache.get("b", ["drums"], (2, 1000), SR) is None
    assert not ResultCache(tmp_path / "small", max_bytes=one // 2).put("big", stems_of(4), SR)  # never fits
    assert not ResultCache(tmp_path / "off", max_bytes=0).put("x", stems_of(4), SR)
    assert not (tmp_path / "small").exists() and not (tmp_path / "off").exists()


@pytest.mark.parametrize("damage", ["flip a sample", "truncate", "garble meta", "drop a file", "wrong shape"])
def test_a_broken_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    cache = ResultCache(tmp_path)
    assert cache.put("k", stems_of(5), SR)
    entry = tmp_path / "k"
    meta = json.loads((entry / "meta.json").read_text())
    npy = entry / meta["stems"]["bass"]["file"]
    if damage == "flip a sample":
        raw = bytearray(npy.read_bytes())
        raw[-3] ^= 0x40
        npy.write_bytes(bytes(raw))
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-400])
    elif damage == "garble meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "drop a file":
        npy.unlink()
    got = cache.get("k", ["drums", "bass"], (2, 999 if damage == "wrong shape" else 1000), SR)
    assert got is None and not entry.exists()


def test_a_broken_entry_is_recomputed_by_the_pipeline(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    write_song(song)
    cache, engine = ResultCache(tmp_path / "cache"), SplitEngine()
    separate_file(song, OutputOptions(tmp_path / "out"), engine=engine, cache=cache)
    (entry,) = (tmp_path / "cache").iterdir()
    (entry / "0.npy").write_bytes(b"\x93NUMPY garbage")
    again = separate_file(song, OutputOptions(tmp_path / "out"), engine=engine, cache=cache)
    assert engine.calls == 2 and again.info["cached"] is False and (entry / "meta.json").is_file()


def test_half_written_entries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    dead = tmp_path / f".tmp-{proc.pid}-0badc0de"
    live = tmp_path / f".tmp-{os.getppid()}-0badc0de"
    trash = tmp_path / f".trash-{os.getppid()}-deadbeef"
    for folder in (dead, live, trash):
        (folder / "0.npy").parent.mkdir()
        (folder / "0.npy").write_bytes(b"x")
    (tmp_path / "no-meta").mkdir()  # an entry folder without meta.json was never complete
    cache = ResultCache(tmp_path)
    assert cache.entries() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_the_cache_size_setting(tmp_path: Path) -> None:
    assert Settings().cache_max_mb == 2048
    assert load_settings(tmp_path / "none.toml", {"STEMBRIDGE_CACHE_MAX_MB": "64"}).cache_max_mb == 64
    with pytest.raises(
        ConfigError, match="cache_max_mb in \\$STEMBRIDGE_CACHE_MAX_MB must be a whole number"
    ):
        load_settings(tmp_path / "none.toml", {"STEMBRIDGE_CACHE_MAX_MB": "lots"})
    settings = Settings(out_dir=tmp_path / "r", state_dir=tmp_path / "state", port=0, cache_max_mb=0)
    with DaemonThread(settings, discovery=False):
        pass
    assert not (tmp_path / "state" / "cache").exists()  # 0 turns it off
