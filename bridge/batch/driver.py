"""The batch loop: plan, skip what is done, dispatch to an executor, publish each item all or none, record it.

The driver alone writes into the output folder. For each item that comes back it encodes nothing again: it
stages the worker's files beside their targets (``<out>/<item folder>/<name>``), sets aside the earlier outputs of
the same item that they replace (:mod:`bridge.batch.supersede`), reserves their names, records the plan in the
state file, publishes them in one pass, records the item done and only then removes what it set aside
(:class:`bridge.audio.writer.Publisher`, :class:`bridge.batch.state.State`); a publish that fails puts the
earlier outputs back. An item that fails (a bad file, a
worker that died too often, a folder that cannot be written) is recorded and reported; the rest goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.audio.writer import Publisher
from bridge.batch.executor import Executor, StartHook
from bridge.batch.items import Item
from bridge.batch.report import BatchBar, Summary
from bridge.batch.state import State, item_key
from bridge.batch.supersede import Aside, discard, restore, set_aside, written
from bridge.batch.work import File, Work
from bridge.errors import StembridgeError

log = logging.getLogger(__name__)

MIB = 1 << 20
# What a worker holds besides its model: a song of a few minutes read, separated and encoded.
WORK_BYTES = 768 * MIB


@dataclass(frozen=True)
class EngineChoice:
    """How the batch runs its items: the default engine and model, and where models come from."""

    engine: str = "auto"
    model: str | None = None
    models_dir: Path | None = None
    allow_download: bool = False


def resolve_engines(items: Sequence[Item], choice: EngineChoice) -> list[str]:
    """The engine each item runs on (``auto`` resolved once here, so every worker runs the same one).

    Raises:
        StembridgeError: an unknown engine, a model no engine has, a model for another task.
    """
    from bridge.engines.base import resolve_engine_name

    known: dict[tuple[str, str, str | None], str] = {}
    names = []
    for item in items:
        engine = str(item.options.get("engine") or choice.engine)
        model = item.options.get("model") or choice.model
        key = (engine, item.task, model)
        if key not in known:
            known[key] = resolve_engine_name(
                engine, item.task, model, choice.models_dir, choice.allow_download
            )
        names.append(known[key])
    return names


def engine_threads(engine: str, threads: int | None, cores: int) -> int:
    """The CPU threads one worker of ``engine`` uses: ``threads`` when set; else one for an engine on numpy
    (the built-in), all the cores for a torch engine (torch's default)."""
    from bridge.engines.base import engine_class

    if threads:
        return max(1, int(threads))
    return cores if engine_class(engine).uses_torch else 1


def model_bytes(engine: str, model: str | None) -> int:
    """The size of ``model``'s weights (or the engine's default model's) from the catalogue; 0 when unknown."""
    from bridge.catalog import load_catalog
    from bridge.engines.base import engine_class

    name = model or engine_class(engine).default_model
    sizes = [e.size_mb or 0 for e in load_catalog() if e.name == name]
    return max(sizes, default=0) * MIB


def default_workers(
    engines: Sequence[str],
    models: Sequence[str | None],
    threads: int | None,
    cores: int | None = None,
    available: int | None = None,
) -> int:
    """How many local workers to run: the cores divided by each engine's threads, and no more than the memory
    available holds (each worker keeps its model, about twice its weights, plus :data:`WORK_BYTES`)."""
    from bridge.memory import available_bytes

    cores = cores or os.cpu_count() or 1
    per_thread = max((engine_threads(e, threads, cores) for e in set(engines)), default=1)
    workers = max(1, cores // per_thread)
    memory = available if available is not None else available_bytes()
    if memory is not None:
        each = WORK_BYTES + 2 * max(
            (model_bytes(e, m) for e, m in set(zip(engines, models, strict=True))), default=0
        )
        workers = min(workers, max(1, memory // each))
    return workers


def run_batch(
    items: Sequence[Item],
    engines: Sequence[str],
    out: Path,
    executor: Executor,
    *,
    progress: bool = False,
    on_start: StartHook | None = None,
) -> Summary:
    """Run every item not done yet on ``executor`` and publish its files under ``out``.

    Args:
        engines: the engine of each item (:func:`resolve_engines`).
        progress: draw a progress bar on stderr (when it is a terminal).
        on_start: told each item as it is handed to a worker.

    Returns:
        What was done, skipped and failed, and every finished item's outputs.

    Raises:
        InvalidArgument: the output folder cannot hold the state file.
    """
    out = Path(out).expanduser().resolve()
    summary = Summary()
    with State(out) as state:
        state.recover({out, *(out / item.folder for item in items)})
        keys = [item_key(item, engine) for item, engine in zip(items, engines, strict=True)]
        todo = []
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            outputs = state.finished(key)
            if outputs is None:
                todo.append(Work(index, item, engines[index]))
                continue
            summary.skipped += 1
            summary.outputs += [_output(item, o["stem"], out / o["path"]) for o in outputs]
        bar = BatchBar(len(items), summary.skipped, enabled=progress)
        try:
            for outcome in executor.run(todo, on_start):
                item, key = items[outcome.index], keys[outcome.index]
                error = outcome.error
                if error is None:
                    try:
                        published, replaced = _publish(state, key, item, out / item.folder, outcome.files)
                    except StembridgeError as exc:
                        error = exc.message
                    except OSError as exc:
                        error = f"cannot replace the earlier outputs of {item.label}: {exc}"
                    else:
                        outputs = [_recorded(out, stem, path) for stem, path in published]
                        if key is not None:
                            state.finish(key, item, outputs, replaced)
                        discard(replaced)
                        summary.done += 1
                        summary.outputs += [_output(item, stem, path) for stem, path in published]
                if error is not None:
                    state.fail(key, item, error)
                    summary.failed.append({"input": item.label, "error": error})
                bar.advance(failed=error is not None)
        finally:
            bar.close()
    return summary


def _recorded(out: Path, stem: str, path: Path) -> dict[str, Any]:
    """An output as the state file records it: relative to ``out``, with what proves a file there still the one
    written (:func:`bridge.batch.state.written`)."""
    return {"stem": stem, "path": path.relative_to(out).as_posix(), **written(path)}


def _output(item: Item, stem: str, path: Path) -> dict[str, str]:
    return {"input": item.label, "stem": stem, "path": str(path)}


def _publish(
    state: State, key: str | None, item: Item, folder: Path, files: Sequence[File]
) -> tuple[list[tuple[str, Path]], list[Aside]]:
    """Publish an item's files into ``folder``, all or none, the plan recorded first; the earlier outputs of the
    item that they replace are set aside first (put back when publishing fails). Returns the files published,
    ``[(stem, path)]``, and what was set aside (for the caller to remove once the item is recorded)."""
    with Publisher() as publisher:
        for f in files:
            publisher.add_file(folder / f.name, f.data, companion_of=f.companion_of)
        replaced = _with_leads(state.replaceable(item, key, [folder / f.name for f in files]), folder, files)
        if replaced and key is not None:
            state.planned(key, [], replaced)  # recorded before anything moves
        set_aside(replaced)
        try:
            planned = publisher.reserve()
            if key is not None:
                state.planned(key, planned, replaced)
            paths = publisher.publish()
        except BaseException:
            restore(replaced)
            raise
    return [(f.stem, path) for f, path in zip(files, paths, strict=True)], replaced


def _with_leads(replaced: list[Aside], folder: Path, files: Sequence[File]) -> list[Aside]:
    """``replaced`` without the earlier companions (a ``.mid``) whose audio file is not replaced: the new one
    follows its audio file to another name (``-2``), so the earlier one still belongs to the file it sits by."""
    moving = {a.path for a in replaced}
    stays = {
        folder / f.name
        for f in files
        if f.companion_of is not None and folder / files[f.companion_of].name not in moving
    }
    return [a for a in replaced if a.path not in stays]


def worker_settings(settings: Any, threads: int) -> dict[str, Any]:
    """The engine options of each worker: the settings', with ``threads`` per worker."""
    return {**settings.engine_options(), "threads": threads}
