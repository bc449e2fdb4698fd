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

    An iteration ends at the next backward after an optimizer was stepped or unscaled (by
    ``clip_gradients``). A loop that clips and then decides not to step (say, on a gradient
    spike) must drop those gradients (``zero_grad``), as any skipped step must; the next
    backward then starts afresh, and its gradients are unscaled again before they are clipped
    or applied. Clip only at the end of an accumulation window, never between its backwards.

    Saving the state (``state_dict``, which ``Fabric.save`` calls) after a step, or after a
    skipped step whose gradients were dropped, ends the iteration too, so that a checkpoint
    holds the scale that the next iteration trains with. Between ``clip_gradients`` and
    ``step`` it does not, and the step still applies the gradients unscaled once.
    """

    name = "16-mixed"
    dtype = torch.float16

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__(device_type)
        self.scaler = torch.amp.GradScaler(device_type)
        # What the scaler has recorded since its last update(), by optimizer id. It refuses to
        # unscale an optimizer twice before update(), and update() forgets both.
        self._unscaled: dict[int, torch.optim.Optimizer] = {}  # unscaled, not yet stepped
        self._stepped: set[int] = set()

    def _end_iteration(self) -> None:
        # An optimizer unscaled but never stepped (a skipped step) ends its iteration too:
        # without update() the scaler would keep it marked as unscaled, and the next step
        # would apply the next gradients still multiplied by the scale. The update also
        # counts that iteration's overflow check, so a skipped spike lowers the scale.
        if self._stepped or self._unscaled:
            self.scaler.update()
            self._unscaled.clear()
            self._stepped.clear()

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self._end_iteration()
        self.scaler.scale(tensor).backward(*args, **kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        # Clipping twice in one iteration must not unscale twice (GradScaler would refuse).
        key = id(optimizer)
        if key not in self._unscaled and key not in self._stepped:
            self.scaler.unscale_(optimizer)
            self._unscaled[key] = optimizer

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None:
            raise ValueError("precision='16-mixed' cannot step an optimizer with a closure (e.g. LBFGS)")
        result = self.scaler.step(optimizer)
        self._unscaled.pop(id(optimizer), None)
        self._stepped.add(id(optimizer))
        return result

    def state_dict(self) -> dict[str, Any]:
        # Unscaled gradients that are still there may yet be stepped, and update() would make
        # that step unscale them again. Otherwise the update the next backward would make
        # happens now, so the checkpoint holds the scale the next iteration trains with.
        if not any(map(_holds_gradients, self._unscaled.values())):
            self._end_iteration()
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
            self._unscaled.clear()
            self._stepped.clear()


def _holds_gradients(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])
