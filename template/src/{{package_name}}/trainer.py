"""The training loop. It is yours: read it top to bottom, then change what you need.

``Fabric`` (the versioned ``trainwright`` core) owns devices, precision, processes, logging, checkpoint
files and callback dispatch; ``task.py`` owns *what* is trained; this file owns *when* things happen.
Beside it: where training stands (``position.py``), the epoch's batches (``batches.py``) and the hot
path's values (``ledger.py``), which stay on the device until a log step reads them in one transfer.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from trainwright import Fabric, Logger

from .batches import TrainBatches
from .checkpointing import checkpoint_of, optimizer_settings, resume_from, stateful_callbacks
from .config import Config
from .hooks import BATCH_HOOKS, HOOKS, implemented
from .ledger import Ledger, NonFiniteLossError
from .position import Position, forwarded
from .preemption import Preempted, PreemptionHandler
from .run_dir import record_run, upload_artifacts
from .schedule import schedule_length
from .strategy import setup_model, strategy_for
from .task import Task
from .task_checks import check_training_outputs, task_mistakes
from .validation import Validation, sanity_check

__all__ = ["NonFiniteLossError", "Trainer"]


class Trainer:
    """Fits ``task`` with the settings of ``config``.

    Args:
        config: the run's settings (see ``config.py``).
        task: builds the model, data and optimizer, and computes each batch's loss (see ``task.py``).
        callbacks: objects with any of the hooks in ``HOOKS``, called in this order.
        loggers: where ``fabric.log`` writes (CSV, TensorBoard, ...).
    """

    # What callbacks read (and may set), kept where it lives.
    epoch = forwarded("position", "epoch")  # the current epoch
    batch_idx = forwarded("position", "batch_idx")  # the number of its batches already trained
    global_step = forwarded("position", "global_step")  # the number of optimizer steps taken
    should_stop = forwarded("ledger", "should_stop")  # any callback may set it; training ends after a step

    def __init__(
        self, config: Config, task: Task, callbacks: Iterable[object] = (), loggers: Iterable[Logger] = ()
    ) -> None:
        self.config, self.task = config, task
        self.fabric = Fabric(  # accelerator, devices, strategy, precision, callbacks, loggers
            config.accelerator, config.devices, strategy_for(config), config.precision, list(callbacks), list(loggers)
        )
        self.run_dir = Path(config.run_dir)
        self.position = Position()  # where training stands: a resumed run picks up at the next batch
        self.ledger = Ledger(self.fabric, config, self.position)  # the hot path's values, read at log steps
        self.validation = Validation(task, self.ledger)  # the task's validation_step over a loader
        self.num_train_batches: int | None = None  # batches per epoch after limit_train_batches; None: unknown
        self.metrics: dict[str, float] = {}  # the latest validation metrics
        self.metadata: dict[str, Any] = {}  # versions, git commit, hardware: in run_dir/metadata.json and checkpoints
        self._saved_at: tuple[Path, Position] | None = None  # where and at which position the last save wrote
        self._rng_to_restore: dict[str, Any] | None = None  # a resumed run's random state, for its first epoch
        self._batch_hooks = frozenset(BATCH_HOOKS)  # those some callback implements (asked at each epoch's start)

    def fit(self) -> None:
        """Train until ``max_epochs`` or ``max_steps``, validating as often as the config says.

        With ``config.resume`` set, first restore the checkpoint it names and go on from there. A few
        validation batches first (``sanity_val_batches``) catch a broken ``validation_step`` at once.
        """
        fabric, config, ledger = self.fabric, self.config, self.ledger
        started, status = False, "success"
        # From here on a signal stops the fit at the next step and saves; one that comes while the
        # data, the model or the checkpoint load (minutes, for a large data set) stops it before training.
        preemption = ledger.preemption = PreemptionHandler(config.preempt_signals).install()
        try:
            # A callback that cannot take its arguments, or two that share a state key, fail here, before any write.
            fabric.check_hooks({hook: ("trainer", "fabric", *names) for hook, names in HOOKS.items()})
            stateful_callbacks(fabric.callbacks)
            train_batches = self._setup()
            if config.resume:
                self.load_checkpoint(self.resume_path())
            sanity_check(self)  # a few validation batches, which log and count nothing
            ledger.agree()  # on a signal that reached some process during the setup
            if ledger.preempted():
                raise Preempted(preemption.received, self.global_step, None)
            started = True
            self.metadata = record_run(self)  # config.toml and metadata.json in the run directory
            self._call("on_fit_start", model=self.model, optimizer=self.optimizer)
            self._train(train_batches)
            self._call("on_fit_end", global_step=self.global_step, metrics=self.metrics)
        except BaseException as exception:
            status = "interrupted" if isinstance(exception, (Preempted, KeyboardInterrupt)) else "failed"
            if started:
                # Let callbacks flush what they hold (a profiler trace, a progress bar) before the error surfaces.
                self._call("on_exception", exception=exception)
            raise
        finally:
            preemption.uninstall()
            if started:
                upload_artifacts(self)
            fabric.teardown(status)  # the loggers mark their runs finished, failed or interrupted
        for unused in fabric.unused_hooks(known=HOOKS):
            warnings.warn(str(unused), stacklevel=2)

    def _setup(self) -> TrainBatches:
        """Build the task's data, model and optimizer on this run's devices; return the training batches."""
        fabric, config, task = self.fabric, self.config, self.task
        if fabric.device.type == "cuda":
            torch.set_float32_matmul_precision(config.matmul_precision)  # "high": TF32 tensor cores for float32
        with task_mistakes("its data"):
            train_loader, val_loader = task.build_dataloaders()
        train_batches = TrainBatches(fabric.setup_dataloaders(train_loader), config.limit_train_batches)
        self.train_batches = train_batches  # checkpoints hold where its loader stands (see checkpointing.py)
        if val_loader is not None:  # every sample once on some process, so that the mean is exact
            val_loader = fabric.setup_dataloaders(val_loader, evaluation=True)
        self.val_loader = val_loader
        self.model = setup_model(fabric, config, task)  # built, sharded and compiled as the config says
        # After setup, so that the optimizer sees the parameters where they will live (fused AdamW on CUDA).
        length = schedule_length(config, train_batches.per_epoch)
        optimizer, self.scheduler = task.configure_optimizers(self.model, length)
        self.optimizer = fabric.setup_optimizers(optimizer)
        self.optimizer_settings = optimizer_settings(self.optimizer)  # as built; see checkpointing.py
        return train_batches

    def _train(self, train_batches: TrainBatches) -> None:
        """Train epoch after epoch until done, stopped or preempted; then save ``last.ckpt``."""
        ledger = self.ledger
        while not (self._done() or ledger.preempted()):
            if not self._train_epoch(train_batches):
                break  # stopped mid-epoch; the checkpoint below resumes at the next batch
            ledger.agree()  # on a signal that came during the epoch's last steps
            if ledger.preempted() and not self._done():
                break  # save before validating, which can outlast a grace period; the resumed run validates
            self._end_epoch()
        if self._done() and ledger.unlogged():
            # The last step is logged whatever the cadence, so that a short run has its row;
            # a preempted run is not done, and its resumed run logs as an unbroken one would.
            self._on_log(ledger.log())
        last = self.run_dir / "checkpoints" / "last.ckpt"
        self.save_checkpoint(last)
        if ledger.preempted() and not self._done():  # a signal at the very end finds nothing left to do
            raise Preempted(ledger.preemption.received, self.global_step, last)

    def _done(self) -> bool:
        """Whether training is over: max_steps or max_epochs reached, or a stop requested."""
        at, max_steps = self.position, self.config.max_steps
        steps_done = max_steps is not None and at.global_step >= max_steps
        return steps_done or at.epoch >= self.config.max_epochs or self.ledger.stop_requested()

    def _train_epoch(self, train_batches: TrainBatches) -> bool:
        """Train one epoch, or what is left of it; return whether it ran to its end."""
        at = self.position
        self.num_train_batches = train_batches.per_epoch
        batches = train_batches.epoch(at.epoch, start=at.batch_idx, rng_state=self._rng_to_restore)
        self._rng_to_restore = None
        self.model.train()
        self._call("on_train_epoch_start", epoch=at.epoch)
        # Asked once an epoch: a per-batch hook that no callback implements costs nothing, not even a dispatch.
        self._batch_hooks = implemented(self.fabric.callbacks)
        for batch_idx, batch, is_last in batches:
            # Stop only after an optimizer step, so a checkpoint never holds half a window.
            if self._train_batch(batch, batch_idx, is_last) and (self._done() or self.ledger.preempted()):
                return is_last
        return True

    def _train_batch(self, batch: Any, batch_idx: int, is_last: bool) -> bool:
        """Train on one batch; return whether it ended an accumulation window (and so stepped)."""
        fabric, config, ledger, hooks = self.fabric, self.config, self.ledger, self._batch_hooks
        window = batch_idx % config.grad_accum_steps + 1  # batches in this window so far
        is_step = window == config.grad_accum_steps or is_last  # and at an epoch's end: no gradient leaks on
        if "on_train_batch_start" in hooks:  # each per-batch hook only where some callback has it
            fabric.call("on_train_batch_start", trainer=self, fabric=fabric, batch=batch, batch_idx=batch_idx)
        if is_step:  # the window's last backward, which syncs the gradients between processes
            outputs, loss = self._forward_backward(batch, batch_idx)
        else:  # between steps, skip the gradient all-reduce
            with fabric.no_backward_sync(self.model):
                outputs, loss = self._forward_backward(batch, batch_idx)
        loss = ledger.add_loss(loss, window)  # detached; it stays on the device
        metrics = None
        if is_step:
            if ledger.checks_each_loss and ledger.step_skipped():  # "skip" saw a NaN: drop the window, take no step
                self.optimizer.zero_grad(set_to_none=True)
            else:
                ledger.add_step(outputs, loss, self._step(window), window)
                if self.position.global_step % config.log_every_n_steps == 0:
                    metrics = ledger.log()
                if config.val_every_n_steps and not is_last and self._validation_due():  # else at the epoch's end
                    self.validate(self.val_loader)  # before the batch's hooks: a checkpoint saved there follows it
                    ledger.agree()  # on a stop that validation's callbacks asked for
        at = self.position
        at.batch_idx = batch_idx + 1
        if "on_train_batch_end" in hooks:
            kwargs = dict(batch=batch, batch_idx=batch_idx, loss=loss, outputs=outputs, global_step=at.global_step)
            fabric.call("on_train_batch_end", trainer=self, fabric=fabric, **kwargs)
        if metrics is not None:  # after the batch's hooks, so that callbacks' windows include this batch
            self._on_log(metrics)
        return is_step

    def _forward_backward(self, batch: Any, batch_idx: int) -> tuple[Any, torch.Tensor]:
        """Run ``training_step`` on ``batch``, then its backward between the backward hooks (none for "skip"'s NaN)."""
        fabric, ledger, hooks, accum = self.fabric, self.ledger, self._batch_hooks, self.config.grad_accum_steps
        outputs = self.task.training_step(self.model, batch)
        if ledger.last_step is None:  # the fit's first window: check the outputs once, not on every batch
            check_training_outputs(outputs)
        loss = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        if not ledger.checks_each_loss or ledger.usable(loss, batch_idx):  # "skip" refuses a NaN loss
            if "on_before_backward" in hooks:
                fabric.call("on_before_backward", trainer=self, fabric=fabric, loss=loss)
            fabric.backward(loss / accum if accum > 1 else loss)
            if "on_after_backward" in hooks:
                fabric.call("on_after_backward", trainer=self, fabric=fabric, model=self.model)
        return outputs, loss

    def _step(self, window: int) -> torch.Tensor | None:
        """Take the optimizer step of a window of ``window`` batches; return the gradient norm if clipped."""
        fabric, config, optimizer = self.fabric, self.config, self.optimizer
        if window < config.grad_accum_steps:
            # The epoch's last window was short, and each loss was divided by the full window:
            # scale the gradients so that the step sees the mean over the batches it had.
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(config.grad_accum_steps / window)
        if "on_before_optimizer_step" in self._batch_hooks:
            kwargs = dict(model=self.model, optimizer=optimizer, global_step=self.position.global_step)
            fabric.call("on_before_optimizer_step", trainer=self, fabric=fabric, **kwargs)
        grad_norm = None
        if config.grad_clip_norm is not None:
            grad_norm = fabric.clip_gradients(self.model, optimizer, max_norm=config.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.position.global_step += 1
        if config.scheduler_interval == "step" and self.scheduler is not None:
            self.scheduler.step()
        return grad_norm

    def _validation_due(self, epoch_end: bool = False) -> bool:
        """Whether to validate: after every ``val_every_n_steps``-th step and ``val_every_n_epochs``-th epoch."""
        config, at = self.config, self.position
        by_steps = config.val_every_n_steps is not None and at.global_step % config.val_every_n_steps == 0
        by_epochs = epoch_end and config.val_every_n_epochs > 0 and (at.epoch + 1) % config.val_every_n_epochs == 0
        return self.val_loader is not None and (by_steps or by_epochs)

    def _end_epoch(self) -> None:
        """Validate if it is due, move on to the next epoch, then fire ``on_train_epoch_end`` with the metrics."""
        finished_epoch = self.epoch
        metrics = self.validate(self.val_loader) if self._validation_due(epoch_end=True) else {}
        # Move on before the hook, so that a checkpoint saved there resumes at the next epoch.
        self.position.next_epoch()
        if self.config.scheduler_interval == "epoch" and self.scheduler is not None:
            self.scheduler.step()
        self._call("on_train_epoch_end", epoch=finished_epoch, global_step=self.global_step, metrics=metrics)
        self.ledger.agree()  # on a stop request made at the epoch's end (say, by early stopping)

    def validate(self, loader: Any) -> dict[str, float]:
        """Validate on ``loader`` (see ``validation.py``); log the metrics as ``val/<name>`` and return them."""
        self._call("on_validation_epoch_start", epoch=self.epoch)
        on_batch = functools.partial(self._call, "on_validation_batch_end")
        self.metrics = self.validation.run(self.model, loader, self.config.limit_val_batches, on_batch, prefix="val/")
        self.fabric.log_dict(self.metrics, step=self.global_step)
        self.fabric.print(f"epoch {self.epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in self.metrics.items()))
        self._call("on_validation_epoch_end", epoch=self.epoch, global_step=self.global_step, metrics=self.metrics)
        return self.metrics

    def _call(self, hook: str, **kwargs: Any) -> None:
        if self.fabric.callbacks:  # none: not even a dispatch, so a loop without callbacks pays nothing for hooks
            self.fabric.call(hook, trainer=self, fabric=self.fabric, **kwargs)

    def _on_log(self, metrics: dict[str, float]) -> None:
        """Fire ``on_log`` with a step's logged values; flush if a checkpoint of this very point came first."""
        self._call("on_log", metrics=metrics, global_step=self.global_step)
        if self._saved_at is not None and self._saved_at[1] == self.position and self.fabric.is_global_zero:
            for logger in self.fabric.loggers:  # the checkpoint's step must have its row whole on disk too
                logger.flush()

    # -- checkpoints -----------------------------------------------------------------------

    def resume_path(self) -> Path:
        """The checkpoint ``config.resume`` names: ``last`` is ``<run_dir>/checkpoints/last.ckpt``."""
        return self.run_dir / "checkpoints" / "last.ckpt" if self.config.resume == "last" else Path(self.config.resume)

    def save_checkpoint(self, path: str | Path) -> None:
        """Write everything needed to resume at the next batch to ``path``, atomically.

        Call it right after an optimizer step, as ``ModelCheckpoint`` does: a checkpoint holds no partial window.

        Raises:
            NonFiniteLossError: a loss since the last check was NaN or infinite (with
                ``nonfinite_loss="stop"``): what training did since then is not saved.
        """
        saved_at = (Path(path), dataclasses.replace(self.position))
        if saved_at == self._saved_at:
            return  # already written at this very point (say, by the checkpoint callback)
        if self.ledger.pending:
            self.ledger.read()  # never save weights that a NaN loss (or gradient) has reached
        checkpoint = checkpoint_of(self, rng=self._rng_to_restore)  # a resumed run's, until its first epoch
        self._call("on_save_checkpoint", checkpoint=checkpoint)
        self.fabric.save(saved_at[0], checkpoint)
        self._saved_at = saved_at

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what ``save_checkpoint`` wrote; training continues at the batch after it.

        Rows that the loggers wrote after the checkpoint are dropped, because the resumed run
        writes them again. Settings changed since the checkpoint apply from here, and are named.

        Raises:
            ConfigError: nothing is at ``path``, the file is not a checkpoint this trainer can
                resume, or a setting changed that a resume cannot follow (see checkpointing.py).
        """
        extra, self._rng_to_restore = resume_from(self, Path(path))
        self.ledger.read_at = self.global_step  # a NaN found later is reported from the resumed step on
        self._call("on_load_checkpoint", checkpoint=extra)
