"""Strategies: one small class per way of running a job."""

from trainwright.strategies.base import Strategy
from trainwright.strategies.ddp import DDPStrategy
from trainwright.strategies.environment import LaunchEnvironment
from trainwright.strategies.sharding import ShardedSampler, shard_dataloader
from trainwright.strategies.single_device import SingleDeviceStrategy

STRATEGY_CLASSES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SingleDeviceStrategy, DDPStrategy)}


def strategy_class(name: str) -> type[Strategy]:
    """Return the class for a resolved strategy name.

    Raises:
        ValueError: no strategy has this name.
    """
    try:
        return STRATEGY_CLASSES[name]
    except KeyError:
        raise ValueError(f"strategy={name!r} is not one of {', '.join(map(repr, STRATEGY_CLASSES))}") from None


__all__ = [
    "STRATEGY_CLASSES",
    "DDPStrategy",
    "LaunchEnvironment",
    "ShardedSampler",
    "SingleDeviceStrategy",
    "Strategy",
    "shard_dataloader",
    "strategy_class",
]
