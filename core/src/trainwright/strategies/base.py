"""The strategy interface: where the model lives and how the processes of a job cooperate."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from trainwright.checkpoint import CheckpointIO

if TYPE_CHECKING:
    from trainwright.accelerators import Accelerator
    from trainwright.flags import Flags
    from trainwright.precision import Precision


class Strategy:
    """A way of running the training loop on one or more processes.

    The defaults here are those of a job with one process: collectives return their input, and
    there is no gradient synchronisation to suspend. A multi-process strategy overrides them.
    ``Fabric`` only ever calls these methods; it never asks which strategy it has.

    Args:
        accelerator: the device this process computes on.
        precision: the numeric format of the forward and backward passes.
        checkpoint_io: reads and writes checkpoint files.
    """

    name: ClassVar[str] = ""

    def __init__(
        self, accelerator: Accelerator, precision: Precision, checkpoint_io: CheckpointIO | None = None
    ) -> None:
        self.accelerator = accelerator
        self.precision = precision
        self.checkpoint_io = checkpoint_io or CheckpointIO()

    @classmethod
    def from_flags(cls, flags: Flags, accelerator_cls: type[Accelerator], precision: Precision) -> Strategy:
        """Build the strategy that resolved ``flags`` describe."""
        return cls(accelerator_cls(flags.devices[0]), precision)

    @property
    def root_device(self) -> torch.device:
        return self.accelerator.device

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    def setup_environment(self) -> None:
        """Prepare the device (and, for several processes, the process group)."""
        self.accelerator.setup_device()

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Cast and move ``module``; return what the forward pass should call."""
        return self.precision.convert_module(module).to(self.root_device)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def process_dataloader(
        self, dataloader: torch.utils.data.DataLoader, evaluation: bool = False
    ) -> torch.utils.data.DataLoader:
        """Adapt a data loader to this strategy (e.g. give each process its own shard).

        With ``evaluation``, every sample must be read exactly once across the processes, even
        if their shards then differ in length.
        """
        return dataloader

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.precision.backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def clip_gradients_norm(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float,
        error_if_nonfinite: bool,
    ) -> torch.Tensor:
        self.precision.unscale_gradients(optimizer)
        return torch.nn.utils.clip_grad_norm_(
            module.parameters(), max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        self.precision.unscale_gradients(optimizer)
        torch.nn.utils.clip_grad_value_(module.parameters(), clip_val)

    def no_backward_sync(self, module: torch.nn.Module) -> AbstractContextManager:
        """Skip gradient synchronisation in backward passes inside the context."""
        return contextlib.nullcontext()

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process has reached this point."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Return process ``src``'s ``obj`` on every process."""
        return obj

    def all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        """Reduce ``tensor`` over all processes with ``op`` (validated by the caller)."""
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack every process's ``tensor`` along a new first dimension of size ``world_size``."""
        return tensor.unsqueeze(0)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Return every process's ``obj`` (picklable), as a list indexed by global rank."""
        return [obj]

    def save_checkpoint(self, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
        """Write ``checkpoint`` from global rank zero only; the other ranks wait for it."""
        if self.is_global_zero:
            self.checkpoint_io.save(checkpoint, path)
        self.barrier("save_checkpoint")

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        return self.checkpoint_io.load(path)

    def teardown(self) -> None:
        """Release what ``setup_environment`` acquired."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={str(self.root_device)!r}, precision={self.precision.name!r})"
