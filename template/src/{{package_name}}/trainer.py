"""The training loop. It is yours: read it top to bottom, then change what you need.

``Fabric`` (from the versioned ``trainwright`` core) owns devices, precision, processes,
logging, checkpoint files and callback dispatch. This file owns *when* things happen.

Hooks are fired with keyword arguments only; each callback method receives the ones its
signature names and nothing else. Every hook also receives ``trainer`` and ``fabric``.

    hook                        extra keyword arguments
    on_fit_start                model, optimizer
    on_train_epoch_start        epoch
    on_train_batch_start        batch, batch_idx
    on_before_backward          loss
    on_after_backward           model
    on_before_optimizer_step    model, optimizer, global_step (steps taken before this one)
    on_train_batch_end          batch, batch_idx, loss, outputs, global_step
    on_train_epoch_end          epoch, global_step, metrics (this epoch's validation, or {})
    on_validation_epoch_start   epoch
    on_validation_batch_end     batch, batch_idx, loss, outputs
    on_validation_epoch_end     epoch, global_step, metrics
    on_save_checkpoint          checkpoint (the dict about to be written; add entries to it)
    on_load_checkpoint          checkpoint (what the file held beyond the trainer's own entries)
    on_fit_end                  global_step, metrics
    on_exception                exception
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from trainwright import Fabric, Logger, capture_rng_state, restore_rng_state

from .checkpointing import load_for_resume, stateful_callbacks
from .config import Config, plain_config


def _hook_table(doc: str) -> dict[str, tuple[str, ...]]:
    # Every hook this trainer fires, with the keyword arguments it passes: read from the table
    # above, so the two cannot drift apart. Used to check callbacks' signatures before training,
    # and misspelt hook names after it.
    rows = [re.sub(r"\(.*?\)|,", " ", line).split() for line in doc.partition("arguments\n")[2].strip().splitlines()]
    return {hook: ("trainer", "fabric", *names) for hook, *names in rows}


HOOKS = _hook_table(__doc__)


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite and ``config.nonfinite_loss`` is ``"stop"``."""


