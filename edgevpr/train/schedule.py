"""The MixVPR learning-rate schedule: linear warm-up over the first steps, then a step
decay by ``gamma`` at given epochs (SGD 0.05 -> x0.3 at epochs 5, 10, 15, 25, 45)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgevpr.core.errors import EdgeVPRError


@dataclass(frozen=True)
class WarmupStepSchedule:
    base_lr: float = 0.05
    warmup_steps: int = 650
    milestones: tuple[int, ...] = field(default=(5, 10, 15, 25, 45))
    gamma: float = 0.3

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or self.warmup_steps < 0 or not 0 < self.gamma <= 1:
            raise EdgeVPRError("learning rate must be > 0, warm-up >= 0 and gamma in (0, 1]")

    def lr(self, step: int, epoch: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based, global) in epoch ``epoch``."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        decays = sum(1 for m in self.milestones if epoch >= m)
        return self.base_lr * warm * self.gamma**decays

    def apply(self, optimizer: torch.optim.Optimizer, step: int, epoch: int) -> float:
        lr = self.lr(step, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

