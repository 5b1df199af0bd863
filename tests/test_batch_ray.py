"""stembridge batch on a real local Ray cluster the test starts (``ray.init(num_cpus=2)``), on loopback only:
identical results to the local pool, a bad file, shared paths, an actor killed mid-item."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.batch.driver import EngineChoice, run_batch
from bridge.batch.executor import LocalPool
from bridge.batch.items import separate_items
from bridge.batch.work import WorkerConfig
from bridge.errors import UnknownEngine
from tests.test_batch import files_under, write_song

# Everything on 127.0.0.1: on Linux Ray binds the machine's IP unless this says not to. Ray reads it once, when it
# is imported, so it is set before (the cluster's processes inherit it); .ci/run sets it too.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine
ray = pytest.importorskip("ray")

from bridge.batch.ray_executor import RayExecutor  # noqa: E402  (after the skip: it needs ray)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A two-CPU Ray cluster on 127.0.0.1 (on Linux Ray binds the node's IP unless this variable says not to)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture()
def items(tmp_path: Path) -> list[Any]:
    root = tmp_path / "songs"
    files = [(write_song(root / "a.wav", 0), ""), (write_song(root / "rock" / "b.wav", 1), "rock")]
    bad = root / "rock" / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    files.append((bad, "rock"))
    files.append((write_song(root / "rock" / "c.wav", 2), "rock"))
    return separate_items(files, {"stems": ["drums", "bass"]})


def local_run(items: list[Any], out: Path) -> Any:
    with LocalPool(WorkerConfig(), 1) as pool:
        return run_batch(items, ["builtin"] * len(items), out, pool)


@pytest.mark.parametrize("shared_fs", [False, True])
def test_ray_gives_what_the_local_pool_gives(
    cluster: Any, items: list[Any], tmp_path: Path, shared_fs: bool
) -> None:
    local = local_run(items, tmp_path / "local")
    with RayExecutor(cluster, WorkerConfig(), shared_fs=shared_fs) as executor:
        assert executor.workers == 2
        remote = run_batch(items, ["builtin"] * len(items), tmp_path / "ray", executor)
    assert (remote.done, remote.failed) == (3, local.failed)
    assert remote.failed[0]["input"].endswith("broken.wav")
    made = files_under(tmp_path / "ray")
    assert set(made) == {"a__drums.wav", "a__bass.wav"} | {
        f"rock/{n}__{s}.wav" for n in "bc" for s in ("drums", "bass")
    }
    assert made == files_under(tmp_path / "local")


def test_an_actor_killed_mid_item_is_retried_and_its_files_appear_once(
    cluster: Any, items: list[Any], tmp_path: Path
) -> None:
    killed: list[str] = []

    def kill_first(work: Any, actor: Any) -> None:
        if not killed:
            killed.append(work.item.label)
            cluster.kill(actor)  # the item was just sent to it: it dies holding the item

    # half a CPU each: Ray 2.60 may hold a killed actor's CPU lease a while, and a replacement must still fit on
    # the 2-CPU test cluster (seen once with whole CPUs: the replacement waited for a CPU forever)
    with RayExecutor(cluster, WorkerConfig(), workers=2, cpus=0.5) as executor:
        summary = run_batch(items, ["builtin"] * len(items), tmp_path / "ray", executor, on_start=kill_first)
    assert killed == [items[0].label]
    assert summary.done == 3 and [f["input"] for f in summary.failed] == [items[2].label]
    assert [o["stem"] for o in summary.outputs if o["input"] == killed[0]] == ["drums", "bass"]
    assert files_under(tmp_path / "ray") == files_under(_local(items, tmp_path))


def _local(items: list[Any], tmp_path: Path) -> Path:
    local_run(items, tmp_path / "local")
    return tmp_path / "local"


def test_an_actor_that_keeps_dying_fails_its_item_only(
    cluster: Any, items: list[Any], tmp_path: Path
) -> None:
    def kill_a(work: Any, actor: Any) -> None:
        if work.index == 0:
            cluster.kill(actor)

    # half a CPU each: Ray 2.60 may hold a killed actor's CPU lease a while, and a replacement must still fit on
    # the 2-CPU test cluster (seen once with whole CPUs: the replacement waited for a CPU forever)
    with RayExecutor(cluster, WorkerConfig(), workers=2, retries=1, cpus=0.5) as executor:
        summary = run_batch(items, ["builtin"] * len(items), tmp_path / "ray", executor, on_start=kill_a)
    assert summary.done == 2
    assert summary.failed[0]["input"] == items[0].label
    assert summary.failed[0]["error"].startswith("its worker died while running it (ActorDiedError), 2 times")
    assert not [p for p in files_under(tmp_path / "ray") if p.startswith("a__")]


def test_engines_are_resolved_on_the_cluster(cluster: Any, items: list[Any]) -> None:
    with RayExecutor(cluster, WorkerConfig()) as executor:
        assert executor.resolve(items, EngineChoice()) == ["builtin"] * len(items)
        with pytest.raises(UnknownEngine, match="^unknown engine 'nope'; choose one of: auto, "):
            executor.resolve(items, EngineChoice(engine="nope"))


def test_the_command_runs_on_the_cluster_it_is_in(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cluster auto`` from a process already in a cluster (as on a node of one): the same summary and files
    as the local pool; a second run skips everything."""
    from bridge.cli import main

    write_song(tmp_path / "songs" / "a.wav", 0)
    write_song(tmp_path / "songs" / "live" / "b.wav", 1)
    reports = {}
    for name, extra in (("local", []), ("ray", ["--cluster", "auto"]), ("ray-again", ["--cluster", "auto"])):
        out = tmp_path / ("ray" if name == "ray-again" else name)
        code = main(["batch", "separate", str(tmp_path / "songs"), "--out", str(out), "--json", *extra])
        assert code == 0
        reports[name] = json.loads(capsys.readouterr().out)
    assert (reports["ray"]["done"], reports["ray"]["skipped"]) == (2, 0)
    assert (reports["ray-again"]["done"], reports["ray-again"]["skipped"]) == (0, 2)
    assert files_under(tmp_path / "ray") == files_under(tmp_path / "local")
    assert len(files_under(tmp_path / "ray")) == 8


