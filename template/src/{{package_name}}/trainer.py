"""The training loop. It is yours: read it top to bottom, then change what you need.

``Fabric`` (from the versioned ``trainwright`` core) owns devices, precision, processes, logging,
checkpoint files and callback dispatch. ``task.py`` owns *what* is trained: the model, the data,
the per-batch computation and the optimizer. This file owns *when* things happen.

The hot path never waits for the device. Values computed there stay on it until a log step
(every ``log_every_n_steps`` optimizer steps) reads them all in one transfer; the non-finite
loss check rides along. Each place that reads a device value says so in a comment.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from trainwright import Fabric, Logger, restore_rng_state
from trainwright.config import ConfigError

from .checkpointing import checkpoint_of, optimizer_settings, resume_from, stateful_callbacks
from .config import Config
from .hooks import HOOKS
from .preemption import Preempted, PreemptionHandler
from .run_dir import record_run, upload_artifacts
from .schedule import schedule_length
from .strategy import strategy_for
from .task import Task
from .task_checks import check_training_outputs, task_mistakes

_END = object()  # the end of a data loader's iterator


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite and ``config.nonfinite_loss`` is ``"stop"``."""


class Trainer:
    """Fits ``task`` with the settings of ``config``.

    Args:
        config: the run's settings (see ``config.py``).
        task: builds the model, data and optimizer, and computes each batch's loss (see ``task.py``).
        callbacks: objects with any of the hooks in ``HOOKS``, called in this order.
        loggers: where ``fabric.log`` writes (CSV, TensorBoard, ...).
    """

    def __init__(
        self, config: Config, task: Task, callbacks: Iterable[object] = (), loggers: Iterable[Logger] = ()
    ) -> None:
        self.config, self.task = config, task
        self.fabric = Fabric(
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=strategy_for(config),
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
        self.num_train_batches: int | None = None  # batches per epoch after limit_train_batches; None: unknown
        self.metrics: dict[str, float] = {}  # the latest validation metrics
        self.should_stop = False  # any callback may set it; training ends after an optimizer step
        self._saved_at: tuple[Path, int, int, int] | None = None
        self._rng_to_restore: dict[str, Any] | None = None  # a resumed run's random state, put back in _train_epoch
        self._skip_step = False  # nonfinite_loss="skip" saw a bad loss in this window: drop its optimizer step
        self._loss_sum: torch.Tensor | None = None  # the losses since the last read, on the device
        self._norm_sum: torch.Tensor | None = None  # the clipped gradient norms since the last read, likewise
        self._window_loss: torch.Tensor | None = None  # the summed loss of the window so far
        self._last_step: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None  # outputs, loss, norm
        self._logged_step = -1  # the last optimizer step whose values were logged
        self._read_at = 0  # the global_step at which the device values were last read
        self.metadata: dict[str, Any] = {}  # versions, git commit, hardware: in run_dir/metadata.json and checkpoints

    # -- fitting ---------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until ``max_epochs`` or ``max_steps``, validating every ``val_every_n_epochs``.

        With ``config.resume`` set, first restore the checkpoint it names and go on from there.
        """
        fabric, config = self.fabric, self.config
        started, status = False, "success"
        # From here on a signal stops the fit at the next step and saves; one that comes while the
        # data, the model or the checkpoint load (minutes, for a large data set) stops it before training.
        preemption = self._preemption = PreemptionHandler(config.preempt_signals).install()
        try:
            # A callback that cannot take its arguments, or two that share a state key, fail
            # here, before anything is written.
            fabric.check_hooks({hook: ("trainer", "fabric", *names) for hook, names in HOOKS.items()})
            stateful_callbacks(fabric.callbacks)
            train_loader, val_loader = self._setup()
            if config.resume:
                self.load_checkpoint(self.resume_path())
            if fabric.world_size > 1:
                self._read()  # agree on a signal that reached some process during the setup
            if self._preempted():
                raise Preempted(preemption.received or "a signal to another process", self.global_step, None)
            started = True
            self.metadata = record_run(self)  # config.toml and metadata.json in the run directory
            self._call("on_fit_start", model=self.model, optimizer=self.optimizer)
            while not self._finished():
                if not self._train_epoch(train_loader):
                    break  # stopped mid-epoch; the checkpoint below resumes at the next batch
                if fabric.world_size > 1:
                    self._read()  # agree on a signal that came during the epoch's last steps
                if self._preempted() and not self._done():
                    break  # save before validating, which can outlast a grace period; the resumed run validates
                metrics = {}
                if val_loader is not None and (self.epoch + 1) % config.val_every_n_epochs == 0:
                    metrics = self.validate(val_loader)
                finished_epoch = self.epoch
                # Move on before the hook, so that a checkpoint saved there resumes at the next epoch.
                self.epoch, self.batch_idx = self.epoch + 1, 0
                if config.scheduler_interval == "epoch" and self.scheduler is not None:
                    self.scheduler.step()
                self._call("on_train_epoch_end", epoch=finished_epoch, global_step=self.global_step, metrics=metrics)
                if fabric.world_size > 1:
                    self._read()  # agree on a stop request made at the epoch's end (say, by early stopping)
            if self._done() and self._last_step is not None and self._logged_step != self.global_step:
                # The last step is logged whatever the cadence, so that a short run has its row;
                # a preempted run is not done, and its resumed run logs as an unbroken one would.
                self._on_log(self._log(*self._last_step))
            self.save_checkpoint(self.run_dir / "checkpoints" / "last.ckpt")
            if self._preempted() and not self._done():  # a signal at the very end finds nothing left to do
                raise Preempted(preemption.received, self.global_step, self.run_dir / "checkpoints" / "last.ckpt")
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

    def _setup(self) -> tuple[Any, Any]:
        """Build the task's data, model and optimizer on this run's devices; return the loaders."""
        fabric, config, task = self.fabric, self.config, self.task
        if fabric.device.type == "cuda":
            torch.set_float32_matmul_precision(config.matmul_precision)  # "high": TF32 tensor cores for float32
        with task_mistakes("its data"):
            train_loader, val_loader = task.build_dataloaders()
        train_loader = fabric.setup_dataloaders(train_loader)
        if self._batches_per_epoch(train_loader) == 0:
            raise ConfigError(
                "the training loader has no batch on this process (its data, batch_size and drop_last, and "
                "limit_train_batches, leave none): nothing would train"
            )
        if val_loader is not None:  # every sample once on some process, so that the mean is exact
            val_loader = fabric.setup_dataloaders(val_loader, evaluation=True)
        meta = config.strategy == "fsdp" and config.fsdp.meta_init  # nothing allocated until it is sharded
        with fabric.init_module(empty_init=meta), task_mistakes("its model"):
            model = task.build_model()
        if config.compile:
            # Fabric compiles what the strategy makes of the model; the checkpoint keeps the plain model's keys.
            model = torch.compile(model)
        self.model = fabric.setup(model)
        # After setup, so that the optimizer sees the parameters where they will live (fused AdamW on CUDA).
        length = schedule_length(config, self._batches_per_epoch(train_loader))
        optimizer, self.scheduler = task.configure_optimizers(self.model, length)
        self.optimizer = fabric.setup_optimizers(optimizer)
        self.optimizer_settings = optimizer_settings(self.optimizer)  # as built; see checkpointing.py
        return train_loader, val_loader

    def _batches_per_epoch(self, loader: Any) -> int | None:
        """Batches per epoch on this process after ``limit_train_batches``; None when the data has no length."""
        limit = self.config.limit_train_batches
        try:
            length = len(loader)
        except TypeError:  # an iterable dataset without __len__: an epoch ends when it runs out
            return limit
        return length if limit is None else min(limit, length)

    def _call(self, hook: str, **kwargs: Any) -> None:
        self.fabric.call(hook, trainer=self, fabric=self.fabric, **kwargs)

    def _finished(self) -> bool:
        return self._done() or self._preempted()

    def _done(self) -> bool:
        """Whether training is over: max_steps or max_epochs reached, or a stop requested."""
        max_steps = self.config.max_steps
        steps_done = max_steps is not None and self.global_step >= max_steps
        stop = self.should_stop if self.fabric.world_size == 1 else self._stop_agreed
        return steps_done or self.epoch >= self.config.max_epochs or stop

    # With several processes a stop request (a callback's, or a signal's) is agreed at the next
    # read (see _read), so that every process leaves the loop at the same step.
    _stop_agreed = False
    _preempt_agreed = False
    _preemption: PreemptionHandler | None = None

    def _preempted(self) -> bool:
        if self.fabric.world_size > 1:
            return self._preempt_agreed
        return self._preemption is not None and self._preemption.received is not None

    def _train_epoch(self, loader: Any) -> bool:
        """Train one epoch, or what is left of it; return whether it ran to its end."""
        self.num_train_batches = self._batches_per_epoch(loader)
        if self.batch_idx == 0:
            self._restore_rng()  # resumed at an epoch's start: the state was captured just before it
        loader.set_epoch(self.epoch)  # a fresh shuffle per epoch (the same one after a resume)
        if self.batch_idx:
            loader.skip_batches(self.batch_idx)  # resumed mid-epoch: skip what was trained, without loading it
        self.model.train()
        self._call("on_train_epoch_start", epoch=self.epoch)
        start = self.batch_idx
        for batch_idx, batch, is_last in self._batches(loader, start=start):
            # Stop only after an optimizer step, so a checkpoint never holds half a window.
            if self._train_batch(batch, batch_idx, is_last) and self._finished():
                return is_last
        if start == 0 and self.batch_idx == 0:  # a stream that yielded nothing: the epochs would all be empty
            raise ConfigError(f"the training loader yielded no batch in epoch {self.epoch}: nothing would train")
        return True

    def _batches(self, loader: Any, start: int) -> Iterator[tuple[int, Any, bool]]:
        """``(batch_idx, batch, is_last)`` for the epoch's batches from ``start``, looking one batch ahead.

        Looking ahead tells which batch is the epoch's last (it ends an accumulation window)
        also for data without a length.
        """
        limit = self.config.limit_train_batches
        iterator = iter(loader)
        if start:
            self._restore_rng()  # resumed mid-epoch: after iter(), which draws from the random state
        if limit is not None and start >= limit:
            return  # saved after the epoch's last batch, before its end: nothing is left to train
        batch, batch_idx = next(iterator, _END), start
        while batch is not _END:
            upcoming = next(iterator, _END) if limit is None or batch_idx + 1 < limit else _END
            yield batch_idx, batch, upcoming is _END
            batch, batch_idx = upcoming, batch_idx + 1

    def _train_batch(self, batch: Any, batch_idx: int, is_last: bool) -> bool:
        """Train on one batch; return whether it ended an accumulation window (and so stepped)."""
        fabric, config, model = self.fabric, self.config, self.model
        accum = config.grad_accum_steps
        # Step after every ``accum`` batches, and after the epoch's last batch, so that no
        # gradient leaks into the next epoch.
        window = batch_idx % accum + 1  # batches in this window so far
        is_step = window == accum or is_last
        logged = (self.global_step + 1) % config.log_every_n_steps == 0  # this window's step is a log step
        self._call("on_train_batch_start", batch=batch, batch_idx=batch_idx)
        # Between steps, skip the gradient all-reduce: only the last backward of a window syncs.
        with fabric.no_backward_sync(model, enabled=not is_step):
            outputs = self.task.training_step(model, batch)
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            if self._last_step is None:  # the fit's first window: check the outputs once, not on every batch
                check_training_outputs(outputs)
            if config.nonfinite_loss != "skip" or self._loss_is_finite(loss, batch_idx):
                self._call("on_before_backward", loss=loss)
                fabric.backward(loss / accum if accum > 1 else loss)
                self._call("on_after_backward", model=model)
        detached = loss.detach()
        if self._loss_sum is None:
            self._loss_sum = torch.zeros((), device=detached.device)
        self._loss_sum.add_(detached)  # stays on the device; a NaN here is found at the next read
        if accum > 1:  # the loss to log is the mean over the step's window
            self._window_loss = detached.float() if window == 1 else self._window_loss + detached
        metrics = None
        if is_step:
            if self._skip_step:  # the window saw a non-finite loss: drop its gradients, take no step
                self.optimizer.zero_grad(set_to_none=True)
                self._skip_step = False
            else:
                grad_norm = self._step(window)
                if grad_norm is not None and config.precision != "16-mixed":
                    # A finite loss can still have NaN gradients; 16-mixed's scaler skips those steps itself.
                    norm = grad_norm.detach().float()
                    self._norm_sum = norm if self._norm_sum is None else self._norm_sum + norm
                self._last_step = (outputs, detached if accum == 1 else self._window_loss / window, grad_norm)
                if logged:
                    metrics = self._log(*self._last_step)
            self._window_loss = None
        self.batch_idx = batch_idx + 1
        self._call(
            "on_train_batch_end",
            batch=batch,
            batch_idx=batch_idx,
            loss=detached,
            outputs=outputs,
            global_step=self.global_step,
        )
        if metrics is not None:  # after the batch's hooks, so that callbacks' windows include this batch
            self._on_log(metrics)
        return is_step

    def _step(self, window: int) -> torch.Tensor | None:
        """Take the optimizer step of a window of ``window`` batches; return the gradient norm if clipped."""
        fabric, config, optimizer = self.fabric, self.config, self.optimizer
        if window < config.grad_accum_steps:
            # The epoch's last window was short, and each loss was divided by the full window:
            # scale the gradients so that the step sees the mean over the batches it had.
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(config.grad_accum_steps / window)
        self._call("on_before_optimizer_step", model=self.model, optimizer=optimizer, global_step=self.global_step)
        grad_norm = None
        if config.grad_clip_norm is not None:
            grad_norm = fabric.clip_gradients(self.model, optimizer, max_norm=config.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if config.scheduler_interval == "step" and self.scheduler is not None:
            self.scheduler.step()
        return grad_norm

    def _log(self, outputs: Any, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> dict[str, float]:
        """Read and log the training values of this step: the loss, the gradient norm and the task's extras."""
        tensors: dict[str, torch.Tensor] = {"train/loss": loss}
        numbers: dict[str, float] = {}
        if grad_norm is not None:
            tensors["train/grad_norm"] = grad_norm
        if isinstance(outputs, Mapping):
            for name, value in outputs.items():
                if name != "loss":
                    target = tensors if isinstance(value, torch.Tensor) else numbers
                    target[f"train/{name}"] = value
        values = self._read(list(tensors.values()), mean=True)
        metrics = {**dict(zip(tensors, values, strict=True)), **numbers}
        self.fabric.log_dict(metrics, step=self.global_step)
        self._logged_step = self.global_step
        return metrics

    def _read(self, tensors: list[torch.Tensor] = (), mean: bool = False) -> list[float]:
        """Bring ``tensors`` (scalars on the device) to the host in one transfer, with the loss check.

        Every process calls this at the same points: log steps, validation, checkpoints and,
        with several processes, epoch ends. There the values are summed over the processes
        (averaged with ``mean``), and a stop request from any process becomes every process's.

        Raises:
            NonFiniteLossError: a loss since the last read was NaN or infinite, and
                ``nonfinite_loss`` is ``"stop"``.
        """
        fabric = self.fabric
        zero = torch.zeros((), device=fabric.device)
        sums = [zero if tensor is None else tensor for tensor in (self._loss_sum, self._norm_sum)]
        parts = [t.detach().float().reshape(()) for t in tensors] + sums
        if fabric.world_size > 1:
            flags = [self.should_stop, self._preemption is not None and self._preemption.received is not None]
            parts.append(torch.tensor(flags, dtype=torch.float32, device=fabric.device))
        vector = torch.cat([part.reshape(-1) for part in parts])
        if fabric.world_size > 1:
            vector = fabric.all_reduce(vector, op="sum")
        values = vector.tolist()  # the one host-device sync of a log step: the device catches up here
        if fabric.world_size > 1:
            preempt, stop = values.pop() > 0, values.pop() > 0
            self._stop_agreed, self._preempt_agreed = self._stop_agreed or stop, self._preempt_agreed or preempt
            self.should_stop = self.should_stop or stop
        norms, losses, first = values.pop(), values.pop(), self._read_at + 1
        self._loss_sum, self._norm_sum, self._read_at = None, None, self.global_step
        if not (math.isfinite(losses) and math.isfinite(norms)) and self.config.nonfinite_loss == "stop":
            what = f"the loss became {losses}" if not math.isfinite(losses) else f"the gradient norm became {norms}"
            raise NonFiniteLossError(
                f"{what} in the batches of optimizer steps {first} to {self.global_step} "
                f"(epoch {self.epoch}); training stops, and no checkpoint holds what followed. The loss is checked "
                f"every {self.config.log_every_n_steps} steps and before each checkpoint "
                "(--nonfinite-loss=skip checks every batch and skips the bad ones)"
            )
        return [value / fabric.world_size for value in values] if mean else values

    def _loss_is_finite(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """For ``nonfinite_loss="skip"``: whether the loss is usable; otherwise mark the window's step to be skipped."""
        value = loss.detach()
        finite = math.isfinite(value.item())  # a read per batch: the price of skipping precisely
        if self.fabric.world_size > 1:  # every process must skip together
            flag = torch.tensor(float(finite), device=self.fabric.device)
            finite = bool(self.fabric.all_reduce(flag, op="min").item())
        if finite:
            return True
        self.fabric.print(
            f"skipping a batch: the loss is {value.item()} at epoch {self.epoch}, batch {batch_idx} "
            f"(toward optimizer step {self.global_step + 1})"
        )
        self._skip_step = True
        return False

    @torch.no_grad()
    def validate(self, loader: Any) -> dict[str, float]:
        """Run ``task.validation_step`` over ``loader``; return and log the means as ``val/<name>``.

        Each batch's metrics are weighted by the ``count`` its step returns (1 without one), so
        a short last batch counts for what it holds.
        """
        fabric, limit = self.fabric, self.config.limit_val_batches
        self.model.eval()
        self._call("on_validation_epoch_start", epoch=self.epoch)
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=fabric.device)
        for batch_idx, batch in enumerate(loader):
            if limit is not None and batch_idx >= limit:
                break
            outputs = self.task.validation_step(self.model, batch)
            if loader.is_padding(batch_idx):
                continue  # a shorter shard's copy: run only so that every process makes as many forward passes
            if not isinstance(outputs, Mapping):
                raise TypeError(f"validation_step must return a dict of metrics, got {type(outputs).__name__}")
            weight = outputs.get("count", 1)
            for name, value in outputs.items():
                if name != "count":
                    total = sums.setdefault(name, torch.zeros((), device=fabric.device))
                    total += (value.detach().float() if isinstance(value, torch.Tensor) else value) * weight
            count += weight
            self._call("on_validation_batch_end", batch=batch, batch_idx=batch_idx, outputs=outputs)
        *totals, samples = self._read([*sums.values(), count])  # summed over every process
        self.metrics = {f"val/{name}": total / samples for name, total in zip(sums, totals, strict=True)}
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

    def save_checkpoint(self, path: str | Path) -> None:
        """Write everything needed to resume at the next batch to ``path``, atomically.

        Call it right after an optimizer step, as ``ModelCheckpoint`` does: gradients that
        are accumulating toward the next step are not part of a checkpoint.

        Raises:
            NonFiniteLossError: a loss since the last check was NaN or infinite (with
                ``nonfinite_loss="stop"``): what training did since then is not saved.
        """
        path = Path(path)
        position = (path, self.epoch, self.batch_idx, self.global_step)
        if position == self._saved_at:
            return  # already written at this very point (say, by the checkpoint callback)
        if self._loss_sum is not None or self._norm_sum is not None:
            self._read()  # never save weights that a NaN loss (or gradient) has reached
        checkpoint = checkpoint_of(self)
        self._call("on_save_checkpoint", checkpoint=checkpoint)
        self.fabric.save(path, checkpoint)
        self._saved_at = position

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what ``save_checkpoint`` wrote; training continues at the batch after it.

        Rows that the loggers wrote after the checkpoint are dropped, because the resumed run
        writes them again. Settings changed since the checkpoint apply from here, and are named.

        Raises:
            ConfigError: nothing is at ``path``, the file is not a checkpoint this trainer can
                resume, or a setting changed that a resume cannot follow (see checkpointing.py).
        """
        extra = resume_from(self, Path(path))
        self._read_at = self.global_step
        self._call("on_load_checkpoint", checkpoint=extra)

    def _on_log(self, metrics: dict[str, float]) -> None:
        """Fire ``on_log`` with a step's logged values; flush if a checkpoint of this very point came first."""
        self._call("on_log", metrics=metrics, global_step=self.global_step)
        if self._saved_at is not None and self._saved_at[1:] == (self.epoch, self.batch_idx, self.global_step):
            self._flush_loggers()  # the checkpoint's step must have its row whole on disk too

    def _flush_loggers(self) -> None:
        if self.fabric.is_global_zero:
            for logger in self.fabric.loggers:
                logger.flush()

    def _restore_rng(self) -> None:
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
