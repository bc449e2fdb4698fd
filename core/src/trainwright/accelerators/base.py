"""The accelerator interface: one device type, and what differs between device types."""

from __future__ import annotations

from typing import ClassVar

import torch


class Accelerator:
    """A device that a process computes on.

    Subclasses set ``name`` and override what differs for their device type. Add a capability
    here, with a sensible default, rather than branching on the device type in ``Fabric``.

    Args:
        index: the device index, e.g. 1 for ``cuda:1``; ignored where a type has one device.
    """

    name: ClassVar[str] = ""

    def __init__(self, index: int = 0) -> None:
        self.index = index

    @property
    def device(self) -> torch.device:
        """The ``torch.device`` that tensors and modules are moved to."""
        return torch.device(self.name, self.index)

    def setup_device(self) -> None:
        """Make this device the process's current one; called once, before anything moves."""

    def synchronize(self) -> None:
        """Wait until all work queued on the device has finished (for honest timings)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={str(self.device)!r})"
