"""Everything a training run is made of, as plain data: it is stored in every checkpoint's
training state, so ``--resume`` continues the same run and a checkpoint says how it was made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Any

from edgevpr.core.errors import EdgeVPRError
from edgevpr.model.config import ModelConfig, default_preprocess, get_preset
from edgevpr.train.augment import AUGMENTS
from edgevpr.train.losses import LOSSES, MINERS

FLOAT_OPTIONS = (
    "margin", "eps", "sigma", "place_radius", "radius", "val_fraction", "minutes", "lr",
    "momentum", "weight_decay", "gamma",
)  # fmt: skip
# Options a resumed run may change; everything else must stay as the run began.
RESUMABLE = {"out", "epochs", "minutes", "workers", "device", "val_batch", "threads"}


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    # model
    model: str = "mixvpr_resnet50_4096"
    backbone: str | None = None
    aggregator: str | None = None
    aggregator_params: dict[str, float] = field(default_factory=dict)
    size: tuple[int, int] | None = None
    pretrained: bool = True
    frozen_stages: int | None = None
    # loss
    loss: str = "ms"
    margin: float = 0.1
    eps: float = 0.1
    sigma: float = 800.0
    miner: str = "hard"
    # batches and data
    batch_places: int = 120
    images_per_place: int = 4
    augment: str = "randaugment"
    place_radius: float = 25.0
    radius: float = 25.0
    val_fraction: float = 0.1
    val_data: str | None = None
    val_split: str | None = None
    cities: tuple[str, ...] | None = None
    workers: int = 0
    # optimisation: the MixVPR recipe
    epochs: int = 80
    minutes: float | None = None
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_steps: int = 650
    milestones: tuple[int, ...] = (5, 10, 15, 25, 45)
    gamma: float = 0.3
    # run
    seed: int = 0
    amp: bool | None = None
    device: str | None = None
    val_batch: int = 64
    threads: int | None = None

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_run_numbers()
        self.model_config()  # an impossible model is refused before any work starts

    def _check_choices(self) -> None:
        if self.loss not in LOSSES:
            raise EdgeVPRError(f"unknown loss '{self.loss}' (choose from {', '.join(LOSSES)})")
        if self.miner not in MINERS:
            raise EdgeVPRError(f"unknown miner '{self.miner}' (choose from {', '.join(MINERS)})")
        if self.augment not in AUGMENTS:
            raise EdgeVPRError(f"unknown augmentation '{self.augment}' ({', '.join(AUGMENTS)})")

    def _check_run_numbers(self) -> None:
        if self.epochs < 0:
            raise EdgeVPRError("--epochs must be >= 0")
        if self.minutes is not None and self.minutes <= 0:
            raise EdgeVPRError("--minutes must be > 0")
        if (
            self.workers < 0
            or self.val_batch < 1
            or (self.threads is not None and self.threads < 1)
        ):
            raise EdgeVPRError("--workers must be >= 0, --threads and the validation batch >= 1")
        self._check_hyperparameters()

    def _check_hyperparameters(self) -> None:
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise EdgeVPRError("--lr must be > 0; momentum and weight decay >= 0")
        if self.place_radius <= 0 or self.radius <= 0:
            raise EdgeVPRError("radii must be > 0 metres")
        # NaN and infinity slip through every comparison above
        for name in FLOAT_OPTIONS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise EdgeVPRError(f"--{name.replace('_', '-')} must be a finite number")
        if self.batch_places < 2 or self.images_per_place < 2:
            raise EdgeVPRError("--batch-places and --images-per-place must be >= 2")
        if self.margin < 0 or self.eps < 0 or self.sigma <= 0:
            raise EdgeVPRError("--margin and --eps must be >= 0, --sigma > 0")
        if not 0 <= self.val_fraction < 1:
            raise EdgeVPRError("--val-fraction must be in [0, 1)")
        if self.warmup_steps < 0 or min(self.milestones, default=0) < 0:
            raise EdgeVPRError("--warmup-steps and --milestones must be >= 0")
        if not 0 < self.gamma <= 1:
            raise EdgeVPRError("--gamma must be in (0, 1]")

    def model_config(self) -> ModelConfig:
        """The preset, with the backbone, aggregator, size and freezing overrides applied."""
        config = get_preset(self.model)
        height, width = self.size or config.preprocess.size
        if self.backbone and self.backbone != config.backbone:
            config = replace(
                config,
                backbone=self.backbone,
                preprocess=default_preprocess(self.backbone, height, width),
            )
        if self.aggregator and self.aggregator != config.aggregator:
            config = replace(config, aggregator=self.aggregator, aggregator_params={})
        if self.aggregator_params:
            params = {**config.aggregator_params, **self.aggregator_params}
            config = replace(config, aggregator_params=params)
        if self.size:
            config = config.with_size(height, width)
        if self.frozen_stages is not None:
            config = replace(config, frozen_stages=self.frozen_stages)
        return config

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("size", "milestones", "cities"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise EdgeVPRError("training options in checkpoint are not a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise EdgeVPRError(
                f"unknown training options in checkpoint: {', '.join(sorted(unknown))}"
            )
        values = dict(data)
        try:
            for key in ("size", "milestones", "cities"):
                if values.get(key) is not None:
                    values[key] = tuple(values[key])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise EdgeVPRError(f"training options in checkpoint are broken ({exc})") from None
