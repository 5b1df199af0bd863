"""Engines: the inference cores. They take and return arrays; nothing here reads or writes files."""

from bridge.engines.base import (
    Engine,
    GenerateSpec,
    Progress,
    ProgressCallback,
    available_engines,
    engine_names,
    load_engine,
)

__all__ = [
    "Engine",
    "GenerateSpec",
    "Progress",
    "ProgressCallback",
    "available_engines",
    "engine_names",
    "load_engine",
]
