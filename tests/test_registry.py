import subprocess
import sys

import pytest

from bridge.engines.base import ENGINES, Progress, available_engines, load_engine, resolve_engine_name
from bridge.errors import Cancelled, EngineUnavailable, UnknownEngine, UnsupportedOperation


def test_auto_resolves_to_an_available_engine() -> None:
    assert resolve_engine_name("auto", "separate") == "builtin"
    assert load_engine("auto", "generate").name == "builtin"


def test_unknown_engine_lists_choices() -> None:
    with pytest.raises(UnknownEngine, match="unknown engine 'nope'; choose one of: auto, .*builtin"):
        load_engine("nope", "separate")


def test_unimportable_engine_is_unavailable_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "ghost", "bridge.engines.does_not_exist:Ghost")
    with pytest.raises(EngineUnavailable, match=r"pip install 'stembridge\[models\]'"):
        load_engine("ghost", "separate")
    assert available_engines()["ghost"] is not None
    assert available_engines()["builtin"] is None


def test_capability_checked() -> None:
    eng = load_engine("builtin", "separate")
    assert {"separate", "generate", "vary"} <= eng.capabilities
    with pytest.raises(UnsupportedOperation):
        load_engine("builtin", "transcribe")


def test_progress_maps_subranges_and_cancel_propagates() -> None:
    seen: list[tuple[float, str]] = []

    def cb(f: float, s: str) -> None:
        seen.append((f, s))
        if s == "stop":
            raise Cancelled()

    p = Progress(cb).sub(0.5, 1.0).sub(0.0, 0.5)
    p(1.0, "x")
    p(2.0, "clamped")
    assert seen == [(0.75, "x"), (0.75, "clamped")]
    with pytest.raises(Cancelled):
        p(0.5, "stop")


def test_cli_help_never_imports_heavy_modules() -> None:
    code = (
        "import sys; import bridge.cli as c; c.build_parser().format_help();"
        "heavy = [m for m in ('torch', 'numpy', 'scipy', 'pedalboard', 'demucs', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
