"""The single-device strategy: one process, one device."""

from __future__ import annotations

from trainwright.strategies.base import Strategy


class SingleDeviceStrategy(Strategy):
    """Everything on one device in one process: the base class's behaviour, named."""

    name = "single"
