"""Learning-rate schedules: linear warm-up then cosine decay (stages 1-3), or constant (stage 4).

One multiplier for every parameter group, so the groups keep their ratio (vision 2e-6 : rest 1e-5).
"""

from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, total_steps: int, schedule: str, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based: the first step is 0)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, schedule: str, warmup_ratio: float, min_ratio: float = 0.0):
    warmup = int(round(warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, schedule, warmup, min_ratio)
    )
