"""Checks on what the task gives the trainer, so that a mistake in ``task.py`` is named where it happens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from trainwright.config import ConfigError


@contextlib.contextmanager
def task_mistakes(what: str) -> Iterator[None]:
    """Turn a ``ValueError`` or ``FileNotFoundError`` of the task's into a ``ConfigError``: one line, exit 2."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"the task could not build {what}: {error}") from error


def check_training_outputs(outputs: Any) -> None:
    """What ``training_step`` returned is a one-element loss, or a dict of one and one-element values to log.

    Raises:
        TypeError: naming the entry that is not.
    """
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            'training_step must return a one-element loss tensor, or a dict whose "loss" entry is one, '
            f"not {type(loss).__name__}{list(loss.shape) if isinstance(loss, torch.Tensor) else ''}"
        )
    for name, value in outputs.items() if isinstance(outputs, Mapping) else ():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise TypeError(
                f'training_step returned {name!r} of shape {list(value.shape)}: every entry besides "loss" is '
                "logged, so it must be one number (a mean, say); return the loss and the values to log, not the "
                "model's whole output"
            )
