"""Running out of memory: one line (CLI) or one error reply (daemon), no traceback, no file; a job the daemon
cannot hold is refused before it runs, and the daemon keeps serving."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge import memory
from bridge.cli import main
from bridge.config import Settings
from bridge.engines.base import ProgressCallback
from bridge.engines.builtin import BuiltinEngine
from bridge.errors import OutOfMemory
from bridge.pipeline import OutputOptions, separate_file
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from tests.test_daemon import OscPeer

SR = 44100
ADVICE = "try --length/--start, a shorter file, or close other programs"


@pytest.fixture
def song_file(tmp_path: Path, song_mix: np.ndarray) -> Path:
    path = tmp_path / "in" / "song.wav"
    path.parent.mkdir()
    sf.write(str(path), song_mix.T, SR, subtype="FLOAT")
    return path


@pytest.fixture
def no_memory_in_separation(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(
        self: BuiltinEngine,
        audio: np.ndarray,
        sample_rate: int,
        stems: Sequence[str],
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        raise MemoryError  # what numpy raises when an allocation fails

    monkeypatch.setattr(BuiltinEngine, "separate", exhausted)


@pytest.mark.usefixtures("no_memory_in_separation")
def test_a_job_that_runs_out_of_memory_raises_one_clear_error(tmp_path: Path, song_file: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OutOfMemory) as info:
        separate_file(song_file, OutputOptions(out), engine="builtin")
    assert str(info.value) == f"not enough memory to separate song.wav: {ADVICE}"
    assert info.value.code == "out_of_memory"
    assert not out.exists() or list(out.iterdir()) == []


def test_torch_out_of_memory_counts_too() -> None:
    assert memory.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.usefixtures("no_memory_in_separation")
def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path, song_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["separate", str(song_file), "--engine", "builtin", "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"stembridge separate: error: not enough memory to separate song.wav: {ADVICE}\n"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_catches_memory_errors_outside_a_job(
    tmp_path: Path, song_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr("bridge.pipeline.separate_file", exhausted)
    code = main(["separate", str(song_file), "--out", str(tmp_path / "out"), "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f"stembridge separate: error: not enough memory to separate song.wav: {ADVICE}\n"
    assert '"code": "out_of_memory"' in captured.out
    assert "Traceback" not in captured.err + captured.out


def test_check_available_names_the_need_and_what_there_is() -> None:
    memory.check_available(10 << 20, "separate a.wav", available=20 << 20)
    with pytest.raises(OutOfMemory) as info:
        memory.check_available(3 << 30, "separate a.wav", available=512 << 20)
    assert str(info.value) == (
        f"not enough memory to separate a.wav: it needs about 3.0 GB and 512 MB is available; {ADVICE}"
    )


def test_available_bytes_reads_the_system() -> None:
    available = memory.available_bytes()
    assert available is None or available > 0


# --- the daemon -------------------------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonThread]:
    settings = Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )
    with DaemonThread(settings, discovery=False) as d:
        yield d


@pytest.fixture
def peer(daemon: DaemonThread) -> Iterator[OscPeer]:
    p = OscPeer(daemon.port)
    yield p
    p.close()


def _separate(peer: OscPeer, request_id: str, path: Path) -> tuple[str, list[object]]:
    peer.request(protocol.SEPARATE, request_id, str(path))
    return peer.wait_for(request_id, protocol.DONE, protocol.ERROR)


def test_daemon_refuses_a_job_it_cannot_hold_and_keeps_serving(
    peer: OscPeer, song_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)  # a machine with 1 MB free
    address, args = _separate(peer, "big", song_file)
    assert address == protocol.ERROR
    assert args[1] == "out_of_memory"
    assert str(args[2]).startswith("not enough memory to separate song.wav: it needs about ")
    assert str(args[2]).endswith(f"and 1 MB is available; {ADVICE}")
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 30)
    address, args = _separate(peer, "fits", song_file)
    assert address == protocol.DONE, args
    assert len(args) == 5


def test_daemon_reports_a_memory_error_inside_a_job_and_keeps_serving(
    peer: OscPeer, song_file: Path, monkeypatch: pytest.MonkeyPatch, no_memory_in_separation: None
) -> None:
    address, args = _separate(peer, "oom", song_file)
    assert (address, args[1], args[2]) == (
        protocol.ERROR,
        "out_of_memory",
        f"not enough memory to separate song.wav: {ADVICE}",
    )
    monkeypatch.undo()
    address, args = _separate(peer, "again", song_file)
    assert address == protocol.DONE, args


def _fake_root(tmp_path: Path, cgroup: str, files: dict[str, str], meminfo_kib: int = 8 << 20) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: 16000000 kB\nMemAvailable: {meminfo_kib} kB\n")
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "sys/fs/cgroup" / name).write_text(text)
    return tmp_path


def test_available_memory_is_capped_by_the_control_group(tmp_path: Path) -> None:
    """In a container (cgroup v2) or a systemd unit with MemoryMax the host's MemAvailable is not what the
    kernel lets this process have: the group's headroom is."""
    gib = 1 << 30
    v2 = _fake_root(
        tmp_path / "v2",
        "0::/system.slice/stembridge.service\n",
        {"system.slice/stembridge.service/memory.max": f"{2 * gib}\n",
         "system.slice/stembridge.service/memory.current": f"{gib // 2}\n"},
    )  # fmt: skip
    assert memory.available_bytes(v2) == 2 * gib - gib // 2  # under the host's 8 GiB
    v1 = _fake_root(
        tmp_path / "v1",
        "4:memory:/docker/abc\n0::/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{gib}\n",
            "memory/docker/abc/memory.usage_in_bytes": "0\n",
        },
    )
    assert memory.available_bytes(v1) == gib
    unlimited = _fake_root(tmp_path / "max", "0::/\n", {"memory.max": "max\n", "memory.current": "5\n"})
    assert memory.available_bytes(unlimited) == (8 << 20) * 1024  # MemAvailable alone
    roomy = _fake_root(tmp_path / "roomy", "0::/\n", {"memory.max": f"{64 * gib}\n", "memory.current": "0\n"})
    assert memory.available_bytes(roomy) == (8 << 20) * 1024  # the host is the tighter limit
