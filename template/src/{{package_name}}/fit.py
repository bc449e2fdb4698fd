"""Puts a run together from its config: data, model, optimizer, schedule, callbacks, loggers."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from trainwright import CSVLogger, Logger, TensorBoardLogger, seed_everything
from trainwright.config import ConfigError

from .callbacks import build_callbacks
from .config import Config
from .data import make_dataloaders
from .model import build_model, loss_fn, score_fn
from .trainer import Trainer


def fit(config: Config, callbacks: Iterable[object] = ()) -> Trainer:
    """Train the example task with ``config``; return the trainer, which holds the final metrics.

    ``callbacks`` run after the standard ones that ``config`` enables.

    Raises:
        ConfigError: the device flags do not fit this machine or launch (say, ``devices=2``
            without torchrun), or ``config.resume`` names no checkpoint this run can resume.
    """
    seed_everything(config.seed)
    callbacks, loggers = [*build_callbacks(config), *callbacks], build_loggers(config)
    try:
        # First, because under torchrun this joins the other processes.
        trainer = Trainer(config, loss_fn, score_fn, callbacks=callbacks, loggers=loggers)
    except ValueError as error:  # Fabric names the device flag that is wrong
        raise ConfigError(str(error)) from None
    train_loader, val_loader = make_dataloaders(config.data, config.batch_size, config.seed)
    model = build_model(config.model, config.data.num_features, config.data.output_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Each process trains on 1/world_size of the batches, so the schedule is that much shorter.
    batches_per_process = math.ceil(len(train_loader) / trainer.fabric.world_size)
    scheduler = build_scheduler(optimizer, config, batches_per_process)
    trainer.fit(model, optimizer, train_loader, val_loader, scheduler)
    return trainer


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: Config, num_batches: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A cosine decay over ``schedule_epochs`` (default ``max_epochs``), stepped per ``scheduler_interval``.

    The rate is a function of the step count alone, so a resumed run follows the schedule of
    its own config from where the checkpoint left off.
    """
    if config.scheduler == "constant":
        return None
    epochs = config.schedule_epochs or config.max_epochs
    if config.scheduler_interval == "epoch":
        length = epochs
    else:
        batches = num_batches if config.limit_train_batches is None else min(num_batches, config.limit_train_batches)
        length = epochs * math.ceil(batches / config.grad_accum_steps)
        if config.max_steps is not None:
            length = min(length, config.max_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(cosine, length=max(1, length)))


def cosine(step: int, length: int) -> float:
    """The factor on the base learning rate ``step`` steps into a cosine decay of ``length``: from 1 down to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, length) / length))


def build_loggers(config: Config) -> list[Logger]:
    """The loggers named in ``config.loggers``, writing into the run directory."""
    loggers: list[Logger] = []
    if "csv" in config.loggers:
        # A resumed run continues the same file rather than replacing it.
        loggers.append(CSVLogger(config.run_dir, append=config.resume is not None))
    if "tensorboard" in config.loggers:
        loggers.append(TensorBoardLogger(config.run_dir / "tensorboard"))
    return loggers
