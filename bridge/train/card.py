"""The model card of a trained model (``card.json`` beside its weights) and the list of trained models.

The card says what the model is and how it was made: the base model, the stem, the data (songs, segments,
tempo), the training (mode, steps, batch, learning rate), the losses, the samples and the command.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD = "card.json"


def write(folder: Path, card: dict[str, Any]) -> Path:
    """Write ``card`` as ``folder/card.json`` (a temporary file, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(card, f, indent=2)
            f.write("\n")
        os.replace(tmp, folder / CARD)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / CARD


def read(folder: Path) -> dict[str, Any] | None:
    """The card in ``folder``, or ``None`` when there is none (or it is not a JSON object)."""
    path = folder / CARD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class TrainedModel:
    """A trained model in the models folder, as ``stembridge models`` lists it."""

    name: str
    path: Path
    stem: str
    base: str
    steps: int
    val_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "stem": self.stem,
            "base": self.base,
            "steps": self.steps,
            "val_loss_last": self.val_loss,
        }


def trained_models(models_dir: Path | None) -> list[TrainedModel]:
    """The finished trained models in ``models_dir``: folders with a card and weights the loader reads."""
    from bridge.engines.musicgen.loading import is_transformers_dir

    if models_dir is None or not Path(models_dir).expanduser().is_dir():
        return []
    found = []
    for folder in sorted(Path(models_dir).expanduser().iterdir()):
        card = read(folder) if folder.is_dir() and not folder.name.startswith(".") else None
        if card is None or not is_transformers_dir(folder):
            continue
        val = card.get("val_loss_last")
        found.append(
            TrainedModel(
                folder.name,
                folder,
                str(card.get("stem", "")),
                str(card.get("base", "")),
                int(card.get("steps", 0)),
                None if val is None else float(val),
            )
        )
    return found
