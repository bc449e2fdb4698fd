"""``64-true`` and ``bf16-true``: the model's parameters themselves are stored in another dtype."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from trainwright._collections import cast_floating
from trainwright.precision.base import Precision


class DoublePrecision(Precision):
    """``64-true``: parameters, inputs and outputs in float64, for numerically delicate models."""

    name = "64-true"
    wraps_forward = True

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.double()

    def convert_input(self, data: Any) -> Any:
        return cast_floating(data, torch.float64)


class BF16TruePrecision(Precision):
    """``bf16-true``: parameters and activations in bfloat16, halving memory.

    Outputs are cast back to float32, so the loss is computed at full precision. The optimizer
    updates bfloat16 weights directly, which loses small updates: prefer ``bf16-mixed`` unless
    memory forces this.
    """

    name = "bf16-true"
    wraps_forward = True
    dtype: ClassVar[torch.dtype] = torch.bfloat16

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.dtype)

    def convert_input(self, data: Any) -> Any:
        return cast_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return cast_floating(data, torch.float32)
