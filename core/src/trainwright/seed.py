"""Seeding, and capturing the random number generators' state for an exact resume."""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import torch

_MAX_SEED = 2**32 - 1  # NumPy's limit, the tightest of the generators seeded here


def _numpy() -> Any:
    # NumPy is optional: seed it when it is installed, without making it a dependency.
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    return numpy


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy (when installed) and torch on every device.

    Returns:
        The seed, for logging.

    Raises:
        ValueError: ``seed`` is not an integer in ``[0, 2**32 - 1]``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed={seed!r} is not an integer between 0 and {_MAX_SEED}")
    random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def capture_rng_state() -> dict[str, Any]:
    """Return the state of every random number generator, as plain data for a checkpoint."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    numpy = _numpy()
    if numpy is not None:
        kind, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (kind, keys.tolist(), pos, has_gauss, cached)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` returned; generators it did not record are left alone."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    numpy = _numpy()
    if numpy is not None and "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, numpy.asarray(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
