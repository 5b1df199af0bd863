"""The model catalogue (models/catalog.toml): which models exist, for which engine, and whether they can run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bridge.engines.base import available_engines, engine_class
from bridge.errors import ConfigError, InvalidArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ModelEntry:
    name: str
    engine: str
    tasks: tuple[str, ...]
    description: str = ""
    stems: tuple[str, ...] = ()
    sample_rate: int | None = None
    size_mb: int | None = None
    source: str = ""


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    available: bool
    reason: str = ""
    engine_missing: bool = False

    @property
    def short_reason(self) -> str:
        """One clause for listings (and the daemon's ``models`` reply, one UDP packet); ``reason`` has every
        place looked."""
        if not self.reason:
            return ""
        if self.engine_missing:
            return f"the {self.entry.engine} engine is not installed"
        if f"models pull {self.entry.name}" in self.reason:
            return f"no weights here; fetch them: stembridge models pull {self.entry.name}"
        return self.reason


def _catalog_text() -> str:
    # Installed wheels carry the catalogue as bridge/catalog.toml; a source checkout reads models/catalog.toml.
    packaged = resources.files("bridge").joinpath("catalog.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "models" / "catalog.toml"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise ConfigError(
        "the model catalogue (catalog.toml) is missing from this installation; reinstall stembridge"
    )


def load_catalog(text: str | None = None) -> list[ModelEntry]:
    """Parse the catalogue into :class:`ModelEntry` objects."""
    try:
        data = tomllib.loads(text if text is not None else _catalog_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the model catalogue is not valid TOML: {exc}") from exc
    entries = []
    for raw in data.get("model", []):
        entries.append(
            ModelEntry(
                name=str(raw["name"]),
                engine=str(raw["engine"]),
                tasks=tuple(raw.get("tasks", ())),
                description=str(raw.get("description", "")),
                stems=tuple(raw.get("stems", ())),
                sample_rate=raw.get("sample_rate"),
                size_mb=raw.get("size_mb"),
                source=str(raw.get("source", "")),
            )
        )
    return entries


def model_statuses(models_dir: Path | None = None) -> list[ModelStatus]:
    """Each catalogue entry with whether it can run here, and if not, why."""
    engines = available_engines()
    statuses = []
    for entry in load_catalog():
        if entry.engine not in engines:
            statuses.append(
                ModelStatus(
                    entry, False, f"the {entry.engine!r} engine is not part of this stembridge version"
                )
            )
        elif engines[entry.engine] is not None:
            statuses.append(ModelStatus(entry, False, str(engines[entry.engine]), engine_missing=True))
        else:
            reason = engine_class(entry.engine).model_status(entry.name, models_dir)
            statuses.append(ModelStatus(entry, reason is None, reason or ""))
    return statuses


def engine_for_model(name: str) -> str:
    """The engine of the catalogue model ``name``.

    Raises:
        InvalidArgument: ``name`` is not in the catalogue (the message lists what is, and ``--engine``).
    """
    entries = load_catalog()
    for entry in entries:
        if entry.name == name.strip():
            if entry.engine == "builtin":
                raise InvalidArgument(f"{name!r} needs no download: the built-in engine has no weights")
            return entry.engine
    known = ", ".join(e.name for e in entries if e.engine != "builtin")
    raise InvalidArgument(
        f"unknown model {name!r}; known: {known}; for another one name its engine: "
        f"stembridge models pull {name} --engine demucs|musicgen"
    )
