"""Strategies: one small class per way of running a job."""

from trainwright.strategies.base import Strategy
from trainwright.strategies.single_device import SingleDeviceStrategy

STRATEGY_CLASSES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SingleDeviceStrategy,)}


def strategy_class(name: str) -> type[Strategy]:
    """Return the class for a resolved strategy name.

    Raises:
        NotImplementedError: the strategy is a valid value that this release cannot run yet.
    """
    try:
        return STRATEGY_CLASSES[name]
    except KeyError:
        raise NotImplementedError(
            f"strategy={name!r} is not available in this release of trainwright; "
            f"available: {', '.join(map(repr, STRATEGY_CLASSES))}. Run on one device (devices=1)."
        ) from None


__all__ = ["STRATEGY_CLASSES", "SingleDeviceStrategy", "Strategy", "strategy_class"]
