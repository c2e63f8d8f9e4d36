"""WarmupPolyLR, as detectron2's DeepLab project defines it (linear warmup, then poly decay)."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_poly_factor(
    it: int,
    max_iter: int,
    warmup_iters: int = 1000,
    warmup_factor: float = 0.001,
    power: float = 0.9,
    constant_ending: float = 0.0,
) -> float:
    """LR multiplier at iteration ``it`` (0-based, the iteration about to run)."""
    if warmup_iters > 0 and it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    poly = math.pow(max(0.0, 1.0 - it / max_iter), power)
    if constant_ending > 0 and warm == 1.0 and poly < constant_ending:
        return constant_ending
    return warm * poly


class WarmupPolyLR(LRScheduler):
    """Step once per iteration; state is only ``last_epoch`` plus the constants, so resume is exact."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        power: float = 0.9,
        constant_ending: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if max_iter <= 0:
            raise ValueError(f"solver.max_iter must be positive, got {max_iter}")
        self.max_iter = max_iter
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = warmup_poly_factor(
            self.last_epoch,
            self.max_iter,
            self.warmup_iters,
            self.warmup_factor,
            self.power,
            self.constant_ending,
        )
        return [base_lr * f for base_lr in self.base_lrs]
