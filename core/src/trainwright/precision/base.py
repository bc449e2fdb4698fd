"""The precision interface, and ``32-true``: full precision, where every hook is the identity."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch


class Precision:
    """How numbers are represented in the forward pass, the backward pass and the optimizer step.

    This base class is ``32-true``. Subclasses override what their format changes; ``Fabric``
    and its wrappers call these hooks and never ask which precision is active.

    Args:
        device_type: ``"cpu"``, ``"cuda"`` or ``"mps"``, for autocast and the gradient scaler.
    """

    name: ClassVar[str] = "32-true"
    #: Whether a wrapped module's forward must call ``forward_context``/``convert_*``. When
    #: false, the wrapper forwards straight to the module.
    wraps_forward: ClassVar[bool] = False

    def __init__(self, device_type: str = "cpu") -> None:
        self.device_type = device_type

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Cast the module's parameters and buffers to this precision's storage type."""
        return module

    def forward_context(self) -> AbstractContextManager:
        """The context that a forward pass (and ``fabric.autocast()``) runs in."""
        return contextlib.nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point inputs of a forward pass to what the module computes in."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Cast floating-point outputs of a forward pass to what the loss is computed in."""
        return data

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass from ``tensor``."""
        tensor.backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before they are inspected or clipped."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """Step ``optimizer``; returns what its ``step`` returns."""
        return optimizer.step() if closure is None else optimizer.step(closure)

    def state_dict(self) -> dict[str, Any]:
        """State that a checkpoint must carry for an exact resume (the gradient scale)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
