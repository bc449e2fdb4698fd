"""The CPU accelerator."""

from __future__ import annotations

import torch

from trainwright.accelerators.base import Accelerator


class CPUAccelerator(Accelerator):
    """Runs on the host CPU, where work is synchronous and there is nothing to select."""

    name = "cpu"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")
