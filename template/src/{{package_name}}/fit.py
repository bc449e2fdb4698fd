"""Puts a run together from its config: the task, the callbacks, the loggers and the trainer."""

from __future__ import annotations

from collections.abc import Iterable

from trainwright.config import ConfigError

from .callbacks import build_callbacks
from .config import Config
from .loggers import build_loggers
from .task import Task
from .trainer import Trainer


def fit(config: Config, callbacks: Iterable[object] = ()) -> Trainer:
    """Train the task with ``config``; return the trainer, which holds the final metrics.

    ``callbacks`` run after the standard ones that ``config`` enables.

    Raises:
        ConfigError: the device flags do not fit this machine or launch (say, ``devices=2``
            without torchrun), or ``config.resume`` names no checkpoint this run can resume.
    """
    callbacks, loggers = [*build_callbacks(config), *callbacks], build_loggers(config)
    try:
        # First, because under torchrun this joins the other processes.
        trainer = Trainer(config, Task(config), callbacks=callbacks, loggers=loggers)
    except ValueError as error:  # Fabric names the device flag that is wrong
        raise ConfigError(str(error)) from None
    # Each process its own random streams (dropout differs across processes); process 0's are
    # those of a one-process run. The data order depends on the seed alone.
    trainer.fabric.seed_everything(config.seed)
    trainer.fit()
    return trainer
