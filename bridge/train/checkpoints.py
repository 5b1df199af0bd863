"""The training state on disk: written atomically every N steps and at the end, read back by ``--resume``.

A checkpoint holds what a straight run would have in memory after its step: the trained weights (the
adapters, or the decoder), AdamW's state, the losses so far, the samples written, and the run's settings;
the learning rate is a function of the step and each step's randomness is seeded by the step
(:mod:`.loop`), so nothing else is needed to continue to the same weights.

A checkpoint is durable before the older ones are pruned (the file is synced, renamed into place, and the
folder synced), so a power cut leaves at least one whole checkpoint; a resume skips one that cannot be read
(a torn file) and continues from the one before it.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge.errors import InvalidArgument

KEEP = 2  # the newest checkpoints kept; older ones are removed once a newer one is durable
_NAME = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class State:
    """Where a run stands after ``step`` optimiser steps."""

    step: int = 0
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def save(folder: Path, state: State) -> Path:
    """Write ``state`` durably as ``folder/step-N.pt``, then drop all but the :data:`KEEP` newest.

    The data goes to a temporary file that is synced, renamed over the target and the folder synced, so the
    new checkpoint is whole on disk before an older one is removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step-{state.step:07d}.pt"
    fd, tmp = tempfile.mkstemp(prefix=".step-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(
                {
                    "step": state.step,
                    "weights": state.weights,
                    "optimizer": state.optimizer,
                    "train_losses": state.train_losses,
                    "val_losses": state.val_losses,
                    "samples": state.samples,
                    "settings": state.settings,
                },
                f,
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _sync_folder(folder)
    for old in _checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return target


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX). Windows cannot open a folder, and some file systems cannot sync one
    (EINVAL, ENOTSUP): there the rename is as durable as the system makes it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    found = _checkpoints(folder)
    return found[-1] if found else None


class Unreadable(Exception):
    """A checkpoint file that cannot be read back (torn by a crash, truncated, not a checkpoint)."""


def load(path: Path, settings: dict[str, Any]) -> State:
    """The state in ``path``, checked against this run's ``settings``.

    Raises:
        Unreadable: the file does not unpickle or does not hold a whole checkpoint of its step.
        InvalidArgument: the checkpoint was made with other settings (a resume must repeat the command).
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        saved = data["settings"]
        state = State(
            step=int(data["step"]),
            weights=dict(data["weights"]),
            optimizer=dict(data["optimizer"]),
            train_losses=[float(x) for x in data["train_losses"]],
            val_losses=[(int(s), float(v)) for s, v in data["val_losses"]],
            samples=[str(s) for s in data["samples"]],
            settings=dict(saved),
        )
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise Unreadable(f"{path.name} cannot be read ({type(exc).__name__}: {first})") from exc
    named = _NAME.match(path.name)
    if named is not None and int(named.group(1)) != state.step:
        raise Unreadable(f"{path.name} holds step {state.step}, not the step its name says")
    if any(not isinstance(w, torch.Tensor) for w in state.weights.values()):
        raise Unreadable(f"{path.name} holds weights that are not tensors")
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        what = ", ".join(f"{k} ({saved.get(k)!r} then, {settings.get(k)!r} now)" for k in changed)
        raise InvalidArgument(
            f"the checkpoint {path} was made with other settings: {what}; resume with the same options, or "
            "train under another --name"
        )
    return state


def load_newest(folder: Path, settings: dict[str, Any], warn: Callable[[str], None]) -> tuple[Path, State]:
    """The newest checkpoint in ``folder`` that reads back whole, and its state; each newer one that does not
    (a file torn by a crash) is skipped with a warning through ``warn`` that names it and the one used.

    Raises:
        InvalidArgument: no checkpoint reads back; a checkpoint made with other settings (see :func:`load`).
    """
    skipped: list[str] = []
    for path in reversed(_checkpoints(folder)):
        try:
            state = load(path, settings)
        except Unreadable as exc:
            skipped.append(str(exc))
            continue
        for why in skipped:
            warn(f"the checkpoint {why}; resuming from {path.name} (step {state.step}) instead")
        return path, state
    reasons = "; ".join(skipped) or "there is none"
    raise InvalidArgument(
        f"no checkpoint in {folder} can be read ({reasons}); train under another --name, or remove {folder} "
        "and train again"
    )
