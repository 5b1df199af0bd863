"""The Reaper scripts (reaper_scripts/), run under Lua 5.4 with a stub ``reaper`` table (tests/reaper/) against a
real daemon: ExecProcess starts real ``stembridge request`` processes, defer really polls their result files, and
the test reads back the tracks, items and takes the scripts made. Also the ReaPack index.

Needs ``lua5.4`` (Debian package ``lua5.4``); the tests skip without it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client, Endpoint
from bridge.config import Settings
from bridge.server.daemon import DaemonThread
from bridge.server.osc import decode_packet, encode_message
from tests.test_m4l_device import write_mid

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "reaper_scripts"
RUNNER = ROOT / "tests" / "reaper" / "run.lua"
LUA = shutil.which("lua5.4")
SR = 44100
SEPARATE = "Stembridge_Separate selected items.lua"
GENERATE = "Stembridge_Generate stem for time selection.lua"
VARY = "Stembridge_Vary selected item.lua"
STATUS = "Stembridge_Status.lua"
MAX_CALL = (
    1.0  # seconds: no single call into a script may take this long (Reaper would freeze); jobs take more
)

needs_lua = pytest.mark.skipif(LUA is None, reason="lua5.4 is not installed (Debian: apt-get install lua5.4)")


# --- the daemon, the stembridge command and the scenario ---------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonThread]:
    base = tmp_path_factory.mktemp("reaper-daemon")
    settings = Settings(
        out_dir=base / "renders",
        state_dir=base / "state",
        models_dir=base / "models",
        port=0,
        engine="builtin",
    )
    with DaemonThread(settings, discovery=False) as d:
        yield d


def write_command(folder: Path) -> Path:
    """A ``stembridge`` command in ``folder`` that runs this checkout with this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "stembridge"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bridge.cli "$@"\n')
    exe.chmod(0o755)
    return exe


