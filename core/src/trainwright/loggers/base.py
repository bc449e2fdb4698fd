"""The logger interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Logger:
    """Receives the metrics of ``Fabric.log``/``log_dict``, on global rank zero only.

    Values arrive as Python numbers (tensors are converted by ``Fabric``).
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at ``step``; ``None`` means the step after the last one logged."""
        raise NotImplementedError

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings. Loggers without a place for them ignore this."""

    def rewind(self, step: int) -> None:
        """Forget what was logged after ``step``: a run resumed from a checkpoint taken there
        logs those steps again. Loggers that cannot forget ignore this."""

    def finalize(self) -> None:
        """Flush and close; logging again afterwards reopens where it left off."""
