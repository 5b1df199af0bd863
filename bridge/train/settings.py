"""One training run's settings (``stembridge train``'s options) and its result (what ``--json`` prints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridge.audio.timing import TimeSignature
from bridge.engines.base import model_is_path
from bridge.errors import InvalidArgument

DEFAULT_BASE = "musicgen-melody"
AVERAGED = 10  # the first and last train losses reported are means over this many steps


@dataclass(frozen=True)
class TrainSettings:
    """One training run (``stembridge train``'s options)."""

    data: tuple[Path, ...]
    stem: str
    name: str
    models_dir: Path
    base: str = DEFAULT_BASE
    steps: int = 500
    lora: bool = True
    rank: int = 16
    learning_rate: float | None = None  # default: 3e-4 with LoRA, 2e-5 for the full decoder
    warmup: int | None = None  # default: 5 % of the steps
    batch_size: int = 4
    accumulate: int = 1
    clip: float = 1.0
    weight_decay: float = 0.01
    seed: int = 0
    bars: int | None = None  # default: the most whole bars (up to 8) one window of the engine holds
    tags: str = ""
    time_signature: str = "4/4"
    val_songs: int = 1
    val_every: int = 50
    checkpoint_every: int = 100
    sample_every: int = 100
    samples: int = 2
    device: str | None = None
    precision: str | None = None
    resume: bool = False
    allow_download: bool = False
    command: str = ""

    def check(self) -> None:
        positive = {
            "steps": self.steps,
            "rank": self.rank,
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise InvalidArgument(f"--{name.replace('_', '-')} must be 1 or more, got {value}")
        for name, value in {
            "val_every": self.val_every,
            "checkpoint_every": self.checkpoint_every,
            "sample_every": self.sample_every,
            "samples": self.samples,
        }.items():
            if int(value) < 0:
                raise InvalidArgument(f"--{name.replace('_', '-')} must be 0 (never) or more, got {value}")
        if self.bars is not None and not 1 <= self.bars <= 64:
            raise InvalidArgument(f"--bars must be between 1 and 64, got {self.bars}")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise InvalidArgument(f"--lr must be between 0 and 1, got {self.learning_rate}")
        if not self.name.strip() or model_is_path(self.name) or self.name.startswith("."):
            raise InvalidArgument(f"--name must be a plain folder name such as my-bass, got {self.name!r}")
        TimeSignature.parse(self.time_signature)

    @property
    def peak_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (3e-4 if self.lora else 2e-5)

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else max(1, self.steps // 20)

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it (those that change weights)."""
        keys = (
            "base",
            "stem",
            "steps",
            "lora",
            "rank",
            "batch_size",
            "accumulate",
            "clip",
            "weight_decay",
            "seed",
            "bars",
            "tags",
            "time_signature",
            "val_songs",
        )
        out = {k: getattr(self, k) for k in keys}
        out.update(
            data=[str(Path(p).expanduser().resolve()) for p in self.data],
            lr=self.peak_rate,
            warmup=self.warmup_steps,
        )
        return out


@dataclass
class TrainResult:
    """What ``--json`` prints."""

    path: Path
    steps: int
    train_loss_first: float
    train_loss_last: float
    val_loss_last: float | None
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out
