"""stembridge batch on the local worker pool: names mirroring the input tree, a bad file among good ones,
resuming after a kill -9 of the driver, a worker killed mid-item, 1 vs 2 workers, manifests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from bridge.batch.driver import run_batch
from bridge.batch.executor import LocalPool
from bridge.batch.items import separate_items
from bridge.batch.state import FILE, FOLDER
from bridge.batch.work import WorkerConfig
from bridge.cli import main
from tests import synth

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_song(path: Path, seed: int, bars: int = 2) -> Path:
    """A short synthetic song; ``seed`` changes its tempo so every file differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mix = synth.mix(synth.song_stems(bpm=110.0 + 4 * seed, bars=bars))
    sf.write(path, mix.T, synth.SR, subtype="PCM_16")
    return path


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    root = tmp_path / "songs"
    write_song(root / "a.wav", 0)
    write_song(root / "rock" / "b.wav", 1)
    write_song(root / "rock" / "live" / "c.wav", 2)
    return root


EXPECTED = {
    "a__drums.wav",
    "a__bass.wav",
    "rock/b__drums.wav",
    "rock/b__bass.wav",
    "rock/live/c__drums.wav",
    "rock/live/c__bass.wav",
}


def files_under(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` but the state folder, by relative path."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and FOLDER not in p.relative_to(out).parts
    }


def separate(capsys: pytest.CaptureFixture[str], library: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code, stdout, _ = run(
        capsys,
        "batch",
        "separate",
        str(library),
        "--out",
        str(out),
        "--stems",
        "drums,bass",
        "--json",
        *extra,
    )
    return code, json.loads(stdout)


def test_outputs_mirror_the_input_tree(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stems"
    code, report = separate(capsys, library, out, "--workers", "2")
    assert code == 0
    assert set(files_under(out)) == EXPECTED
    assert (report["done"], report["skipped"], report["failed"]) == (3, 0, [])
    listed = {(o["input"], o["stem"], o["path"]) for o in report["outputs"]}
    assert listed == {
        (str(library / src), stem, str(out / folder / f"{name}__{stem}.wav"))
        for src, folder, name in (
            ("a.wav", "", "a"),
            ("rock/b.wav", "rock", "b"),
            ("rock/live/c.wav", "rock/live", "c"),
        )
        for stem in ("drums", "bass")
    }
    for src, dst in (("a.wav", "a__bass.wav"), ("rock/live/c.wav", "rock/live/c__drums.wav")):
        assert sf.info(out / dst).frames == sf.info(library / src).frames  # to the sample


def test_a_bad_file_is_reported_and_the_rest_goes_on(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    bad = library / "rock" / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    out = tmp_path / "stems"
    code, report = separate(capsys, library, out, "--workers", "2")
    assert code == 1
    assert report["done"] == 3
    assert [f["input"] for f in report["failed"]] == [str(bad)]
    assert report["failed"][0]["error"].startswith(
        f"cannot read {bad}: not a supported audio file or corrupt"
    )
    assert "\n" not in report["failed"][0]["error"]
    assert set(files_under(out)) == EXPECTED  # nothing for the bad file, no temp files

    code, stdout, _ = run(
        capsys, "batch", "separate", str(library), "--out", str(out), "--stems", "drums,bass"
    )
    assert code == 1
    assert stdout.splitlines()[0] == "batch: 0 done, 3 skipped (done before), 1 failed"
    assert stdout.splitlines()[1].startswith(f"  failed  {bad}: cannot read")


def test_a_second_run_skips_what_is_done(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stems"
    separate(capsys, library, out)
    before = {p: (out / p).stat().st_ino for p in EXPECTED}
    write_song(library / "rock" / "d.wav", 3)
    code, report = separate(capsys, library, out)
    assert code == 0
    assert (report["done"], report["skipped"]) == (1, 3)
    assert set(files_under(out)) == EXPECTED | {"rock/d__drums.wav", "rock/d__bass.wav"}
    assert {p: (out / p).stat().st_ino for p in EXPECTED} == before  # not written again


def test_a_changed_input_or_a_deleted_output_is_done_again_under_the_same_names(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stems"
    separate(capsys, library, out)
    first = files_under(out)
    write_song(library / "a.wav", 5)  # exported again with other content: its stems are replaced, not doubled
    code, report = separate(capsys, library, out)
    assert (code, report["done"], report["skipped"]) == (0, 1, 2)
    second = files_under(out)
    assert set(second) == EXPECTED
    assert second["a__drums.wav"] != first["a__drums.wav"]
    assert second["rock/b__drums.wav"] == first["rock/b__drums.wav"]

    (out / "rock" / "b__bass.wav").unlink()  # one output deleted: the item is done again, no b__drums-2.wav
    code, report = separate(capsys, library, out)
    assert (code, report["done"], report["skipped"]) == (0, 1, 2)
    assert files_under(out) == second

    (out / "a__bass.wav").unlink()  # a file the user put under an output's name is never removed
    (out / "a__bass.wav").write_bytes(b"mine")
    (out / "a__drums.wav").unlink()
    code, report = separate(capsys, library, out)
    assert code == 0
    assert (out / "a__bass.wav").read_bytes() == b"mine"
    assert (out / "a__bass-2.wav").read_bytes() == second["a__bass.wav"]


def test_an_item_cut_off_while_publishing_is_undone_and_redone(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    """The state a kill -9 between publishing an item's files and recording it done leaves: its plan without
    its done line. Without undoing it, the next run would publish a second copy (``a__drums-2.wav``)."""
    out = tmp_path / "stems"
    separate(capsys, library, out)
    first = files_under(out)
    state = out / FOLDER / FILE
    lines = state.read_text().splitlines()
    state.write_text("\n".join(line for line in lines if not line.startswith('{"done"')) + "\n")
    code, report = separate(capsys, library, out)
    assert code == 0
    assert (report["done"], report["skipped"]) == (3, 0)
    assert files_under(out) == first


def test_one_and_two_workers_give_identical_files(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    separate(capsys, library, tmp_path / "one", "--workers", "1")
    separate(capsys, library, tmp_path / "two", "--workers", "2")
    one, two = files_under(tmp_path / "one"), files_under(tmp_path / "two")
    assert set(one) == EXPECTED
    assert one == two


def test_resume_after_kill_9_of_the_driver(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    library = tmp_path / "songs"
    for k in range(6):
        write_song(library / f"s{k}.wav", k, bars=4)
    reference = tmp_path / "reference"
    assert separate(capsys, library, reference, "--workers", "2")[0] == 0
    out = tmp_path / "stems"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bridge.cli", "batch", "separate", str(library), "--out", str(out)]
    driver = subprocess.Popen(
        [*command, "--stems", "drums,bass", "--workers", "1", "-q"], env=env, start_new_session=True
    )
    state = out / FOLDER / FILE
    deadline = time.monotonic() + 120
    while not (state.is_file() and '{"done"' in state.read_text()):
        assert driver.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 60
    while _group_alive(driver.pid):  # its worker sees the driver gone and leaves by itself
        assert time.monotonic() < deadline, "a worker outlived its driver"
        time.sleep(0.1)
    cut = files_under(out)
    assert len(cut) < 12  # it was killed before the end

    code, report = separate(capsys, library, out)
    assert code == 0
    assert report["done"] + report["skipped"] == 6 and report["skipped"] >= 1
    assert files_under(out) == files_under(reference)  # each once, complete, no -2 copies, no temp files
    assert not [p for p in out.rglob(".*") if FOLDER not in p.parts]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_killed_mid_item_is_replaced_and_the_item_done_once(library: Path, tmp_path: Path) -> None:
    files = [(library / "a.wav", ""), (library / "rock" / "b.wav", "rock")]
    items = separate_items(files, {"stems": ["drums", "bass"]})
    killed: list[int] = []

    def kill_first(work: object, process: object) -> None:
        if not killed:
            pid = process.pid  # type: ignore[attr-defined]
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    with LocalPool(WorkerConfig(), 1) as pool:
        summary = run_batch(items, ["builtin", "builtin"], tmp_path / "out", pool, on_start=kill_first)
    assert killed
    assert (summary.done, summary.failed) == (2, [])
    assert set(files_under(tmp_path / "out")) == {
        "a__drums.wav",
        "a__bass.wav",
        "rock/b__drums.wav",
        "rock/b__bass.wav",
    }

    with LocalPool(WorkerConfig(), 1, retries=0) as pool:
        summary = run_batch(
            items[:1], ["builtin"], tmp_path / "again", pool, on_start=lambda w, p: os.kill(p.pid, 9)
        )  # type: ignore[attr-defined]
    assert summary.done == 0
    assert summary.failed == [
        {
            "input": str(library / "a.wav"),
            "error": "its worker died while running it (killed by SIGKILL), once; the item may need more "
            "memory than a worker has: try fewer --workers",
        }
    ]
    assert files_under(tmp_path / "again") == {}


def test_a_manifest_runs_generate_separate_and_vary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_song(tmp_path / "job" / "drums.wav", 0)
    write_song(tmp_path / "job" / "loops" / "loop.wav", 1)
    manifest = tmp_path / "job" / "requests.jsonl"
    lines = [
        {"task": "generate", "stem": "bass", "context": ["drums.wav"], "bpm": 120, "bars": 2, "seed": 3},
        {"task": "separate", "file": "loops/loop.wav", "stems": ["drums"]},
        {"task": "vary", "file": "loops/loop.wav", "variations": 2, "strength": 0.4},
        {"task": "vary", "file": "loops/missing.wav"},
    ]
    manifest.write_text("# renders for the remix\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "renders"
    code, stdout, _ = run(capsys, "batch", "run", str(manifest), "--out", str(out), "--json")
    report = json.loads(stdout)
    assert code == 1
    assert report["done"] == 3
    assert [f["input"] for f in report["failed"]] == ["requests.jsonl:5"]
    assert "missing.wav" in report["failed"][0]["error"]
    made = set(files_under(out))
    assert {"drums__bass__120bpm__2bars__v1.wav", "loops/loop__drums.wav"} <= made
    assert {p for p in made if p.startswith("loops/loop__") and "__v" in p and p.endswith(".wav")} == {
        f"loops/{name}" for name in _vary_names(report)
    }
    bars = 2 * 4 * 60 / 120 * synth.SR
    assert sf.info(out / "drums__bass__120bpm__2bars__v1.wav").frames == round(bars)


def _vary_names(report: dict) -> set[str]:
    return {Path(o["path"]).name for o in report["outputs"] if o["input"] == "requests.jsonl:4"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "requests.jsonl:1: not JSON"),
        (
            '{"task": "mix", "file": "a.wav"}',
            "requests.jsonl:1: task must be one of separate, generate, vary, got 'mix'",
        ),
        (
            '{"task": "generate", "stem": "bass", "bpm": 0, "bars": 8}',
            "requests.jsonl:1: bpm must be between 20 and 400",
        ),
        (
            '{"task": "vary", "file": "a.wav", "strenght": 1}',
            "requests.jsonl:1: unknown key(s) strenght for vary",
        ),
        ('{"task": "separate", "file": 3}', "requests.jsonl:1: file must be a string, got 3"),
    ],
)
def test_a_malformed_manifest_is_exit_2_and_nothing_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, message: str
) -> None:
    manifest = tmp_path / "requests.jsonl"
    manifest.write_text(line + "\n")
    code, _, err = run(capsys, "batch", "run", str(manifest), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith(f"stembridge batch: error: {message}")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_exit_2(capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "batch", "separate", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert (code, err) == (
        2,
        f"stembridge batch: error: {tmp_path / 'nowhere'} does not exist; give folders, audio files or globs\n",
    )
    code, _, err = run(
        capsys, "batch", "separate", str(library), "--out", str(tmp_path / "o"), "--engine", "nope"
    )
    assert code == 2 and "nope" in err
    code, _, err = run(
        capsys, "batch", "separate", str(library), "--out", str(tmp_path / "o"), "--workers", "0"
    )
    assert (code, err) == (2, "stembridge batch: error: --workers must be 1 or more, got 0\n")
    code, _, err = run(
        capsys, "batch", "separate", str(library), "--out", str(tmp_path / "o"), "--cluster", "10.0.0.5"
    )
    assert code == 2
    assert (
        err
        in (
            "stembridge batch: error: --cluster must be ray://HOST:10001 or auto, got '10.0.0.5'\n",
            "stembridge batch: error: --cluster needs Ray: pip install 'stembridge[cluster]'\n",  # without the extra
        )
    )
    assert not (tmp_path / "o").exists()


def test_a_glob_mirrors_from_its_base_and_the_output_folder_is_never_an_input(
    capsys: pytest.CaptureFixture[str], library: Path
) -> None:
    out = library / "stems"  # inside the library: its files must not become inputs on the next run
    code, report = separate(capsys, library, out)
    assert code == 0
    code, report = separate(capsys, library, out)
    assert (report["done"], report["skipped"]) == (0, 3)
    code, stdout, _ = run(
        capsys,
        "batch",
        "separate",
        str(library / "rock" / "**" / "*.wav"),
        "--out",
        str(library / "g"),
        "--json",
    )
    names = {Path(o["path"]).relative_to(library / "g").as_posix() for o in json.loads(stdout)["outputs"]}
    assert {n.split("__")[0] for n in names} == {"b", "live/c"}
    assert not [n for n in names if n.startswith("rock/")]


def test_default_workers_follow_cores_threads_and_memory() -> None:
    from bridge.batch.driver import WORK_BYTES, default_workers

    gib = 1 << 30
    assert default_workers(["builtin"], [None], None, cores=8, available=64 * gib) == 8
    assert default_workers(["builtin"], [None], 2, cores=8, available=64 * gib) == 4  # --threads 2 each
    assert default_workers(["builtin"], [None], None, cores=8, available=3 * WORK_BYTES) == 3  # memory-bound
    assert default_workers(["builtin"], [None], None, cores=8, available=0) == 1  # always one
    # a torch engine uses every core by default: one worker; with --threads 2, four
    assert default_workers(["demucs"], ["htdemucs"], None, cores=8, available=64 * gib) == 1
    assert default_workers(["demucs"], ["htdemucs"], 2, cores=8, available=64 * gib) == 4
    each = WORK_BYTES + 2 * 80 * (1 << 20)  # htdemucs: 80 MB of weights in the catalogue
    assert default_workers(["demucs"], ["htdemucs"], 2, cores=8, available=2 * each) == 2


def test_a_torn_last_line_of_the_state_file_is_ignored(library: Path, tmp_path: Path) -> None:
    """A driver killed while appending leaves half a line: the next run reads what is whole and appends on a
    line of its own."""
    from bridge.batch.state import State

    out = tmp_path / "out"
    items = separate_items([(library / "a.wav", "")], {"stems": ["drums"]})
    with LocalPool(WorkerConfig(), 1) as pool:
        assert run_batch(items, ["builtin"], out, pool).done == 1
    state = out / FOLDER / FILE
    with state.open("ab") as f:
        f.write(b'{"plan": "abc", "fi')
    with LocalPool(WorkerConfig(), 1) as pool:
        summary = run_batch(items, ["builtin"], out, pool)
    assert (summary.done, summary.skipped) == (0, 1)
    with State(out) as reread:
        assert len(reread.done) == 1
    assert state.read_bytes().endswith(b'"fi\n')


def test_batch_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["batch"], ["batch", "separate"], ["batch", "run"]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
        assert "examples:" in capsys.readouterr().out


# --- what a later run replaces, and one batch per output folder -------------------------------------------------


def write_manifest(path: Path, *requests: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def batch_run(capsys: pytest.CaptureFixture[str], manifest: Path, out: Path) -> tuple[int, dict]:
    code, stdout, _ = run(capsys, "batch", "run", str(manifest), "--out", str(out), "--json")
    return code, json.loads(stdout)


def test_another_manifests_request_never_replaces_these_outputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two manifests' first lines are two requests (``jobs.jsonl:1`` each): the second run adds its files and
    keeps the first's. The same line run again with a new seed is the same request: it replaces its file."""
    write_song(tmp_path / "a" / "drums.wav", 0)
    write_song(tmp_path / "b" / "bass.wav", 1)
    bass = {"task": "generate", "stem": "bass", "context": ["drums.wav"], "bpm": 120, "bars": 2, "seed": 3}
    a = write_manifest(tmp_path / "a" / "jobs.jsonl", bass)
    b = write_manifest(
        tmp_path / "b" / "jobs.jsonl",
        {"task": "generate", "stem": "drums", "context": ["bass.wav"], "bpm": 100, "bars": 2, "seed": 3},
    )
    out = tmp_path / "out"
    assert batch_run(capsys, a, out)[0] == 0
    first = files_under(out)  # the bass, and its MIDI
    assert {Path(p).stem for p in first} == {"drums__bass__120bpm__2bars__v1"}
    code, report = batch_run(capsys, b, out)
    assert (code, report["done"]) == (0, 1)
    both = files_under(out)
    assert {Path(p).stem for p in both} == {
        "drums__bass__120bpm__2bars__v1",
        "bass__drums__100bpm__2bars__v1",
    }
    assert {p: both[p] for p in first} == first

    write_manifest(a, {**bass, "seed": 4})  # the same request with another seed: rendered again in its place
    code, report = batch_run(capsys, a, out)
    assert (code, report["done"]) == (0, 1)
    again = files_under(out)
    assert set(again) == set(both)
    assert again["drums__bass__120bpm__2bars__v1.wav"] != first["drums__bass__120bpm__2bars__v1.wav"]
    assert {p: again[p] for p in both if p not in first} == {p: both[p] for p in both if p not in first}


def test_other_stems_of_the_same_song_keep_the_earlier_stems(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    song = write_song(tmp_path / "songs" / "a.wav", 0)
    out = tmp_path / "stems"
    run(capsys, "batch", "separate", str(song), "--out", str(out), "--stems", "drums")
    drums = files_under(out)
    code, _, _ = run(capsys, "batch", "separate", str(song), "--out", str(out), "--stems", "bass")
    assert code == 0
    after = files_under(out)
    assert set(after) == {"a__drums.wav", "a__bass.wav"}
    assert after["a__drums.wav"] == drums["a__drums.wav"]


def test_a_publish_that_fails_keeps_the_earlier_outputs(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.audio.writer import Publisher
    from bridge.errors import AudioWriteError

    out = tmp_path / "stems"
    separate(capsys, library, out)
    first = files_under(out)
    write_song(library / "a.wav", 5)  # done again: its new stems would replace the earlier ones

    def disk_full(self: Publisher, *, retry: bool = False) -> list[Path]:
        raise AudioWriteError(f"disk full writing {out / 'a__drums.wav'}; free some space")

    monkeypatch.setattr(Publisher, "publish", disk_full)
    code, report = separate(capsys, library, out)
    assert code == 1
    assert report["failed"] == [
        {
            "input": str(library / "a.wav"),
            "error": f"disk full writing {out / 'a__drums.wav'}; free some space",
        }
    ]
    assert files_under(out) == first  # the earlier stems, back under their names; no temp or hidden files

    monkeypatch.undo()
    code, report = separate(capsys, library, out)
    assert (code, report["done"], report["skipped"]) == (0, 1, 2)
    assert set(files_under(out)) == EXPECTED
    assert files_under(out)["a__drums.wav"] != first["a__drums.wav"]


_DIE_AFTER = """
import os, signal, sys
from bridge.audio.writer import Publisher
from bridge.batch.state import State
from bridge.cli import main

cls, name = {"publish": (Publisher, "publish"), "finish": (State, "finish")}[sys.argv[1]]
real = getattr(cls, name)

def then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(cls, name, then_die)
main(sys.argv[2:])
"""


@pytest.mark.parametrize("point", ["publish", "finish"])
def test_a_driver_killed_while_replacing_leaves_the_earlier_or_the_new_outputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, point: str
) -> None:
    """kill -9 right after the new files are published (not yet recorded: the next run puts the earlier ones
    back) or right after they are recorded (the next run removes the earlier ones set aside)."""
    from bridge.batch.state import State

    song = write_song(tmp_path / "songs" / "a.wav", 0)
    out = tmp_path / "stems"
    separate(capsys, song, out)
    first = files_under(out)
    write_song(song, 5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        "batch",
        "separate",
        str(song),
        "--out",
        str(out),
        "--stems",
        "drums,bass",
        "--workers",
        "1",
        "-q",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-c", _DIE_AFTER, point, *argv], env=env, start_new_session=True
    )
    assert driver.wait(timeout=120) == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while _group_alive(driver.pid):  # its worker sees the driver gone and leaves by itself
        assert time.monotonic() < deadline, "a worker outlived its driver"
        time.sleep(0.1)
    assert len([p for p in out.glob(".*.stembridge-aside-*") if p.is_file()]) == 2
    with State(out) as state:
        state.recover({out})
    recovered = files_under(out)
    if point == "publish":
        assert recovered == first
    else:
        assert set(recovered) == {"a__drums.wav", "a__bass.wav"}
        assert recovered["a__drums.wav"] != first["a__drums.wav"]
    code, report = separate(capsys, song, out)
    assert (code, report["done"] + report["skipped"]) == (0, 1)
    assert set(files_under(out)) == {"a__drums.wav", "a__bass.wav"}  # no -2 copies, nothing hidden left


_HOLD = """
import sys
from pathlib import Path
from bridge.batch.state import State

with State(Path(sys.argv[1])):
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_second_batch_on_the_same_output_folder_is_refused(
    capsys: pytest.CaptureFixture[str], library: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stems"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        code, stdout, err = run(
            capsys, "batch", "separate", str(library), "--out", str(out), "--stems", "drums"
        )
        assert (code, stdout) == (2, "")
        assert err == (
            f"stembridge batch: error: another stembridge batch is writing to {out} (pid {holder.pid}); "
            "wait for it or use another --out\n"
        )
        assert files_under(out) == {}
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    code, report = separate(capsys, library, out)
    assert (code, report["done"]) == (0, 3)


def test_a_midi_file_stays_with_the_audio_file_it_belongs_to(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The same request again, but its audio file was replaced by the user's own: the new audio file and its
    MIDI go to ``-2`` names, and the earlier MIDI stays beside the file it was made with."""
    write_song(tmp_path / "a" / "drums.wav", 0)
    bass = {"task": "generate", "stem": "bass", "context": ["drums.wav"], "bpm": 120, "bars": 2, "seed": 3}
    manifest = write_manifest(tmp_path / "a" / "jobs.jsonl", bass)
    out = tmp_path / "out"
    batch_run(capsys, manifest, out)
    first = files_under(out)
    assert set(first) == {"drums__bass__120bpm__2bars__v1.wav", "drums__bass__120bpm__2bars__v1.mid"}
    (out / "drums__bass__120bpm__2bars__v1.wav").unlink()
    (out / "drums__bass__120bpm__2bars__v1.wav").write_bytes(b"mine")
    write_manifest(manifest, {**bass, "seed": 4})
    assert batch_run(capsys, manifest, out)[0] == 0
    after = files_under(out)
    assert set(after) == {
        "drums__bass__120bpm__2bars__v1.wav",
        "drums__bass__120bpm__2bars__v1.mid",
        "drums__bass__120bpm__2bars__v1-2.wav",
        "drums__bass__120bpm__2bars__v1-2.mid",
    }
    assert after["drums__bass__120bpm__2bars__v1.wav"] == b"mine"
    assert after["drums__bass__120bpm__2bars__v1.mid"] == first["drums__bass__120bpm__2bars__v1.mid"]
