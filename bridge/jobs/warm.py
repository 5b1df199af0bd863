"""Loaded engines kept warm between the daemon's jobs, bounded by memory.

Loading htdemucs or MusicGen takes seconds and gigabytes; a producer who generates five takes in a row should
pay it once. Engines are keyed by what makes them different (engine, model, models folder, device and the
options they were built with); when the loaded weights together pass the budget, the least recently used
engine is dropped (the one that was just used is always kept, even alone over budget).

Only the job worker thread calls :meth:`WarmEngines.get`, so there is no locking.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.engines.base import Engine, engine_class, load_engine, resolve_engine_name

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# When the machine's memory cannot be read: enough for htdemucs and musicgen-small together.
FALLBACK_BUDGET = 4096 * MIB

Key = tuple[str, str, str, tuple[tuple[str, str], ...]]


def memory_budget(settings: Settings) -> int:
    """Bytes the daemon may keep in loaded models: ``model_memory_mb``, or half of the machine's memory."""
    if settings.model_memory_mb:
        return settings.model_memory_mb * MIB
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return FALLBACK_BUDGET


class WarmEngines:
    """An LRU cache of loaded engines bounded by the bytes of their weights (``Engine.model_bytes``)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._engines: OrderedDict[Key, Engine] = OrderedDict()
        self.loads = 0  # how many engines were loaded (for tests and logs)

    def __len__(self) -> int:
        return len(self._engines)

    @property
    def bytes(self) -> int:
        return sum(int(getattr(e, "model_bytes", 0) or 0) for e in self._engines.values())

    def get(
        self,
        name: str,
        capability: str,
        model: str | None,
        models_dir: Path | None,
        options: Mapping[str, Any],
    ) -> Engine:
        """The engine for a job: a warm one built the same way, else a newly loaded one (which is kept).

        Raises what :func:`bridge.engines.base.load_engine` raises (a missing model, a bad option...).
        """
        resolved = resolve_engine_name(
            name, capability, model, models_dir, bool(options.get("allow_download"))
        )
        cls = engine_class(resolved)
        per_job = {k: options.get(k) for k in cls.run_options}
        load = {k: v for k, v in options.items() if k not in cls.run_options and v is not None}
        key: Key = (
            resolved,
            model or cls.default_model,
            str(models_dir or ""),
            tuple(sorted((k, repr(v)) for k, v in load.items())),
        )
        engine = self._engines.get(key)
        if engine is None or capability not in engine.capabilities:
            engine = self._load(key, resolved, capability, model, models_dir, load)
        self._engines.move_to_end(key)
        engine.set_run_options(**{k: v for k, v in per_job.items() if v is not None})
        return engine

    def _load(
        self,
        key: Key,
        resolved: str,
        capability: str,
        model: str | None,
        models_dir: Path | None,
        options: Mapping[str, Any],
    ) -> Engine:
        def load() -> Engine:
            return load_engine(resolved, capability, model=model, models_dir=models_dir, **options)

        try:
            engine = load()
        except (MemoryError, RuntimeError) as exc:  # torch's out-of-memory errors are RuntimeErrors
            if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
                raise
            log.warning(
                "out of memory loading %s; unloading %d warm model(s) and trying again", resolved, len(self)
            )
            self.clear()
            engine = load()
        self.loads += 1
        self._engines[key] = engine
        self._evict()
        log.info("loaded %s (%s), %.0f MiB warm", resolved, engine.model_name, self.bytes / MIB)
        return engine

    def _evict(self) -> None:
        dropped = False
        while len(self._engines) > 1 and self.bytes > self.budget_bytes:
            key, engine = self._engines.popitem(last=False)
            log.info("unloading %s (%s) to stay within the model memory budget", key[0], engine.model_name)
            dropped = True
        if dropped:
            _release_memory()

    def clear(self) -> None:
        self._engines.clear()
        _release_memory()


def _release_memory() -> None:
    """Give unloaded models' memory back now (and the GPU's cached blocks), not at the next collection."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
