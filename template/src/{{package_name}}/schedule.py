"""The learning-rate schedule: linear warmup, then a cosine decay to ``min_lr`` (or a constant rate).

The rate is a function of the step count alone, so a resumed run follows the schedule of its
own config from where the checkpoint left off.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING

import torch
from trainwright.config import ConfigError

if TYPE_CHECKING:
    from .config import Config


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: Config, num_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The schedule of ``config`` over ``num_steps`` schedule steps; ``None`` when the rate never changes."""
    if config.scheduler == "constant" and config.warmup_steps == 0:
        return None
    length = max(1, num_steps)
    warmup = min(config.warmup_steps, length - 1)  # a short run still reaches its peak rate, at its last step
    if warmup < config.warmup_steps:
        warnings.warn(
            f"warmup_steps={config.warmup_steps} is longer than this run's schedule of {length} steps; the warmup "
            f"is shortened to {warmup} steps, so that the rate reaches lr={config.lr:g}",
            stacklevel=2,
        )
    factor = functools.partial(
        warmup_cosine if config.scheduler == "cosine" else warmup_constant,
        warmup=warmup,
        length=length,
        floor=config.min_lr / config.lr,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_length(config: Config, batches_per_epoch: int | None) -> int:
    """How many times a run of ``config`` steps its schedule: per optimizer step, or per epoch.

    ``batches_per_epoch`` is None for data without a length, whose schedule ``max_steps`` sets.

    Raises:
        ConfigError: the data has no length and ``max_steps`` is not set.
    """
    epochs = config.schedule_epochs or config.max_epochs
    if config.scheduler_interval == "epoch":
        return epochs
    if batches_per_epoch is None:
        if config.max_steps is None:
            raise ConfigError("the training data has no length: set max_steps, which also sets the schedule's")
        return config.max_steps
    length = epochs * math.ceil(batches_per_epoch / config.grad_accum_steps)
    return length if config.max_steps is None else min(length, config.max_steps)


def warmup_cosine(step: int, warmup: int, length: int, floor: float) -> float:
    """The factor on the peak rate ``step`` steps in: up linearly over ``warmup`` steps, then down to ``floor``
    along a cosine that ends at step ``length``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(step - warmup, length - warmup) / max(1, length - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, warmup: int, length: int, floor: float) -> float:
    """The factor on the peak rate: up linearly over ``warmup`` steps, then 1."""
    return (step + 1) / (warmup + 1) if step < warmup else 1.0
