"""Validation: the task's ``validation_step`` over a loader, and the sanity check before training.

A step returns a dict of metrics. Numbers and one-element tensors are batch means, weighted by
the step's optional ``count`` and summed on the device (``Means``); the mean over the whole
set is exact. A metric that is not a mean (F1, AUROC, exact match) can be returned as an object
with ``update``, ``compute`` and ``reset`` that synchronizes itself across processes, such as a
``torchmetrics.Metric``: the step updates it, and the validation's end computes it once and resets it.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trainwright.config import ConfigError

from .ledger import Ledger, Means

if TYPE_CHECKING:
    from .trainer import Trainer


def is_metric(value: Any) -> bool:
    """Whether ``value`` is a metric object (``update``, ``compute``, ``reset``), not a number to average."""
    return all(callable(getattr(value, name, None)) for name in ("update", "compute", "reset"))


class Validation:
    """Runs validation for a trainer, and remembers the metric objects the task returns.

    Args:
        task: the task, whose ``validation_step(model, batch)`` computes each batch's metrics.
        ledger: the trainer's ledger, whose read brings the sums over in one transfer.
    """

    def __init__(self, task: Any, ledger: Ledger) -> None:
        self.task, self.ledger = task, ledger
        self.metric_objects: dict[str, Any] = {}  # name -> the metric object the task returns under it

    @torch.no_grad()
    def run(
        self, model: Any, loader: Any, limit: int | None, on_batch: Callable[..., None] | None = None, prefix: str = ""
    ) -> dict[str, float]:
        """Validate ``model`` on at most ``limit`` batches of ``loader``; return the metrics as ``<prefix><name>``.

        ``on_batch(batch=, batch_idx=, outputs=)`` is called after each batch that counts.
        """
        means, was_training = Means(self.ledger.fabric.device), model.training
        model.eval()
        try:
            for batch_idx, batch in enumerate(loader):
                if limit is not None and batch_idx >= limit:
                    break
                padding = loader.is_padding(batch_idx)
                with self._updates_ignored() if padding else contextlib.nullcontext():
                    outputs = self.task.validation_step(model, batch)
                fresh = self._metric_objects(outputs)
                if padding:  # a shorter shard's copy: run only so that every process makes as many forward passes
                    for metric in fresh:  # first seen on a copy (its shard is empty): it holds only the copy
                        metric.reset()
                    continue
                means.add({k: v for k, v in outputs.items() if not is_metric(v)})
                if on_batch is not None:
                    on_batch(batch=batch, batch_idx=batch_idx, outputs=outputs)
            metrics = means.read(self.ledger, prefix)  # summed over every process
            for name, metric in self.metric_objects.items():  # each synchronizes itself
                metrics[prefix + name] = float(metric.compute())
                metric.reset()
        finally:
            model.train(was_training)
        return metrics

    def _metric_objects(self, outputs: Any) -> list[Any]:
        """Remember the metric objects in ``outputs``; return those not seen before."""
        if not isinstance(outputs, Mapping):
            raise TypeError(f"validation_step must return a dict of metrics, got {type(outputs).__name__}")
        fresh = [v for k, v in outputs.items() if is_metric(v) and self.metric_objects.get(k) is not v]
        self.metric_objects.update({k: v for k, v in outputs.items() if is_metric(v)})
        return fresh

    @contextlib.contextmanager
    def _updates_ignored(self) -> Iterator[None]:
        """While a padding copy runs, the known metric objects ignore their updates."""
        saved = {name: vars(metric).get("update") for name, metric in self.metric_objects.items()}
        for metric in self.metric_objects.values():
            metric.update = _ignore
        try:
            yield
        finally:
            for name, metric in self.metric_objects.items():
                if saved[name] is None:
                    del metric.update  # the class's method again
                else:
                    metric.update = saved[name]  # torchmetrics wraps update per instance


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def sanity_check(trainer: Trainer) -> None:
    """Validate on ``sanity_val_batches`` batches before training, then fire ``on_sanity_check_end``.

    Nothing is logged or counted, and the random state is left as it was, so that training
    draws what it would have drawn. A ``validation_step`` that fails, or a callback that monitors
    a metric validation does not log, fails in seconds, not after an epoch of training.

    Raises:
        ConfigError: ``validation_step`` raised; the message names the error and where it was raised.
    """
    batches, loader = trainer.config.sanity_val_batches, trainer.val_loader
    if loader is None or not batches:
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):  # the loader's iter() draws a seed: training's draws stay the same
        try:
            metrics = trainer.validation.run(trainer.model, loader, limit=batches, prefix="val/")
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            frames = [frame for frame in frames if frame.filename != __file__] or frames
            here = str(Path(__file__).parent)
            where = next((frame for frame in reversed(frames) if frame.filename.startswith(here)), frames[-1])
            raise ConfigError(
                f"validation_step failed in the sanity check before training ({type(error).__name__} at "
                f"{where.filename}:{where.lineno}: {error}); --sanity-val-batches=0 skips the check"
            ) from error
    trainer.fabric.call("on_sanity_check_end", trainer=trainer, fabric=trainer.fabric, metrics=metrics)