class Reaper:
    """One isolated Reaper: a home, a temp folder, an environment; runs scripts and returns what they did."""

    def __init__(self, tmp_path: Path, daemon: DaemonThread | None, *, command_on_path: bool = True) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.temp = tmp_path / "tmp"
        for folder in (self.home, self.temp):
            folder.mkdir(parents=True, exist_ok=True)
        bin_dir = tmp_path / "bin"
        if command_on_path:
            write_command(bin_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEMBRIDGE_")}
        env.update(
            PATH=f"{bin_dir}:/usr/bin:/bin",
            HOME=str(self.home),
            TMPDIR=str(self.temp),
            PYTHONPATH=str(ROOT),
            STEMBRIDGE_CONFIG=str(tmp_path / "no-config.toml"),
        )
        if daemon is not None:
            env["STEMBRIDGE_STATE_DIR"] = str(daemon.daemon.settings.state_dir)
        self.env = env

    def run(self, script: str, timeout: float = 60, **scenario: Any) -> dict[str, Any]:
        scenario.setdefault("guard", timeout - 10)
        scenario["script"] = str(SCRIPTS / script)
        scenario_file = self.tmp / f"scenario-{len(list(self.tmp.glob('scenario-*')))}.lua"
        scenario_file.write_text("return " + lua(scenario) + "\n")
        dump = scenario_file.with_suffix(".json")
        assert LUA is not None
        proc = subprocess.run(
            [LUA, str(RUNNER), str(scenario_file), str(dump)],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(dump.read_text())
        assert result["errors"] == [], "\n".join(result["errors"])
        assert result["max_call"] < MAX_CALL, f"a call into the script took {result['max_call']:.2f} s"
        assert all(e["timeout"] in (-1, -2) for e in result["exec"]), (
            f"a waiting ExecProcess: {result['exec']}"
        )
        assert result["undo_depth"] == 0 and result["refresh"] == 0
        assert result["deferred_left"] == 0
        return result

    def leftovers(self) -> list[str]:
        """Files the scripts left in their temp folder."""
        return sorted(p.name for p in self.temp.rglob("*") if p.is_file())


def lua(value: Any) -> str:
    """``value`` as a Lua literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua(str(k))}] = {lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua literal for {value!r}")


def write_audio(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def song_file(tmp_path_factory: pytest.TempPathFactory, song_mix: np.ndarray) -> Path:
    return write_audio(tmp_path_factory.mktemp("audio") / "My Song.wav", song_mix)


@pytest.fixture(scope="module")
def drums_file(tmp_path_factory: pytest.TempPathFactory, song: dict[str, np.ndarray]) -> Path:
    return write_audio(tmp_path_factory.mktemp("audio") / "drums.wav", song["drums"])


def item(path: Path, position: float, length: float, *, startoffs: float = 0.0, playrate: float = 1.0,
         pitch: float = 0.0, section: tuple[float, float, bool] | None = None,
         selected: bool = False) -> dict[str, Any]:  # fmt: skip
    """An item with one take of ``path``, named after the file as Reaper names it ("My Song.wav"); with
    ``section`` (offset, length, reversed) the take's source is that section of the file."""
    take: dict[str, Any] = {
        "file": str(path), "startoffs": startoffs, "playrate": playrate, "pitch": pitch, "name": path.name,
    }  # fmt: skip
    if section is not None:
        take["section"] = list(section)
    return {"position": position, "length": length, "selected": selected, "takes": [take]}


def frames(path: str) -> int:
    return int(sf.info(path).frames)


def command_line(exec_entry: dict[str, Any]) -> list[str]:
    """The ``stembridge request ...`` argv that an ExecProcess call ran (from the shell script it started)."""
    assert exec_entry["script"], f"no script behind {exec_entry['cmd']}"
    words = shlex.split(exec_entry["script"].splitlines()[0])
    return words[: words.index(">")]


def values(argv: list[str], option: str) -> list[str] | None:
    """The values after ``option`` up to the next option, or None when it is not there."""
    if option not in argv:
        return None
    rest = argv[argv.index(option) + 1 :]
    end = next((i for i, word in enumerate(rest) if word.startswith("--")), len(rest))
    return rest[:end]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equally long signals (1: the same up to gain)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of a sine gliding from 100 Hz to 3 kHz: every stretch of it differs from every other."""
    t = np.arange(10 * SR) / SR
    phase = 2 * np.pi * (100 * t + (3000 - 100) / (2 * 10) * t**2)
    tone = (0.5 * np.sin(phase)).astype(np.float32)
    return write_audio(tmp_path_factory.mktemp("audio") / "sweep.wav", np.stack([tone, tone]))


# --- separate ---------------------------------------------------------------------------------------------------


@needs_lua
def test_separate_puts_aligned_stems_in_a_folder_below_each_item(
    tmp_path: Path, daemon: DaemonThread, song_file: Path, drums_file: Path
) -> None:
    reaper = Reaper(tmp_path, daemon)
    trimmed = item(song_file, 2.0, 5.0, startoffs=1.5, playrate=1.25, selected=True)
    tracks = [
        {"name": "Band", "folderdepth": 1},
        {"name": "Song", "folderdepth": -1, "items": [trimmed]},  # the last track of the Band folder
        {"name": "After", "items": [item(drums_file, 0.0, 8.0, selected=True)]},
    ]
    out = reaper.run(SEPARATE, tracks=tracks, ext_state={"Stembridge": {"stems": "drums,bass"}})

    assert out["messages"] == []
    names = [(t["name"], t["folderdepth"]) for t in out["tracks"]]
    assert names == [
        ("Band", 1), ("Song", 0), ("My Song - stems", 1),
        ("drums", 0), ("bass", -2),  # closes the stems folder and the Band folder
        ("After", 0), ("drums - stems", 1), ("drums", 0), ("bass", -1),
    ]  # fmt: skip
    assert [i["position"] for i in out["tracks"][7]["items"]] == [0.0]
    for track in out["tracks"][3:5]:
        [stem_item] = track["items"]
        assert (stem_item["position"], stem_item["length"]) == (2.0, 5.0)
        [take] = stem_item["takes"]
        assert (take["startoffs"], take["playrate"], take["name"]) == (1.5, 1.25, track["name"])
        assert Path(take["file"]).name == f"My_Song__{track['name']}.wav"
        assert frames(take["file"]) == frames(str(song_file))  # the whole file, so the offset still lines up
    assert out["undo"] == ["Stembridge: separate My Song", "Stembridge: separate drums"]
    assert 40047 in out["commands"]  # peaks built
    assert out["gfx"]["inits"] == 1 and out["gfx"]["quits"] == 1  # one window for both jobs
    assert {"Separating My Song (1 of 2)", "Separating drums (2 of 2)", "Cancel"} <= set(out["drawn"])
    for cmd in [e["cmd"] for e in out["exec"]]:
        assert cmd == f"/bin/sh {reaper.temp}/stembridge-reaper/{Path(cmd).name}" and cmd.endswith(".sh")
    assert reaper.leftovers() == []


@needs_lua
def test_separate_sends_only_a_short_part_of_a_long_file(
    tmp_path: Path, daemon: DaemonThread, song_file: Path, song: dict[str, np.ndarray]
) -> None:
    reaper = Reaper(tmp_path, daemon)
    # 1.5 s of timeline at rate 1.5 plays 2.25 s of the 8 s song from 4 s in (bar 3): less than half, a section
    short = item(song_file, 3.0, 1.5, startoffs=4.0, playrate=1.5, pitch=-2.0, selected=True)
    # a section source of the file from 1 s in, played from 0.5 s into it for 6 s: most of it, the whole file
    looped = item(song_file, 20.0, 6.0, startoffs=0.5, section=(1.0, 7.0, False), selected=True)
    tracks = [{"name": "Short", "items": [short]}, {"name": "Long", "items": [looped]}]
    out = reaper.run(SEPARATE, tracks=tracks, ext_state={"Stembridge": {"stems": "drums,bass"}})

    assert out["messages"] == []
    first, second = (command_line(e) for e in out["exec"])
    assert (values(first, "--start"), values(first, "--length")) == (["4"], ["2.25"])
    assert values(second, "--start") is None and values(second, "--length") is None
    assert [t["name"] for t in out["tracks"]] == [
        "Short", "My Song - stems", "drums", "bass", "Long", "My Song - stems", "drums", "bass",
    ]  # fmt: skip
    section = slice(4 * SR, round(6.25 * SR))
    for track in out["tracks"][2:4]:
        [stem_item] = track["items"]
        assert (stem_item["position"], stem_item["length"]) == (3.0, 1.5)
        [take] = stem_item["takes"]
        # played from its start, at the item's rate and pitch
        assert (take["startoffs"], take["playrate"], take["pitch"]) == (0, 1.5, -2.0)
        assert frames(take["file"]) == round(2.25 * SR)  # exactly the part the item plays
    bass, _ = sf.read(out["tracks"][3]["items"][0]["takes"][0]["file"], always_2d=True)
    right, wrong = song["bass"][:, section], song["bass"][:, : section.stop - section.start]
    assert correlation(bass.T, right) > 0.6 and abs(correlation(bass.T, wrong)) < 0.3  # bar 3, not bar 1
    for track in out["tracks"][6:8]:
        [take] = track["items"][0]["takes"]
        assert (take["startoffs"], take["playrate"]) == (1.5, 1.0)  # 1 s of section + 0.5 s into it
        assert frames(take["file"]) == frames(str(song_file))
    assert reaper.leftovers() == []


@needs_lua
def test_separate_without_a_selected_audio_item_says_so(tmp_path: Path, daemon: DaemonThread) -> None:
    reaper = Reaper(tmp_path, daemon)
    midi = {"position": 0.0, "length": 2.0, "selected": True, "takes": [{"midi": True}]}
    out = reaper.run(SEPARATE, tracks=[{"name": "Synth", "items": [midi]}])
    [message] = out["messages"]
    assert "Select one or more audio items" in message["text"] and "it is MIDI, not audio" in message["text"]
    assert out["exec"] == [] and len(out["tracks"]) == 1


# --- generate ---------------------------------------------------------------------------------------------------


@needs_lua
def test_generate_fills_the_time_selection_with_the_context_playing_at_its_start(
    tmp_path: Path, daemon: DaemonThread, drums_file: Path, song_file: Path
) -> None:
    reaper = Reaper(tmp_path, daemon)
    start, bar = 4.0, 3 * 60 / 90  # 3/4 at 90 bpm: a bar lasts 2 s
    tracks = [  # Vox is not selected; Late, Fast and Loop cannot be context
        {"name": "Drums", "selected": True, "items": [item(drums_file, start, 8.0)]},
        {"name": "Keys", "selected": True, "items": [item(song_file, 2.0, 8.0)]},  # 2 s into its file
        {"name": "Pad", "selected": True, "items": [item(song_file, 1.0, 6.0, startoffs=0.75)]},  # 3.75 s in
        {"name": "Late", "selected": True, "items": [item(drums_file, start + 1.0, 4.0)]},  # a gap before it
        {"name": "Fast", "selected": True, "items": [item(drums_file, 0.0, 8.0, playrate=2.0)]},
        {"name": "Loop", "selected": True, "items": [item(drums_file, 0.0, 20.0, startoffs=5.0)]},  # 9 s in
        {"name": "Vox", "items": [item(song_file, start, 8.0)]},
        {"name": "Master bus"},
    ]
    out = reaper.run(
        GENERATE, tracks=tracks, tempo=90, timesig=[3, 4], time_selection=[start, start + 4 * bar + 0.3],
        inputs=[["bass", "dark and sparse", "4", "2", "n"]],
    )  # fmt: skip

    [dialog] = out["inputs"]
    assert dialog["defaults"].split("\n") == ["bass", "", "4", "1", "n"]  # 4 bars from the selection
    [job] = out["exec"]
    argv = command_line(job)
    assert values(argv, "--context") == [str(drums_file), str(song_file), str(song_file)]
    assert values(argv, "--context-start") == ["0", "2", "3.75"]  # one per --context, in order
    assert values(argv, "--position") == ["4"]
    names = [t["name"] for t in out["tracks"]]
    assert names == ["Drums", "Keys", "Pad", "Late", "Fast", "Loop", "bass", "Vox", "Master bus"]
    [new] = out["tracks"][6]["items"]
    assert new["position"] == start and new["length"] == pytest.approx(4 * bar)
    assert len(new["takes"]) == 2 and new["active_take"] == 1
    for k, take in enumerate(new["takes"], 1):
        assert take["name"].startswith(f"bass v{k} (seed ")
        assert Path(take["file"]).name.startswith(f"drums__bass__90bpm__4bars__v{k}")  # after the context
        assert frames(take["file"]) == round(4 * bar * SR)  # exactly the four bars
        assert sf.info(take["file"]).samplerate == SR
    [note] = out["messages"]
    assert note["text"].splitlines() == [
        "Generated without these overlapping items as context:",
        'drums on track "Late": it starts at 5.000 s, after the selection start (the context must play from '
        "bar 1)",
        'drums on track "Fast": its playrate is 2, not 1, so its file is not at the project tempo',
        'drums on track "Loop": its file ends before the selection start (9.000 s into a 8.000 s file)',
    ]
    assert out["undo"] == ["Stembridge: generate bass"]
    assert out["ext"]["Stembridge/last_prompt"] == "dark and sparse"
    assert job["cmd"].startswith("/bin/sh ")


@needs_lua
@pytest.mark.parametrize("broken", [False, True])
def test_generate_asks_with_reaimgui_when_it_is_installed(
    tmp_path: Path, daemon: DaemonThread, broken: bool
) -> None:
    reaper = Reaper(tmp_path, daemon)
    answers = {"Stem (bass drums keys pad lead)": "keys", "Prompt (optional)": "bright", "Bars": 2}
    out = reaper.run(
        GENERATE, time_selection=[1.0, 9.0], imgui={"answers": answers, "broken": broken},
        inputs=[["lead", "", "1", "1", "n"]],  # what GetUserInputs answers, if it is asked
    )  # fmt: skip
    [track] = out["tracks"]
    [new] = track["items"]
    if broken:  # a ReaImGui the script does not know: the plain dialog instead, and no error
        assert track["name"] == "lead" and len(out["inputs"]) == 1 and new["length"] == 2.0
        return
    assert out["inputs"] == [] and not out["imgui"]["unbalanced"] and out["imgui"]["open_windows"] == 0
    assert set(out["imgui"]["labels"]) == {*answers, "Variations (1-16)", "MIDI"}
    assert track["name"] == "keys" and (new["position"], new["length"]) == (1.0, 4.0)  # 2 bars of 4/4 at 120
    assert out["ext"]["Stembridge/last_prompt"] == "bright"


@needs_lua
@pytest.mark.parametrize("version", ["0.4.1", "0.5.0", "0.6.2", "0.7.2", "0.8.7.6", "0.9.3"])
def test_the_reaimgui_form_pairs_begin_and_end_as_each_version_wants(
    tmp_path: Path, daemon: DaemonThread, version: str
) -> None:
    """The user folds the form on its first frame (Begin returns false). ReaImGui before 0.5 wants End after
    every Begin; from 0.5 on, only after a Begin that returned true (and it reports its version as the 2nd
    value of GetVersion before 0.7, the 3rd after). A wrong pairing raises in ReaImGui, and the form would
    fall back to the plain dialog."""
    reaper = Reaper(tmp_path, daemon)
    answers = {"Stem (bass drums keys pad lead)": "keys", "Bars": 1}  # not pad: the cancel test owns pad
    out = reaper.run(
        GENERATE, time_selection=[0.0, 8.0], imgui={"answers": answers, "version": version, "collapsed": [1]},
        inputs=[["lead", "", "2", "1", "n"]],  # what GetUserInputs would answer
    )  # fmt: skip
    assert out["inputs"] == [], "the form fell back to the plain dialog"
    assert not out["imgui"]["unbalanced"] and out["imgui"]["open_windows"] == 0
    assert out["imgui"]["frames"] == 3  # folded, typed in, OK pressed
    [track] = out["tracks"]
    assert track["name"] == "keys" and [i["length"] for i in track["items"]] == [2.0]  # 1 bar of 4/4 at 120


@needs_lua
def test_generate_refuses_bad_answers_before_starting_anything(tmp_path: Path, daemon: DaemonThread) -> None:
    reaper = Reaper(tmp_path, daemon)
    out = reaper.run(GENERATE, time_selection=[0.0, 8.0], inputs=[["bass", "", "8.5", "40", "maybe"]])
    [message] = out["messages"]
    assert 'bars must be a whole number from 1 to 256, got "8.5"' in message["text"]
    assert 'variations must be a whole number from 1 to 16, got "40"' in message["text"]
    assert 'MIDI must be y or n, got "maybe"' in message["text"]
    assert out["exec"] == [] and out["tracks"] == []
    out = reaper.run(GENERATE, time_selection=[0.0, 0.0])
    assert "Make a time selection first" in out["messages"][0]["text"] and out["inputs"] == []


# --- vary -------------------------------------------------------------------------------------------------------


@needs_lua
def test_vary_adds_the_variations_as_takes_in_place(
    tmp_path: Path, daemon: DaemonThread, drums_file: Path
) -> None:
    reaper = Reaper(tmp_path, daemon)
    loop = item(drums_file, 10.0, 3.0, startoffs=0.5, playrate=2.0, selected=True)  # 6 s of the file
    out = reaper.run(VARY, tracks=[{"name": "Drums", "items": [loop]}], inputs=[["3", "0.4", "n"]])

    assert out["messages"] == []
    argv = command_line(out["exec"][0])
    assert [values(argv, o) for o in ("--start", "--length", "--bpm")] == [["0.5"], ["6"], ["60"]]
    assert values(argv, "--bars") is None  # 1.5 bars at 60 bpm: not whole
    [varied] = out["tracks"][0]["items"]
    assert (varied["position"], varied["length"]) == (10.0, 3.0)
    assert len(varied["takes"]) == 4 and varied["active_take"] == 2  # the original, then v1 (active), v2, v3
    assert varied["takes"][0]["file"] == str(drums_file)
    for k, take in enumerate(varied["takes"][1:], 1):
        assert (take["startoffs"], take["playrate"], take["name"]) == (0, 2.0, f"drums v{k}")
        assert frames(take["file"]) == 6 * SR  # the part the item plays, not the 8 s file
        assert "__60bpm__" in Path(take["file"]).name  # 120 bpm played at twice the rate: the file is at 60
    assert out["undo"] == ["Stembridge: vary drums"]


@needs_lua
@pytest.mark.parametrize(
    ("startoffs", "length", "playrate", "bpm", "bars"),
    [
        (3.0, 4.0, 1.0, "120", "2"),  # 4 s of the file: two bars at 120
        (2.5, 2.0, 2.0, "60", "1"),  # 4 s of the file at half the tempo: one bar at 60
        (1.0, 3.3, 1.0, "120", None),  # 1.65 bars: no --bars, as long as the section
    ],
)
def test_vary_varies_the_part_the_item_plays(
    tmp_path: Path, daemon: DaemonThread, sweep_file: Path,
    startoffs: float, length: float, playrate: float, bpm: str, bars: str | None,
) -> None:  # fmt: skip
    reaper = Reaper(tmp_path, daemon)
    trimmed = item(sweep_file, 6.0, length, startoffs=startoffs, playrate=playrate, pitch=1.5, selected=True)
    out = reaper.run(
        VARY, tracks=[{"name": "Lead", "items": [trimmed]}], inputs=[["1", "0", "n"]]
    )  # unchanged

    assert out["messages"] == []
    argv = command_line(out["exec"][0])
    section = length * playrate
    assert values(argv, "--start") == [f"{startoffs:g}"] and values(argv, "--length") == [f"{section:g}"]
    assert values(argv, "--bpm") == [bpm]
    assert values(argv, "--bars") == (None if bars is None else [bars])
    [varied] = out["tracks"][0]["items"]
    assert (varied["position"], varied["length"]) == (6.0, length)
    original, take = varied["takes"]
    assert (original["startoffs"], original["file"]) == (startoffs, str(sweep_file))
    assert (take["startoffs"], take["playrate"], take["pitch"]) == (0, playrate, 1.5)
    assert frames(take["file"]) == round(section * SR)
    varied_audio, _ = sf.read(take["file"], always_2d=True)
    source, _ = sf.read(str(sweep_file), always_2d=True)
    first = round(startoffs * SR)
    right = source[first : first + len(varied_audio)]
    wrong = source[: len(varied_audio)]
    assert correlation(varied_audio, right) > 0.99 > 0.2 > abs(correlation(varied_audio, wrong))


@needs_lua
def test_vary_follows_a_section_source_and_skips_what_it_cannot_send(
    tmp_path: Path, daemon: DaemonThread, sweep_file: Path
) -> None:
    reaper = Reaper(tmp_path, daemon)
    tracks = [{"name": "Lead", "items": [
        item(sweep_file, 0.0, 2.0, startoffs=0.5, section=(2.0, 6.0, False), selected=True),  # 2.5 s in
        item(sweep_file, 4.0, 2.0, startoffs=-1.0, selected=True),
        item(sweep_file, 8.0, 2.0, section=(0.0, 10.0, True), selected=True),
    ]}]  # fmt: skip
    out = reaper.run(VARY, tracks=tracks, inputs=[["1", "0", "n"]])

    [job] = out["exec"]
    argv = command_line(job)
    assert [values(argv, o) for o in ("--start", "--length", "--bars")] == [["2.5"], ["2"], ["1"]]
    first, second, third = out["tracks"][0]["items"]
    [_, take] = first["takes"]
    assert take["startoffs"] == 0 and frames(take["file"]) == 2 * SR
    varied_audio, _ = sf.read(take["file"], always_2d=True)
    source, _ = sf.read(str(sweep_file), always_2d=True)
    assert correlation(varied_audio, source[round(2.5 * SR) : round(4.5 * SR)]) > 0.99
    assert len(second["takes"]) == 1 and len(third["takes"]) == 1
    [note] = out["messages"]
    assert note["text"].splitlines() == [
        "item 3 is skipped: it plays its file reversed (glue it first: Item > Glue items)",
        "sweep is skipped: its take starts 1.000 s before its file (a negative start offset); trim the item's "
        "start to the file, or glue it",
    ]


@needs_lua
def test_vary_tells_where_the_files_are_when_the_item_was_deleted_meanwhile(
    tmp_path: Path, daemon: DaemonThread, drums_file: Path
) -> None:
    reaper = Reaper(tmp_path, daemon)
    loop = item(drums_file, 0.0, 8.0, selected=True)
    out = reaper.run(
        VARY, tracks=[{"name": "Drums", "items": [loop]}], inputs=[["2", "0.5", "n"]],
        delete_selected_items_when="Varying drums",
    )  # fmt: skip
    [message] = out["messages"]
    assert message["text"].startswith("drums was deleted while its variations were made; they are in\n/")
    assert out["tracks"][0]["items"] == [] and out["undo"] == []


# --- status, finding the command, no daemon, cancel ---------------------------------------------------------------


@needs_lua
def test_status_reports_the_daemon_and_finds_the_command_in_a_virtualenv(
    tmp_path: Path, daemon: DaemonThread
) -> None:
    reaper = Reaper(tmp_path, daemon, command_on_path=False)
    exe = write_command(reaper.home / ".venvs" / "stembridge" / "bin")
    out = reaper.run(STATUS)
    [report] = out["messages"]
    assert report["type"] == 4  # Yes/No: edit the settings?
    text = report["text"]
    assert f"stembridge command: {exe}" in text
    assert f"at 127.0.0.1:{daemon.port}, answering" in text
    engines = next(line for line in text.splitlines() if line.startswith("Engines: "))
    assert "builtin" in engines.split(": ")[1].split(", ")
    assert "Models ready: builtin (separate/generate/vary)" in text
    assert "Queue: idle, no job running or waiting" in text
    assert out["inputs"] == []  # answered No


@needs_lua
def test_a_missing_command_is_named_and_the_settings_can_fix_it(tmp_path: Path, daemon: DaemonThread) -> None:
    reaper = Reaper(tmp_path, daemon, command_on_path=False)
    song = write_audio(tmp_path / "s.wav", np.zeros((2, SR), dtype=np.float32))
    tracks = [{"name": "Song", "items": [item(song, 0.0, 1.0, selected=True)]}]
    out = reaper.run(SEPARATE, tracks=tracks)
    [message] = out["messages"]
    assert "Cannot find the stembridge command (stembridge) on PATH" in message["text"]
    assert out["exec"] == [] and len(out["tracks"]) == 1 and out["gfx"]["inits"] == 0

    missing = str(tmp_path / "nowhere" / "stembridge")
    out = reaper.run(SEPARATE, tracks=tracks, ext_state={"Stembridge": {"executable": missing}})
    assert f"does not exist:\n{missing}" in out["messages"][0]["text"] and out["exec"] == []

    broken = tmp_path / "broken-venv" / "stembridge"  # found, but its Python is gone
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'bridge'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    out = reaper.run(SEPARATE, tracks=tracks, ext_state={"Stembridge": {"executable": str(broken)}})
    [message] = out["messages"]
    assert f"stopped with exit code 1 before it reached the daemon:\n{broken}" in message["text"]
    assert "No module named 'bridge'" in message["text"] and len(out["tracks"]) == 1
    assert reaper.leftovers() == []

    real = write_command(tmp_path / "elsewhere")  # Status: "Edit the settings?" Yes, and enter the path
    answers = [str(real), "", "", "", "", "", "", "", "", ""]
    out = reaper.run(STATUS, message_answers=[6], inputs=[answers])
    assert "Cannot find the stembridge command" in out["messages"][0]["text"]
    assert out["ext"]["Stembridge/executable"] == str(real) and "Stembridge/port" not in out["ext"]


@needs_lua
def test_a_daemon_that_is_not_running_gets_a_plain_message(tmp_path: Path, song_file: Path) -> None:
    reaper = Reaper(tmp_path, None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # a port where nothing answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        tracks = [{"name": "Song", "items": [item(song_file, 0.0, 8.0, selected=True)]}]
        out = reaper.run(SEPARATE, tracks=tracks, ext_state={"Stembridge": {"port": port}})
        status = reaper.run(STATUS, ext_state={"Stembridge": {"port": port}})
    [message] = out["messages"]
    assert "The stembridge daemon is not running, or does not answer" in message["text"]
    assert f"127.0.0.1:{port}" in message["text"] and "stembridge serve" in message["text"]
    assert len(out["tracks"]) == 1 and out["undo"] == []
    assert out["elapsed"] < 15
    [report] = status["messages"]  # one message: the command found, the daemon not answering, edit settings?
    assert report["type"] == 4 and "stembridge command: " in report["text"]
    assert "The stembridge daemon is not running" in report["text"]
    assert reaper.leftovers() == []


@needs_lua
@pytest.mark.parametrize("how", ["click_cancel_when", "close_window_when"])
def test_cancel_stops_the_job_and_adds_nothing(
    tmp_path: Path, daemon: DaemonThread, drums_file: Path, how: str
) -> None:
    reaper = Reaper(tmp_path, daemon)
    tracks = [{"name": "Drums", "selected": True, "items": [item(drums_file, 0.0, 8.0)]}]
    when: dict[str, Any] = {how: "render"}
    out = reaper.run(
        GENERATE, tracks=tracks, time_selection=[0.0, 64.0], inputs=[["pad", "", "32", "8", "n"]], **when
    )  # fmt: skip
    if how == "click_cancel_when":
        assert out["gfx"]["clicked"] and "cancelling..." in out["drawn"] and out["gfx"]["quits"] == 1
    else:
        assert out["gfx"]["closed_by_user"]
    assert out["messages"] == [] and len(out["tracks"]) == 1 and out["undo"] == []
    job, *cancels = [e["cmd"] for e in out["exec"]]
    assert cancels, "no cancel request was sent"
    rid = Path(job.split(" ", 1)[1]).stem  # the script is named after the request id
    with Client(Endpoint("127.0.0.1", daemon.port)) as client:
        assert client.status(rid).state == "cancelled"
    renders = daemon.daemon.settings.out_dir
    assert not list(renders.rglob("*__pad__*")), "a cancelled job left files"


# --- MIDI: a stand-in daemon whose `done` replies carry .mid files -------------------------------------------------


class RecordedDaemon:
    """Answers job requests on a loopback UDP port as the daemon does (`accepted`, `progress`, `done`), with the
    paths the test gives for each job, in order; records every request it gets (address and arguments)."""

    def __init__(self, replies: list[list[str]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, list[Any]]] = []
        self.done: dict[str, list[str]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            for address, args in decode_packet(data):
                self.answer(address, args)

    def answer(self, address: str, args: list[Any]) -> None:
        reply_port, rid = int(args[0]), str(args[1])
        if address.rsplit("/", 1)[-1] in ("separate", "generate", "vary"):
            if rid not in self.done:  # a resend gets the same job
                self.requests.append((address, args))
                self.done[rid] = self.replies.pop(0)
            answers = [
                ("accepted", [rid, 0]),
                ("progress", [rid, 1.0, "done"]),
                ("done", [rid, *self.done[rid]]),
            ]
        elif address.endswith("/status") and str(args[2]) in self.done:
            answers = [("state", [rid, "done", 1.0, *self.done[str(args[2])]])]
        else:
            answers = [("error", [rid, "unsupported", f"the recorded daemon does not answer {address}"])]
        for name, reply in answers:
            self.sock.sendto(encode_message(f"/stembridge/{name}", reply), ("127.0.0.1", reply_port))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture()
def recorded() -> Iterator[Any]:
    daemons: list[RecordedDaemon] = []

    def start(*replies: list[str]) -> RecordedDaemon:
        daemons.append(RecordedDaemon(list(replies)))
        return daemons[-1]

    yield start
    for d in daemons:
        d.close()


def option_values(request: tuple[str, list[Any]], key: str) -> list[Any]:
    _, args = request
    return [args[i + 1] for i in range(3, len(args) - 1) if args[i] == key]


def midi_takes(track: dict[str, Any]) -> list[tuple[str, str, float, float, str]]:
    """(name, file, startoffs, playrate, how its source was made) of each take of a track's only item."""
    [midi_item] = track["items"]
    return [(t["name"], t["file"], t["startoffs"], t["playrate"], t["source"]) for t in midi_item["takes"]]


@needs_lua
def test_separate_with_midi_puts_each_stems_midi_on_a_track_right_under_it(
    tmp_path: Path, recorded: Any, song_file: Path
) -> None:
    out_dir = tmp_path / "renders"
    wavs = [
        str(write_audio(out_dir / f"My_Song__{s}.wav", np.zeros((2, SR), np.float32)))
        for s in ("drums", "bass")
    ]
    mids = [  # drums' name was taken: the daemon wrote -2 (the daemon lists them in the audio's order)
        str(write_mid(out_dir / "My_Song__drums-2.mid", [(36, 0.0, 0.5, 100)], length_beats=16.0)),
        str(write_mid(out_dir / "My_Song__bass.mid", [(40, 0.0, 1.0, 100)], length_beats=16.0)),
    ]
    daemon = recorded(wavs + mids)
    reaper = Reaper(tmp_path, None)
    trimmed = item(song_file, 2.0, 5.0, startoffs=1.5, playrate=1.25, selected=True)  # plays most of the file
    ext = {"Stembridge": {"port": daemon.port, "midi": "1", "stems": "drums,bass"}}
    out = reaper.run(
        SEPARATE, tracks=[{"name": "Song", "items": [trimmed]}, {"name": "After"}], ext_state=ext
    )

    assert out["messages"] == []
    [request] = daemon.requests
    assert request[0] == "/stembridge/separate" and option_values(request, "midi") == [1]
    assert "--midi" in command_line(out["exec"][0])
    names = [(t["name"], t["folderdepth"]) for t in out["tracks"]]
    assert names == [
        ("Song", 0), ("My Song - stems", 1), ("drums", 0), ("drums MIDI", 0), ("bass", 0), ("bass MIDI", -1),
        ("After", 0),
    ]  # fmt: skip
    for audio, midi, wav, mid in ((2, 3, wavs[0], mids[0]), (4, 5, wavs[1], mids[1])):
        [stem_item] = out["tracks"][audio]["items"]
        [midi_item] = out["tracks"][midi]["items"]
        assert stem_item["takes"][0]["file"] == wav
        # at the stem's place; the MIDI starts where the stem does in its file, in beats: 1.5 s at rate 1.25
        assert (midi_item["position"], midi_item["length"]) == (2.0, 5.0)
        name = out["tracks"][midi]["name"]
        assert midi_takes(out["tracks"][midi]) == [(name, mid, pytest.approx(1.2), 1, "file_ex_no_import")]


@needs_lua
def test_generate_with_midi_ticked_puts_the_takes_midi_on_a_track_under_the_new_one(
    tmp_path: Path, recorded: Any
) -> None:
    out_dir = tmp_path / "renders"
    wavs = [
        str(write_audio(out_dir / f"bass__90bpm__2bars__v{k}.wav", np.zeros((2, SR), np.float32)))
        for k in (1, 2)
    ]
    mids = [str(write_mid(Path(w).with_suffix(".mid"), [(40 + k, 0.0, 1.0, 90)], bpm=90.0, signature=(3, 4),
                          length_beats=6.0)) for k, w in enumerate(wavs)]  # fmt: skip
    daemon = recorded(wavs + mids)
    reaper = Reaper(tmp_path, None)
    start, bar = 4.0, 2.0  # 3/4 at 90 bpm
    out = reaper.run(
        GENERATE, tracks=[{"name": "Drums", "selected": True}, {"name": "Vox"}], tempo=90, timesig=[3, 4],
        time_selection=[start, start + 2 * bar], inputs=[["bass", "", "2", "2", "y"]],
        ext_state={"Stembridge": {"port": daemon.port}},
    )  # fmt: skip

    assert out["messages"] == []
    assert out["inputs"][0]["defaults"].split("\n")[-1] == "n"  # off until ticked
    [request] = daemon.requests
    assert option_values(request, "midi") == [1] and option_values(request, "bars") == [2.0]
    assert [t["name"] for t in out["tracks"]] == ["Drums", "bass", "bass MIDI", "Vox"]
    [audio_item] = out["tracks"][1]["items"]
    [midi_item] = out["tracks"][2]["items"]
    assert (
        (midi_item["position"], midi_item["length"])
        == (audio_item["position"], audio_item["length"])
        == (
            start,
            pytest.approx(2 * bar),
        )
    )
    assert midi_takes(out["tracks"][2]) == [
        ("bass MIDI v1", mids[0], 0, 1, "file_ex_no_import"),
        ("bass MIDI v2", mids[1], 0, 1, "file_ex_no_import"),
    ]
    assert midi_item["active_take"] == 1
    assert out["ext"]["Stembridge/midi"] == "1"  # remembered for the next form, and for Separate
    assert out["undo"] == ["Stembridge: generate bass"]  # the MIDI is in the same undo point


@needs_lua
@pytest.mark.parametrize("dialog", ["classic", "reaimgui"])
def test_vary_with_midi_puts_the_variations_midi_under_the_items_track(
    tmp_path: Path, recorded: Any, drums_file: Path, dialog: str
) -> None:
    out_dir = tmp_path / "renders"
    wavs = [
        str(write_audio(out_dir / f"drums__var__v{k}.wav", np.zeros((2, SR), np.float32))) for k in (1, 2)
    ]
    mids = [
        str(write_mid(Path(w).with_suffix(".MID"), [(36, 0.0, 0.25, 100)], length_beats=8.0)) for w in wavs
    ]
    daemon = recorded(wavs + mids)
    reaper = Reaper(tmp_path, None)
    loop = item(drums_file, 10.0, 4.0, selected=True)
    imgui = {"imgui": {"answers": {"Variations (1-16)": 2, "MIDI": True}}} if dialog == "reaimgui" else {}
    out = reaper.run(
        VARY, tracks=[{"name": "Drums", "items": [loop]}, {"name": "Bass"}], inputs=[["2", "0.5", "y"]],
        ext_state={"Stembridge": {"port": daemon.port, "dialogs": "" if imgui else "classic"}}, **imgui,
    )  # fmt: skip

    assert out["messages"] == []
    [request] = daemon.requests
    assert option_values(request, "midi") == [1]
    assert [t["name"] for t in out["tracks"]] == ["Drums", "drums MIDI", "Bass"]
    [varied] = out["tracks"][0]["items"]
    assert [t["file"] for t in varied["takes"]] == [str(drums_file), *wavs]  # no MIDI among the audio takes
    [midi_item] = out["tracks"][1]["items"]
    assert (midi_item["position"], midi_item["length"]) == (10.0, 4.0)
    assert [t[:2] for t in midi_takes(out["tracks"][1])] == [
        ("drums MIDI v1", mids[0]),
        ("drums MIDI v2", mids[1]),
    ]


@needs_lua
def test_without_midi_no_midi_is_asked_for_and_stray_midi_files_are_not_audio(
    tmp_path: Path, recorded: Any, song_file: Path
) -> None:
    """With MIDI off, nothing asks for MIDI; a .mid that comes anyway (the builtin engine's Generate always writes
    them) goes on a MIDI track, never in place of an audio stem."""
    out_dir = tmp_path / "renders"
    wav = str(write_audio(out_dir / "My_Song__drums.wav", np.zeros((2, SR), np.float32)))
    mid = str(write_mid(out_dir / "My_Song__drums.mid", [(36, 0.0, 0.5, 100)], length_beats=4.0))
    daemon = recorded([wav, mid])
    reaper = Reaper(tmp_path, None)
    out = reaper.run(
        SEPARATE, tracks=[{"name": "Song", "items": [item(song_file, 0.0, 8.0, selected=True)]}],
        ext_state={"Stembridge": {"port": daemon.port, "stems": "drums"}},
    )  # fmt: skip
    [request] = daemon.requests
    assert option_values(request, "midi") == [] and "--midi" not in command_line(out["exec"][0])
    assert [t["name"] for t in out["tracks"]] == ["Song", "My Song - stems", "drums", "drums MIDI"]
    assert [t["file"] for t in out["tracks"][2]["items"][0]["takes"]] == [wav]


# --- the ReaPack index ------------------------------------------------------------------------------------------


def header(path: Path) -> dict[str, Any]:
    """The ReaPack metadata header of a script: {tag: value}, a multi-line tag (@provides) as a list of lines."""
    tags: dict[str, Any] = {}
    current = None
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        body = line[2:]
        if body.startswith(" @"):
            name, _, value = body[2:].partition(" ")
            current = name.lower()
            tags[current] = value.strip() if value.strip() else []
        elif current and body.startswith("   ") and isinstance(tags[current], list):
            tags[current].append(body.strip())
        else:
            current = None
    return tags


def test_the_reapack_index_lists_every_script_with_the_headers_version() -> None:
    package = SCRIPTS / SEPARATE
    tags = header(package)
    provides = []
    for entry in tags["provides"]:
        options, _, name = entry.rpartition("] ")
        provides.append((options.lstrip("[") if options else "", name if options else entry))
    root = ET.parse(SCRIPTS / "index.xml").getroot()
    assert root.tag == "index" and root.get("version") == "1"
    [pkg] = root.iter("reapack")
    assert pkg.get("name") == package.name and pkg.get("type") == "script"
    [version] = pkg.iter("version")
    assert version.get("name") == tags["version"]
    sources = {s.get("file") or package.name: s for s in version.iter("source")}
    assert set(sources) == {package.name} | {name for _, name in provides}
    mains = {package.name} | {name for options, name in provides if "main" in options.split()}
    for name, source in sources.items():
        assert (SCRIPTS / name).is_file(), name
        assert (source.get("main") == "main") == (name in mains), name
        assert source.text and source.text.endswith(name.replace(" ", "%20")), source.text
    lua_files = {str(p.relative_to(SCRIPTS)) for p in SCRIPTS.rglob("*.lua")}
    assert lua_files == set(sources)
    for path in SCRIPTS.rglob("*.lua"):  # one package: the other files are provided by it, not indexed
        assert ("noindex" in header(path)) == (path != package), path
