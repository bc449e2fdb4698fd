"""Where training stands: the epoch, the batch within it and the optimizer step.

A checkpoint stores a ``Position`` whole, as its ``"trainer"`` entry, so a resumed run picks up
at the next batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass
class Position:
    """Where training stands, counted in what is done.

    Attributes:
        epoch: the current epoch (0 for the first).
        batch_idx: the number of the current epoch's batches already trained.
        global_step: the number of optimizer steps taken.
    """

    epoch: int = 0
    batch_idx: int = 0
    global_step: int = 0

    def next_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch, self.batch_idx = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """The checkpoint's ``"trainer"`` entry: ``{"epoch": ..., "batch_idx": ..., "global_step": ...}``."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Go back to where ``state`` (what ``state_dict`` returned) stood."""
        self.epoch, self.batch_idx, self.global_step = state["epoch"], state["batch_idx"], state["global_step"]


def forwarded(unit: str, name: str) -> property:
    """A property for ``<unit>.<name>``, read and written through the object that holds ``unit``.

    ``trainer.epoch`` is ``trainer.position.epoch``: callbacks keep the trainer's attributes,
    while the state lives in the unit that carries it.
    """
    return property(
        lambda self: getattr(getattr(self, unit), name),
        lambda self, value: setattr(getattr(self, unit), name, value),
    )
