"""The task under test: everything the project's tests know about ``task.py``, here the image classifier."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from my_trainer.config import Config
from my_trainer.task import DataConfig, ModelConfig


def small_config(run_dir: Path) -> Config:
    """2 epochs of 8 training batches of 16 images (2 validation batches), loaded by 2 workers, on the CPU in
    fp32, logging every 4 steps, without dropout."""
    return Config(
        run_dir=run_dir,
        max_epochs=2,
        batch_size=16,
        log_every_n_steps=4,
        loggers=["csv"],
        accelerator="cpu",
        precision="32-true",
        data=DataConfig(num_samples=128, num_val_samples=32, image_size=8, num_workers=2),
        model=ModelConfig(channels=8, dropout=0.0),
    )


def with_dropout(config: Config) -> Config:
    """Dropout before the classifier: a random mask in every training batch."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=0.2))


def wider(config: Config) -> Config:
    return dataclasses.replace(config, model=dataclasses.replace(config.model, channels=2 * config.model.channels))


def longer(config: Config) -> Config:
    more = dataclasses.replace(config.data, num_samples=512)
    return dataclasses.replace(config, max_epochs=3, lr=1e-2, data=more, log_every_n_steps=2)


def uneven_validation(config: Config) -> Config:
    """33 validation images: 17 and 16 on 2 processes, 2 and 1 batches of 16."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, num_val_samples=33))
