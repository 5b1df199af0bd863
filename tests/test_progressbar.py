"""The CLI's progress bar: every line fits the terminal, whatever its width, and follows a resize."""

from __future__ import annotations

import io

import pytest

from bridge.progressbar import ProgressBar, render


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [20, 40, 80, 200])
def test_a_line_never_reaches_the_last_column(columns: int) -> None:
    for label in ("separate", "generate", "a-very-long-label-for-a-narrow-terminal"):
        for fraction in (0.0, 0.373, 1.0):
            line = render(label, fraction, "separate", 754.0, columns)
            assert len(line) <= columns - 1, line
            assert f"{fraction * 100:.1f}%" in line


def test_what_each_width_shows() -> None:
    assert render("separate", 0.5, "separate", 75.0, 200) == (
        "separate [" + "#" * 15 + "-" * 15 + "]  50.0%  separate     1:15"
    )
    assert render("separate", 0.5, "separate", 75.0, 80) == render("separate", 0.5, "separate", 75.0, 200)
    assert render("separate", 0.5, "separate", 75.0, 40) == "separate [" + "#" * 8 + "-" * 8 + "]  50.0% 1:15"
    assert render("separate", 0.5, "separate", 75.0, 20) == "[##---]  50.0% 1:15"
    assert render("separate", 0.5, "separate", 75.0, 16) == "[###---]  50.0%"
    assert render("separate", 0.5, "separate", 75.0, 12) == "50.0%"
    assert render("separate", 0.5, "separate", 75.0, 3) == "50"


def test_the_bar_fits_the_terminal_and_follows_a_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = FakeTerminal()
    bar = ProgressBar("separate", stream=stream, delay=0.0)
    monkeypatch.setenv("COLUMNS", "40")
    bar(0.25, "separate")
    monkeypatch.setenv("COLUMNS", "20")
    bar(1.0, "done")
    bar.close()
    first, second = stream.getvalue().split("\r")[1:]
    assert len(first) == 39 and first.rstrip() == render("separate", 0.25, "separate", 0.0, 40)
    assert second == render("separate", 1.0, "done", 0.0, 20).ljust(19) + "\n"