class Trainer:
    """Fits a model with the settings of ``config``.

    Args:
        config: the run's settings (see ``config.py``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor``.
        score_fn: ``score_fn(outputs, targets) -> {name: scalar tensor}``, extra validation metrics.
        callbacks: objects with any of the hooks above, called in this order.
        loggers: where ``fabric.log`` writes (CSV, TensorBoard, ...).
    """

    def __init__(
        self,
        config: Config,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        score_fn: Callable[[Any, Any], dict[str, torch.Tensor]] | None = None,
        callbacks: Iterable[object] = (),
        loggers: Iterable[Logger] = (),
    ) -> None:
        self.config = config
        self.loss_fn = loss_fn
        self.score_fn = score_fn
        self.fabric = Fabric(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            precision=config.precision,
            callbacks=list(callbacks),
            loggers=list(loggers),
        )
        self.run_dir = Path(config.run_dir)
        # Where training stands. A checkpoint stores exactly these, so a resumed run picks up
        # at the next batch: ``epoch`` is the current epoch, ``batch_idx`` the number of its
        # batches already trained, ``global_step`` the number of optimizer steps taken.
        self.epoch = 0
        self.batch_idx = 0
        self.global_step = 0
        self.num_train_batches = 0  # batches per epoch, after limit_train_batches
        self.metrics: dict[str, float] = {}  # the latest validation metrics
        self.should_stop = False  # any callback may set it; training ends after the current optimizer step
        self._saved_at: tuple[Path, int, int, int] | None = None
        self._rng_to_restore: dict[str, Any] | None = None  # a resumed run's random state, put back in _train_epoch
        self._skip_step = False  # a non-finite loss in this accumulation window: drop its optimizer step

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        scheduler: LRScheduler | None = None,
    ) -> None:
        """Train until ``max_epochs`` or ``max_steps``, validating every ``val_every_n_epochs``.

        With ``config.resume`` set, first restore the checkpoint it names and go on from there.
        """
        fabric, config = self.fabric, self.config
        started = False
        try:
            # A callback that cannot take its arguments fails here, before anything is written.
            fabric.check_hooks(HOOKS)
            self.model, self.optimizer = fabric.setup(model, optimizer)
            self.scheduler = scheduler
            train_loader = fabric.setup_dataloaders(train_loader)
            val_loader = fabric.setup_dataloaders(val_loader) if val_loader is not None else None
            if config.resume:
                self.load_checkpoint(self.resume_path())
            started = True
            self._call("on_fit_start", model=self.model, optimizer=self.optimizer)
            while not self._finished():
                if not self._train_epoch(train_loader):
                    break  # stopped mid-epoch; the checkpoint below resumes at the next batch
                metrics = {}
                if val_loader is not None and (self.epoch + 1) % config.val_every_n_epochs == 0:
                    metrics = self.validate(val_loader)
                finished_epoch = self.epoch
                # Move on before the hook, so that a checkpoint saved there resumes at the next epoch.
                self.epoch, self.batch_idx = self.epoch + 1, 0
                if config.scheduler_interval == "epoch" and self.scheduler is not None:
                    self.scheduler.step()
                self._call("on_train_epoch_end", epoch=finished_epoch, global_step=self.global_step, metrics=metrics)
            self.save_checkpoint(self.run_dir / "checkpoints" / "last.ckpt")
            self._call("on_fit_end", global_step=self.global_step, metrics=self.metrics)
        except BaseException as exception:
            if started:
                # Let callbacks flush what they hold (a profiler trace, a progress bar) before the error surfaces.
                self._call("on_exception", exception=exception)
            raise
        finally:
            fabric.teardown()
        for unused in fabric.unused_hooks(known=HOOKS):
            warnings.warn(str(unused), stacklevel=2)

    def _call(self, hook: str, **kwargs: Any) -> None:
        self.fabric.call(hook, trainer=self, fabric=self.fabric, **kwargs)

    def _finished(self) -> bool:
        max_steps = self.config.max_steps
        steps_done = max_steps is not None and self.global_step >= max_steps
        return steps_done or self.epoch >= self.config.max_epochs or self._stop_agreed()

    def _stop_agreed(self) -> bool:
        # Every process must leave the loop at the same step, or the others wait forever in
        # the next collective: stop as soon as any rank asks to.
        if self.fabric.world_size == 1:
            return self.should_stop
        flag = torch.tensor(float(self.should_stop), device=self.fabric.device)
        self.should_stop = bool(self.fabric.all_reduce(flag, op="max").item())
        return self.should_stop

    def _train_epoch(self, loader: DataLoader) -> bool:
        """Train one epoch, or what is left of it; return whether it ran to its end."""
        config = self.config
        limit = config.limit_train_batches
        self.num_train_batches = len(loader) if limit is None else min(limit, len(loader))
        if self.batch_idx == 0:
            self._restore_rng()  # resumed at an epoch's start: the state was captured just before it
        loader.set_epoch(self.epoch)  # a fresh shuffle per epoch (the same one after a resume)
        self.model.train()
        self._call("on_train_epoch_start", epoch=self.epoch)
        for batch_idx, batch in enumerate(loader):
            if batch_idx >= self.num_train_batches:
                break
            if batch_idx < self.batch_idx:
                # Resumed mid-epoch: this batch was trained before the checkpoint. The random
                # state goes back once the loader stands where it stood when it was captured.
                if batch_idx + 1 == self.batch_idx:
                    self._restore_rng()
                continue
            # Stop only after an optimizer step, so a checkpoint never holds half a window.
            if self._train_batch(batch, batch_idx) and self._finished():
                break
        return self.batch_idx == self.num_train_batches

    def _train_batch(self, batch: Any, batch_idx: int) -> bool:
        """Train on one batch; return whether it ended an accumulation window (and so stepped)."""
        fabric, config = self.fabric, self.config
        model, optimizer = self.model, self.optimizer
        accum = config.grad_accum_steps
        # Step after every ``accum`` batches, and after the epoch's last batch, so that no
        # gradient leaks into the next epoch. The last window may be shorter: divide each
        # loss by its window's real length so the step sees a mean, whatever the length.
        window_start = batch_idx - batch_idx % accum
        window = min(accum, self.num_train_batches - window_start)
        is_step = batch_idx + 1 == window_start + window
        self._call("on_train_batch_start", batch=batch, batch_idx=batch_idx)
        inputs, targets = batch
        # Between steps, skip the gradient all-reduce: only the last backward of a window syncs.
        with fabric.no_backward_sync(model, enabled=not is_step):
            outputs = model(inputs)
            loss = self.loss_fn(outputs, targets)
            if config.nonfinite_loss == "ignore" or self._loss_is_finite(loss, batch_idx):
                self._call("on_before_backward", loss=loss)
                fabric.backward(loss / window if window > 1 else loss)
                self._call("on_after_backward", model=model)
        if is_step:
            if self._skip_step:  # the window saw a non-finite loss: drop its gradients, take no step
                optimizer.zero_grad(set_to_none=True)
                self._skip_step = False
            else:
                self._step(loss)
        self.batch_idx = batch_idx + 1
        self._call(
            "on_train_batch_end",
            batch=batch,
            batch_idx=batch_idx,
            loss=loss.detach(),
            outputs=outputs,
            global_step=self.global_step,
        )
        return is_step

    def _step(self, loss: torch.Tensor) -> None:
        fabric, config, optimizer = self.fabric, self.config, self.optimizer
        self._call("on_before_optimizer_step", model=self.model, optimizer=optimizer, global_step=self.global_step)
        if config.grad_clip_norm is not None:
            fabric.clip_gradients(self.model, optimizer, max_norm=config.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if config.scheduler_interval == "step" and self.scheduler is not None:
            self.scheduler.step()
        if self.global_step % config.log_every_n_steps == 0:
            fabric.log("train/loss", loss.detach(), step=self.global_step)

    def _loss_is_finite(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """Whether the loss is usable; otherwise stop, or mark the window's step to be skipped."""
        value = loss.detach()
        # One read of a scalar loss; it waits for the device, as logging the loss does anyway.
        finite = math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())
        if self.fabric.world_size > 1:  # every process must stop, or skip, together
            flag = torch.tensor(float(finite), device=self.fabric.device)
            finite = bool(self.fabric.all_reduce(flag, op="min").item())
        if finite:
            return True
        where = f"the loss is {value.float().mean().item()} at epoch {self.epoch}, batch {batch_idx}"
        where += f" (toward optimizer step {self.global_step + 1})"
        if self.config.nonfinite_loss == "stop":
            raise NonFiniteLossError(f"{where}; training stops (--nonfinite-loss=skip skips such batches instead)")
        self.fabric.print(f"skipping a batch: {where}")
        self._skip_step = True
        return False

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> dict[str, float]:
        """Run the model over ``loader``; return and log the mean loss and scores as ``val/<name>``."""
        fabric, limit = self.fabric, self.config.limit_val_batches
        self.model.eval()
        self._call("on_validation_epoch_start", epoch=self.epoch)
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=fabric.device)
        for batch_idx, batch in enumerate(loader):
            if limit is not None and batch_idx >= limit:
                break
            inputs, targets = batch
            outputs = self.model(inputs)
            loss = self.loss_fn(outputs, targets)
            scores = {"loss": loss, **(self.score_fn(outputs, targets) if self.score_fn else {})}
            for name, value in scores.items():  # sums weighted by batch size: the last batch may be short
                sums[name] = sums.get(name, 0) + value.detach().float() * len(targets)
            count += len(targets)
            self._call("on_validation_batch_end", batch=batch, batch_idx=batch_idx, loss=loss, outputs=outputs)
        # The mean over every sample on every process.
        total = fabric.all_reduce(count, op="sum")
        self.metrics = {f"val/{name}": (fabric.all_reduce(s, op="sum") / total).item() for name, s in sums.items()}
        fabric.log_dict(self.metrics, step=self.global_step)
        fabric.print(f"epoch {self.epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in self.metrics.items()))
        self._call("on_validation_epoch_end", epoch=self.epoch, global_step=self.global_step, metrics=self.metrics)
        self.model.train()
        return self.metrics

    # -- checkpoints -----------------------------------------------------------------------

    def resume_path(self) -> Path:
        """The checkpoint ``config.resume`` names: ``last`` is ``<run_dir>/checkpoints/last.ckpt``."""
        resume = self.config.resume
        return self.run_dir / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)

    def _state(self) -> dict[str, Any]:
        """What a checkpoint holds; ``Fabric`` turns every object in it into its state dict."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler if self.scheduler is not None else {},
            "trainer": {"epoch": self.epoch, "batch_idx": self.batch_idx, "global_step": self.global_step},
        }

    def save_checkpoint(self, path: str | Path) -> None:
        """Write everything needed to resume at the next batch to ``path``, atomically.

        Call it right after an optimizer step, as ``ModelCheckpoint`` does: gradients that
        are accumulating toward the next step are not part of a checkpoint.
        """
        path = Path(path)
        position = (path, self.epoch, self.batch_idx, self.global_step)
        if position == self._saved_at:
            return  # already written at this very point (say, by the checkpoint callback)
        checkpoint = {
            **self._state(),
            "callbacks": stateful_callbacks(self.fabric.callbacks),
            "rng": capture_rng_state(),
            "config": plain_config(self.config),
        }
        self._call("on_save_checkpoint", checkpoint=checkpoint)
        self.fabric.save(path, checkpoint)
        self._saved_at = position

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what ``save_checkpoint`` wrote; training continues at the batch after it.

        Rows that the loggers wrote after the checkpoint are dropped, because the resumed run
        writes them again. A callback missing from the checkpoint starts afresh, with a notice.

        Raises:
            ConfigError: nothing is at ``path``, or the file is not a checkpoint this trainer
                can resume (unreadable, another format version, or another model's).
        """
        fabric, state = self.fabric, self._state()
        extra = load_for_resume(fabric, Path(path), state, plain_config(self.config))
        position = state["trainer"]
        self.epoch, self.batch_idx, self.global_step = position["epoch"], position["batch_idx"], position["global_step"]
        self._rng_to_restore = extra.pop("rng")  # put back in _train_epoch, where it was captured
        if fabric.is_global_zero:
            for logger in fabric.loggers:  # once nothing can fail: forget what was logged after the checkpoint
                logger.rewind(self.global_step)
        self._call("on_load_checkpoint", checkpoint=extra)

    def _restore_rng(self) -> None:
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
