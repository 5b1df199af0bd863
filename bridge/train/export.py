"""The result of a run as a model folder the loader reads: merged weights, processor files and the card.

The weights are written with transformers' ``save_pretrained`` (adapters merged into the decoder first), the
tokenizer and feature-extractor files are copied from the base model's folder, and everything is staged in a
temporary folder beside the target and moved in file by file, ``config.json`` last: the folder only looks
like a model (:func:`bridge.engines.musicgen.loading.is_transformers_dir`) once it is one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bridge.engines.musicgen.loading import WEIGHT_FILES, quiet_transformers
from bridge.train import card as cards

_NOT_COPIED = frozenset({"config.json", "generation_config.json", cards.CARD, *WEIGHT_FILES})


def merged(model: Any, peft_model: Any) -> Any:
    """``model`` with its LoRA adapters merged into the weights (``peft_model`` ``None``: as it is).

    peft's merge loops under a tqdm bar (disabled), and tqdm starts a monitor thread for any bar that is
    created; its documented switch ``tqdm.monitor_interval = 0`` keeps that thread from starting here."""
    if peft_model is None:
        return model
    from tqdm import tqdm

    interval = tqdm.monitor_interval
    tqdm.monitor_interval = 0
    try:
        return peft_model.merge_and_unload()
    finally:
        tqdm.monitor_interval = interval


def export(model: Any, base_folder: Path, target: Path, card: dict[str, Any]) -> Path:
    """Write ``model`` (merged) into ``target`` with the base's processor files and ``card``; returns
    ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    try:
        with quiet_transformers():  # no progress bar of its own (and no monitor thread left behind)
            model.save_pretrained(staging)
        for path in sorted(base_folder.iterdir()):
            if (
                path.is_file()
                and path.name not in _NOT_COPIED
                and not path.name.endswith((".bin", ".safetensors"))
            ):
                shutil.copy2(path, staging / path.name)
        cards.write(staging, card)
        names = sorted(p.name for p in staging.iterdir())
        for name in sorted(names, key=lambda n: n == "config.json"):
            os.replace(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
