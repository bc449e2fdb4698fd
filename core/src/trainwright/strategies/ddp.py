"""Distributed data parallel: a full copy of the model per process, gradients averaged in backward."""

from __future__ import annotations

import contextlib
import inspect
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from trainwright.checkpoint import CheckpointIO
from trainwright.strategies.environment import LaunchEnvironment
from trainwright.strategies.parallel import ParallelStrategy

#: DistributedDataParallel arguments the strategy sets itself.
_OWN_ARGUMENTS = ("module", "device_ids", "output_device", "process_group", "device_mesh")


class DDPStrategy(ParallelStrategy):
    """Wraps the model in ``DistributedDataParallel``, which averages the gradients in the backward pass.

    Every process holds the whole model and its optimizer state; choose ``FSDPStrategy`` when
    they no longer fit on one device.

    Args:
        find_unused_parameters: let the backward pass finish when some parameters took no part
            in the forward pass (a branch not taken, a head not used for this batch). Without
            it such a model fails in its first backward pass; with it, each step costs a little
            more, so leave it off for models that use every parameter.
        timeout: how long a collective waits for the other processes before failing.
        environment: this process's place in the job; read from the environment by default.
        checkpoint_io: reads and writes checkpoint files.
        **ddp_kwargs: further ``DistributedDataParallel`` arguments, e.g. ``static_graph=True``
            or ``gradient_as_bucket_view=True``.

    Raises:
        TypeError: an argument ``DistributedDataParallel`` does not take, or one the strategy
            sets itself (``device_ids``, ``process_group``, ...).
    """

    name = "ddp"

    def __init__(
        self,
        *,
        find_unused_parameters: bool = False,
        timeout: timedelta = timedelta(minutes=30),
        environment: LaunchEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, environment=environment, checkpoint_io=checkpoint_io)
        accepted = set(inspect.signature(DistributedDataParallel.__init__).parameters) - {"self", *_OWN_ARGUMENTS}
        for key in ddp_kwargs:
            if key in _OWN_ARGUMENTS:
                raise TypeError(f"DDPStrategy(): {key} is set by the strategy from the device it selects; leave it out")
            if key not in accepted:
                raise TypeError(
                    f"DDPStrategy(): DistributedDataParallel takes no argument {key!r}; it takes "
                    f"{', '.join(sorted(accepted))}"
                )
        self.find_unused_parameters = find_unused_parameters
        self.ddp_kwargs = ddp_kwargs

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super().setup_module(module)
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to synchronise, and DDP refuses such a module
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=self.find_unused_parameters, **self.ddp_kwargs
        )

    def no_backward_sync(self, module: torch.nn.Module) -> AbstractContextManager:
        no_sync = getattr(module, "no_sync", None)
        return no_sync() if callable(no_sync) else contextlib.nullcontext()
