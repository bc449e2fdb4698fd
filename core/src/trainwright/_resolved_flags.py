"""``Flags``, the resolved flags: plain data that the strategies receive and ``flags.py`` produces.

It lives apart from ``flags.py`` because resolving flags needs the strategies (their names and
classes), while the strategies need only this record: keeping it here keeps the strategies
below flag resolution, with no import in the other direction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flags:
    """The resolved, validated flags that ``Fabric`` builds its components from.

    Attributes:
        accelerator: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        devices: indices of the devices this job uses (for cpu, one index per process).
        strategy: the name of the strategy, a key of ``trainwright.strategies.STRATEGY_CLASSES``
            (or of the ``Strategy`` instance given).
        precision: one of ``trainwright.flags.PRECISIONS``.
    """

    accelerator: str
    devices: tuple[int, ...]
    strategy: str
    precision: str
