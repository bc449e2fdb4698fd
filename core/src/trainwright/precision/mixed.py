"""``bf16-mixed`` and ``16-mixed``: float32 weights, with the forward pass under autocast."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from trainwright._collections import cast_floating
from trainwright.precision.base import Precision


class BF16MixedPrecision(Precision):
    """``bf16-mixed``: autocast to bfloat16. Its range equals float32's, so no loss scaling."""

    name = "bf16-mixed"
    wraps_forward = True
    dtype = torch.bfloat16

    def forward_context(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def convert_output(self, data: Any) -> Any:
        # The loss should be computed in float32 even when the logits came out in 16 bits.
        return cast_floating(data, torch.float32, keep=(torch.float64,))


class FP16MixedPrecision(BF16MixedPrecision):
    """``16-mixed``: autocast to float16, with a gradient scaler against underflow.

    The scaler multiplies the loss before backward, unscales the gradients before they are
    clipped or applied, and skips optimizer steps whose gradients overflowed. The scale is
    updated once per iteration, at the next backward, so that several optimizers stepped in
    one iteration all see the scale their gradients were computed with.
    """

    name = "16-mixed"
    dtype = torch.float16

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__(device_type)
        self.scaler = torch.amp.GradScaler(device_type)
        self._unscaled: set[int] = set()  # optimizers already unscaled since their last step
        self._update_pending = False

    def _apply_pending_update(self) -> None:
        if self._update_pending:
            self.scaler.update()
            self._update_pending = False

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self._apply_pending_update()
        self.scaler.scale(tensor).backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        # GradScaler refuses a second unscale_ of the same step; clipping twice must not fail.
        if id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None:
            raise ValueError("precision='16-mixed' cannot step an optimizer with a closure (e.g. LBFGS)")
        result = self.scaler.step(optimizer)
        self._unscaled.discard(id(optimizer))
        self._update_pending = True
        return result

    def state_dict(self) -> dict[str, Any]:
        self._apply_pending_update()
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
            self._unscaled.clear()
            self._update_pending = False
