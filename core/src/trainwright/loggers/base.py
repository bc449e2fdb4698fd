"""The logger interface, and the conversion of hyperparameters to what every tracker stores."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import Any

STATUSES = ("success", "failed", "interrupted")


class Logger:
    """Receives what ``Fabric`` logs, on global rank zero only.

    Only ``log_metrics`` is required; every other method has a default that does nothing, so a
    logger implements what its destination supports. ``Fabric`` calls them as follows:

    - ``log_metrics`` from ``Fabric.log``/``log_dict``, with values already Python numbers;
    - ``log_hyperparams`` from ``Fabric.log_hyperparams``, flattened to dotted names;
    - ``log_artifact`` from ``Fabric.log_artifact``, with a file or a folder that exists;
    - ``flush`` from ``Fabric.save``, before the checkpoint is written;
    - ``finalize`` from ``Fabric.teardown`` (and on leaving ``with Fabric(...)``).

    A trainer that resumes puts ``state_dict()`` into its checkpoints, calls ``load_state_dict``
    on resume before anything is logged, then ``rewind(step)``. A logger that opens a run on a
    tracking service should therefore open it on first use, never in ``__init__``: on the other
    ranks of a distributed job nothing is ever logged, and nothing must be opened.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``metrics`` at ``step``; ``None`` means the step after the last one logged."""
        raise NotImplementedError

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings: a flat mapping of names to ``bool``, ``int``, ``float`` or
        ``str`` (what ``Fabric.log_hyperparams`` passes). Called again on resume."""

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Attach a file or a folder (a plot, a profiler summary, a checkpoint) to the run.

        Loggers whose files already live in the run directory ignore this.
        """

    def rewind(self, step: int) -> None:
        """Forget what was logged after ``step``: a run resumed from a checkpoint taken there
        logs those steps again. Loggers that cannot forget ignore this."""

    def flush(self) -> None:
        """Write everything logged so far, or hand it to a background sender. ``Fabric.save``
        calls this before it writes a checkpoint, so that a checkpoint never counts steps whose
        metrics exist only in memory. Never wait on a remote service here: a tracker that is
        down must not hold up (or fail) a checkpoint."""

    def finalize(self, status: str = "success") -> None:
        """Flush and close. ``status`` is how the run ended: ``"success"``, ``"failed"`` or
        ``"interrupted"`` (stopped to be resumed later). Logging again afterwards reopens where
        it left off."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue this logger's run (e.g. a tracker's run id), as
        plain data for a checkpoint. Empty by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run described by ``state`` (from ``state_dict``). Called before anything
        is logged."""


def flatten_params(params: Any) -> dict[str, bool | int | float | str]:
    """``params`` (a mapping or a dataclass instance) as one flat mapping of loggable values.

    Nested mappings and dataclasses become dotted names (``{"optim": {"lr": 0.1}}`` gives
    ``{"optim.lr": 0.1}``). ``bool``, ``int``, ``float`` and ``str`` stay as they are; an enum
    becomes its name, and everything else its ``str`` (paths, ``None``, lists, tuples).

    Raises:
        TypeError: ``params`` is neither a mapping nor a dataclass instance.
    """
    flat: dict[str, bool | int | float | str] = {}
    _flatten(_as_mapping(params, "log_hyperparams(): params"), "", flat)
    return flat


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"{what} must be a mapping or a dataclass instance, got {type(value).__qualname__}")


def _flatten(mapping: Mapping[Any, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        nested = isinstance(value, Mapping) and bool(value)
        if nested or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            _flatten(_as_mapping(value, name), f"{name}.", out)
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, enum.Enum):
            out[name] = value.name
        else:
            out[name] = str(value)
