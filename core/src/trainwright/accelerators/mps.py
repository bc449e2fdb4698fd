"""The Apple Metal (MPS) accelerator."""

from __future__ import annotations

import torch

from trainwright.accelerators.base import Accelerator


class MPSAccelerator(Accelerator):
    """Runs on an Apple-silicon GPU through Metal; there is only ever one."""

    name = "mps"

    @property
    def device(self) -> torch.device:
        return torch.device("mps")

    def synchronize(self) -> None:
        torch.mps.synchronize()