# --- the daemon on the cluster (stembridge serve --cluster) -------------------------------------------------


def daemon_settings(tmp_path: Path) -> Any:
    from bridge.config import Settings

    return Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models", port=0
    )


def test_serve_on_the_cluster_answers_a_separate_request(cluster: Any, tmp_path: Path) -> None:
    """Through the same OSC protocol: accepted, progress relayed from the actor, done with the files, which
    are what the daemon's own pipeline writes."""
    from bridge.jobs.cluster_runner import ClusterRunner
    from bridge.pipeline import OutputOptions, separate_file
    from bridge.server import protocol
    from bridge.server.daemon import DaemonThread
    from tests.test_daemon import OscPeer

    song = write_song(tmp_path / "in" / "My Song.wav", 0)
    settings = daemon_settings(tmp_path)
    runner = ClusterRunner(settings, cluster)
    try:
        with DaemonThread(settings, runner, discovery=False) as d:
            peer = OscPeer(d.port)
            peer.request(protocol.SEPARATE, "c1", str(song), "stems", "drums", "stems", "bass")
            assert peer.wait_for("c1", protocol.ACCEPTED, protocol.ERROR)[0] == protocol.ACCEPTED
            address, args = peer.wait_for("c1", protocol.DONE, protocol.ERROR)
            peer.sock.close()
    finally:
        runner.close()
    assert address == protocol.DONE, args
    made = [Path(p) for p in args[1:]]
    assert [p.name for p in made] == ["My_Song__drums.wav", "My_Song__bass.wav"]
    assert {p.parent for p in made} == {settings.out_dir.resolve()}
    local = separate_file(
        song, OutputOptions(out_dir=tmp_path / "local"), stems=["drums", "bass"], engine="builtin"
    )
    assert [p.read_bytes() for p in made] == [o.path.read_bytes() for o in local.outputs]
    fractions = [a[1] for addr, a in peer.received if addr == protocol.PROGRESS and a[0] == "c1"]
    assert fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    # the actor's own stages, relayed (the daemon sends at most about 20 a second: a quick job may show one)
    assert len([f for f in fractions if 0.0 < f < 1.0]) >= 1


def test_a_cancelled_cluster_job_publishes_nothing_and_the_next_runs(cluster: Any, tmp_path: Path) -> None:
    from bridge.errors import Cancelled
    from bridge.jobs.cluster_runner import ClusterRunner
    from bridge.jobs.spec import JobSpec

    song = write_song(tmp_path / "in" / "song.wav", 0)
    settings = daemon_settings(tmp_path)
    out = settings.out_dir / "job"
    spec = JobSpec("separate", {"path": str(song), "out": str(out), "stems": ["drums"]})
    planned: list[Any] = []
    seen: list[float] = []

    def cancel_midway(fraction: float, stage: str) -> None:
        seen.append(fraction)
        if fraction > 0.0:
            raise Cancelled()

    runner = ClusterRunner(settings, cluster)
    try:
        with pytest.raises(Cancelled):
            runner(spec, cancel_midway, planned.append)
        assert planned == [] and not out.exists()  # nothing published, the folder made for it removed
        outcome = runner(spec, lambda f, s: None, planned.append)  # a new actor takes the next job
    finally:
        runner.close()
    assert [Path(p).name for p in outcome.paths] == ["song__drums.wav"]
    assert (
        len(planned) == 1 and outcome.detail["engine"] == "builtin" and outcome.detail["source"] == str(song)
    )
