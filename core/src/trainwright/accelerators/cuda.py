"""The CUDA accelerator."""

from __future__ import annotations

import torch

from trainwright.accelerators.base import Accelerator


class CUDAAccelerator(Accelerator):
    """Runs on one NVIDIA GPU, ``cuda:<index>``."""

    name = "cuda"

    def setup_device(self) -> None:
        # Without this, kernels and NCCL communicators of later calls default to cuda:0.
        torch.cuda.set_device(self.device)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)
