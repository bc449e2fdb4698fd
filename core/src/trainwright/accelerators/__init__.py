"""Accelerators: one small class per device type."""

from trainwright.accelerators.base import Accelerator
from trainwright.accelerators.cpu import CPUAccelerator
from trainwright.accelerators.cuda import CUDAAccelerator
from trainwright.accelerators.mps import MPSAccelerator

ACCELERATOR_CLASSES: dict[str, type[Accelerator]] = {
    cls.name: cls for cls in (CPUAccelerator, CUDAAccelerator, MPSAccelerator)
}

__all__ = ["ACCELERATOR_CLASSES", "Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator"]
