from pathlib import Path

import pytest

from bridge.config import Settings, load_settings
from bridge.errors import ConfigError
from bridge.naming import format_bpm, output_name, safe_name


def test_defaults_point_at_user_folders(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "missing.toml", environ={})
    assert s.out_dir.name == "Stembridge" and s.out_dir.parent.name == "Music"
    assert s.engine == "auto" and s.allow_download is False


def test_file_then_env_then_arguments(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('out_dir = "/tmp/a"\nengine = "builtin"\nallow_download = true\n')
    s = load_settings(cfg, environ={"STEMBRIDGE_OUT": "/tmp/b"})
    assert s.out_dir == Path("/tmp/b")
    assert s.engine == "builtin" and s.allow_download is True
    assert s.with_overrides(out_dir=Path("/tmp/c"), engine=None).out_dir == Path("/tmp/c")
    assert s.with_overrides(engine=None).engine == "builtin"


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("out_dirr = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'out_dirr'"):
        load_settings(cfg, environ={})
    cfg.write_text("out_dir = \n")
    with pytest.raises(ConfigError, match="fix the TOML"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="allow_download"):
        load_settings(tmp_path / "none.toml", environ={"STEMBRIDGE_ALLOW_DOWNLOAD": "maybe"})


def test_settings_is_one_frozen_object() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.engine = "x"  # type: ignore[misc]


def test_output_names() -> None:
    assert (
        output_name("My Song", "bass", bpm=120.0, bars=8, variation=2)
        == "My_Song__bass__120bpm__8bars__v2.wav"
    )
    assert output_name("take", "drums", ext="aif") == "take__drums.aif"
    assert format_bpm(123.456) == "123.46"


@pytest.mark.parametrize("evil", ["../../etc/passwd", "..", "/", "a/b\\c", "\x00\n", "con:stream"])
def test_safe_names_never_traverse(evil: str) -> None:
    name = safe_name(evil)
    assert "/" not in name and "\\" not in name and name not in ("", ".", "..")
    assert not name.startswith(".")


def test_discovery_switch(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("discovery = false\n")
    assert load_settings(cfg, environ={}).discovery is False
    assert load_settings(tmp_path / "none.toml", environ={"STEMBRIDGE_DISCOVERY": "0"}).discovery is False
    assert load_settings(tmp_path / "none.toml", environ={}).discovery is True
