"""The training state on disk: written atomically every N steps and at the end, read back by ``--resume``.

A checkpoint holds what a straight run would have in memory after its step: the trained weights (the
adapters, or the decoder), AdamW's state, the losses so far, the samples written, and the run's settings;
the learning rate is a function of the step and each step's randomness is seeded by the step
(:mod:`.loop`), so nothing else is needed to continue to the same weights.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bridge.errors import InvalidArgument

KEEP = 2  # the newest checkpoints kept; older ones are removed once a newer one is on disk
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
    """Write ``state`` as ``folder/step-N.pt`` (a temporary file, then a rename) and drop older ones."""
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
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for old in _checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return target


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    found = _checkpoints(folder)
    return found[-1] if found else None


def load(path: Path, settings: dict[str, Any]) -> State:
    """The state in ``path``, checked against this run's ``settings``.

    Raises:
        InvalidArgument: the checkpoint was made with other settings (a resume must repeat the command).
    """
    data = torch.load(path, map_location="cpu", weights_only=True)
    saved = data["settings"]
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        what = ", ".join(f"{k} ({saved.get(k)!r} then, {settings.get(k)!r} now)" for k in changed)
        raise InvalidArgument(
            f"the checkpoint {path} was made with other settings: {what}; resume with the same options, or "
            "train under another --name"
        )
    return State(
        step=int(data["step"]),
        weights=data["weights"],
        optimizer=data["optimizer"],
        train_losses=[float(x) for x in data["train_losses"]],
        val_losses=[(int(s), float(v)) for s, v in data["val_losses"]],
        samples=[str(s) for s in data["samples"]],
        settings=saved,
    )
