"""The device-side accounting of training, and the one read that brings it to the host.

The hot path keeps each batch's loss and each step's gradient norm, as tensors that stay on
the device: it only lists them, so that a batch costs no extra kernel launch. ``Ledger.read``
sums them and brings them over in one transfer, together with what its caller needs (a
log step's values, validation's sums), at points where every process calls it: log steps (every
``log_every_n_steps`` optimizer steps), validation, checkpoints and, with several processes,
epoch ends. There the sums are checked for NaN, and a stop request or a preemption signal that
reached any process becomes every process's, so that all of them leave the loop at the same step.
Validation's sums (``Means``) stay on the device too, until the read at the validation's end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from trainwright import Fabric

from .config import Config
from .position import Position
from .preemption import PreemptionHandler

_MAX_LISTED = 256  # losses (or norms) listed before they are summed on the device into one


class NonFiniteLossError(FloatingPointError):
    """The loss was NaN or infinite and ``config.nonfinite_loss`` is ``"stop"``."""


class Ledger:
    """What training has computed since the last read, on the device; the read; the stop agreement.

    Args:
        fabric: the run's ``Fabric``: its device, its processes and its loggers.
        config: the run's settings (``nonfinite_loss``, ``grad_accum_steps``, ``log_every_n_steps``, ...).
        position: where training stands; the trainer moves it, the ledger reads it.
    """

    def __init__(self, fabric: Fabric, config: Config, position: Position) -> None:
        self.fabric, self.config, self.position = fabric, config, position
        self.several = fabric.world_size > 1  # processes; asked at every step, so looked up once
        # Under nonfinite_loss="skip" the trainer asks ``usable`` on every batch (set once, as the config is).
        self.checks_each_loss = config.nonfinite_loss == "skip"
        self.accumulates = config.grad_accum_steps > 1  # several batches to a step: the logged loss is their mean
        self.should_stop = False  # any callback may set it (as trainer.should_stop)
        self.preemption: PreemptionHandler | None = None  # Trainer.fit installs one for the fit
        self.last_step: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None  # outputs, loss, grad norm
        self.logged_step = -1  # the last optimizer step whose values were logged
        self.read_at = 0  # the global_step at which the sums were last read (or the run resumed)
        self._losses: list[torch.Tensor] = []  # the batches' losses since the last read, on the device
        self._norms: list[torch.Tensor] = []  # the clipped gradient norms since the last read, likewise
        self._window_loss: torch.Tensor | None = None  # the summed loss of the accumulation window so far
        self._skip_step = False  # nonfinite_loss="skip" saw a bad loss in this window: drop its optimizer step
        # With several processes a stop request (a callback's, or a signal's) is agreed at the
        # next read, so that every process leaves the loop at the same step.
        self._stop_agreed = self._preempt_agreed = False

    # -- the hot path: nothing here waits for the device, except where nonfinite_loss="skip" asks

    def usable(self, loss: torch.Tensor, batch_idx: int) -> bool:
        """Whether to backpropagate ``loss``: always, unless ``nonfinite_loss="skip"`` finds it NaN or infinite.

        A skipped loss marks its window, whose optimizer step ``step_skipped`` then drops.
        """
        if self.config.nonfinite_loss != "skip":
            return True
        value = loss.detach()
        finite = math.isfinite(value.item())  # a read per batch: the price of skipping precisely
        if self.several:  # every process must skip together
            flag = torch.tensor(float(finite), device=self.fabric.device)
            finite = bool(self.fabric.all_reduce(flag, op="min").item())
        if finite:
            return True
        self.fabric.print(
            f"skipping a batch: the loss is {value.item()} at epoch {self.position.epoch}, batch {batch_idx} "
            f"(toward optimizer step {self.position.global_step + 1})"
        )
        self._skip_step = True
        return False

    def add_loss(self, loss: torch.Tensor, window: int) -> torch.Tensor:
        """Add the loss of a batch, the ``window``-th of its accumulation window; return it detached."""
        detached = loss.detach()
        if detached.dim():  # one element of shape [1], say: a number, like every value the ledger lists
            detached = detached.reshape(())
        self._losses.append(detached)  # stays on the device; a NaN here is found at the next read
        if len(self._losses) >= _MAX_LISTED:  # reads are rare (log_every_n_steps is large): keep the list short
            self._losses = [self._total(self._losses)]
        if self.accumulates:  # the loss to log is the mean over the step's window
            self._window_loss = detached.float() if window == 1 else self._window_loss + detached
        return detached

    def step_skipped(self) -> bool:
        """At a window's end: whether it saw a loss that ``usable`` refused, so that its step is dropped."""
        skipped, self._skip_step = self._skip_step, False
        if skipped:
            self._window_loss = None
        return skipped

    def add_step(self, outputs: Any, loss: torch.Tensor, grad_norm: torch.Tensor | None, window: int) -> None:
        """Record an optimizer step over ``window`` batches: the last one's outputs and loss, the gradient norm."""
        if grad_norm is not None and self.config.precision != "16-mixed":
            # A finite loss can still have NaN gradients; 16-mixed's scaler skips those steps itself.
            self._norms.append(grad_norm.detach())
            if len(self._norms) >= _MAX_LISTED:
                self._norms = [self._total(self._norms)]
        mean = self._window_loss / window if self.accumulates else loss
        self.last_step, self._window_loss = (outputs, mean, grad_norm), None

    # -- reads: every process makes them at the same points -----------------------------------

    def log(self) -> dict[str, float]:
        """Read and log the latest step's training values: the loss, the gradient norm and the task's extras."""
        outputs, loss, grad_norm = self.last_step
        tensors: dict[str, torch.Tensor] = {"train/loss": loss}
        numbers: dict[str, float] = {}
        if grad_norm is not None:
            tensors["train/grad_norm"] = grad_norm
        if not isinstance(outputs, torch.Tensor):  # a dict (the trainer checked): log its other values too
            for name, value in outputs.items():
                if name != "loss":
                    target = tensors if isinstance(value, torch.Tensor) else numbers
                    target[f"train/{name}"] = value
        values = self.read(list(tensors.values()), mean=True)
        metrics = {**dict(zip(tensors, values, strict=True)), **numbers}
        self.fabric.log_dict(metrics, step=self.position.global_step)
        self.logged_step = self.position.global_step
        return metrics

    def unlogged(self) -> bool:
        """Whether the latest optimizer step's values are not logged yet."""
        return self.last_step is not None and self.logged_step != self.position.global_step

    @property
    def pending(self) -> bool:
        """Whether the ledger holds values that no read has checked yet."""
        return bool(self._losses or self._norms)

    def agree(self) -> None:
        """With several processes, read now: a stop or a signal on any process becomes every process's."""
        if self.several:
            self.read()

    def read(self, tensors: Sequence[torch.Tensor] = (), mean: bool = False) -> list[float]:
        """Bring ``tensors`` (scalars on the device) to the host in one transfer, with the loss check.

        With several processes the values are summed over the processes (averaged with
        ``mean``), and a stop request from any process becomes every process's.

        Raises:
            NonFiniteLossError: a loss since the last read was NaN or infinite, and
                ``nonfinite_loss`` is ``"stop"``.
        """
        fabric, several = self.fabric, self.several
        parts = [t if t.dim() == 0 else t.reshape(()) for t in tensors]  # one element each, as numbers
        loss_parts, norm_parts, flags = self._losses, self._norms, []
        if several:  # every process sends the same layout, whatever each listed
            loss_parts, norm_parts = [self._total(loss_parts)], [self._total(norm_parts)]
            preempt = self.preemption is not None and self.preemption.received is not None
            flags = [torch.tensor(float(flag), device=fabric.device) for flag in (self.should_stop, preempt)]
        every = parts + loss_parts + norm_parts + flags
        if not every:
            return []  # nothing to read or check
        # One stack and one transfer, however many values: the few kernels of a log step run
        # with cold caches, and each costs more than its size suggests. (tolist reads any float
        # format exactly; only a sum over processes is taken in float32, which bf16 would round.)
        values = torch.stack(every)
        if several:
            values = fabric.all_reduce(values.float(), op="sum")
        values = values.tolist()  # the one host-device sync of a log step: the device catches up here
        if several:
            preempt, stop = values.pop() > 0, values.pop() > 0
            self._stop_agreed, self._preempt_agreed = self._stop_agreed or stop, self._preempt_agreed or preempt
            self.should_stop = self.should_stop or stop
        values, sums, first = values[: len(parts)], values[len(parts) :], self.read_at + 1
        losses, norms = sum(sums[: len(loss_parts)]), sum(sums[len(loss_parts) :])
        self._losses, self._norms, self.read_at = [], [], self.position.global_step
        if not (math.isfinite(losses) and math.isfinite(norms)) and self.config.nonfinite_loss == "stop":
            what = f"the loss became {losses}" if not math.isfinite(losses) else f"the gradient norm became {norms}"
            raise NonFiniteLossError(
                f"{what} in the batches of optimizer steps {first} to {self.position.global_step} "
                f"(epoch {self.position.epoch}); training stops, and no checkpoint holds what followed. The loss is "
                f"checked every {self.config.log_every_n_steps} steps and before each checkpoint "
                "(--nonfinite-loss=skip checks every batch and skips the bad ones)"
            )
        return [value / fabric.world_size for value in values] if mean and several else values

    def _total(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The float32 sum of scalar tensors, on the device."""
        if tensors:
            return torch.stack(tensors).sum(dtype=torch.float32)
        return torch.zeros((), device=self.fabric.device)

    # -- what the reads agreed on --------------------------------------------------------------

    def stop_requested(self) -> bool:
        """Whether a callback asked to stop (with several processes: any process's callback, at the last read)."""
        return self._stop_agreed if self.several else self.should_stop

    def preempted(self) -> bool:
        """Whether a preemption signal came (with several processes: to any process, by the last read)."""
        if self.several:
            return self._preempt_agreed
        return self.preemption is not None and self.preemption.received is not None


class Means:
    """The weighted sums of validation's metrics, on the device until ``Ledger.read`` reads them.

    Each batch's metrics count with the ``count`` its step returns (1 without one), so a short
    last batch counts for what it holds.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = torch.zeros((), device=device)

    def add(self, outputs: Any) -> None:
        """Add a batch's metrics: a dict of numbers or one-element tensors, with an optional ``count``.

        Raises:
            TypeError: ``outputs`` is not a dict, or a tensor in it has more than one element.
        """
        if not isinstance(outputs, Mapping):
            raise TypeError(f"validation_step must return a dict of metrics, got {type(outputs).__name__}")
        values = {}
        for name, value in outputs.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise TypeError(
                        f"validation_step returned {name!r} of shape {list(value.shape)}: each value is averaged "
                        "over the batches, so it must be one number (the batch's mean, say)"
                    )
                value = value.detach().float().reshape(())
            values[name] = value
        weight = values.pop("count", 1)
        for name, value in values.items():
            total = self.sums.setdefault(name, torch.zeros((), device=self.device))
            total += value * weight
        self.count += weight

    def read(self, ledger: Ledger, prefix: str = "") -> dict[str, float]:
        """The means, summed over every process, as ``<prefix><name>``, in ``ledger``'s read."""
        *totals, samples = ledger.read([*self.sums.values(), self.count])
        return {f"{prefix}{name}": total / samples for name, total in zip(self.sums, totals, strict=True)}
