"""Schedules over time: the MTO lambdas' factor per epoch and the learning rate per step."""

from __future__ import annotations

import math

from mto.config.errors import ConfigError


def lambda_factor(schedule: str, epoch: int, epochs: int, warmup_epochs: int = 0) -> float:
    """Multiplier of every MTO lambda at ``epoch`` (0-based, fractional allowed) of ``epochs``.

    ``constant`` = 1; ``linear_warmup`` rises linearly to 1 over ``warmup_epochs``;
    ``cosine_decay`` falls from 1 to 0 along half a cosine over the run.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "linear_warmup":
        return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)
    if schedule == "cosine_decay":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    raise ConfigError("mto.lambda_schedule", schedule, "constant, linear_warmup or cosine_decay")


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak`` then half-cosine decay to ``floor`` (the MAE recipe), per step."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
