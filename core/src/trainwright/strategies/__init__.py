"""Strategies: one small class per way of running a job, and the registry of their names."""

from __future__ import annotations

from trainwright.strategies.base import Strategy
from trainwright.strategies.ddp import DDPStrategy
from trainwright.strategies.environment import LaunchEnvironment
from trainwright.strategies.fsdp import FSDPStrategy
from trainwright.strategies.parallel import ParallelStrategy
from trainwright.strategies.sharding import ShardedSampler, shard_dataloader
from trainwright.strategies.single_device import SingleDeviceStrategy

#: The registry: every name ``Fabric(strategy=...)`` accepts (besides ``"auto"``), and its class.
#: This is the one place that lists strategies; flag resolution and the docs' errors read it.
STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SingleDeviceStrategy, DDPStrategy, FSDPStrategy)
}


def strategy_class(name: str) -> type[Strategy]:
    """Return the class registered under a strategy name.

    Raises:
        ValueError: no strategy has this name.
    """
    try:
        return STRATEGY_CLASSES[name]
    except KeyError:
        raise ValueError(f"strategy={name!r} is not one of {', '.join(map(repr, STRATEGY_CLASSES))}") from None


def create_strategy(strategy: str | Strategy, name: str) -> Strategy:
    """The strategy ``Fabric`` runs with: the instance it was given, or a default one of the resolved ``name``."""
    return strategy if isinstance(strategy, Strategy) else strategy_class(name)()


__all__ = [
    "STRATEGY_CLASSES",
    "DDPStrategy",
    "FSDPStrategy",
    "LaunchEnvironment",
    "ParallelStrategy",
    "ShardedSampler",
    "SingleDeviceStrategy",
    "Strategy",
    "create_strategy",
    "shard_dataloader",
    "strategy_class",
]
