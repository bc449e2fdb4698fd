"""Seeding, and capturing the random number generators' state for an exact resume."""

from __future__ import annotations

import hashlib
import importlib.util
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

_MAX_SEED = 2**32 - 1  # NumPy's limit, the tightest of the generators seeded here


def _numpy() -> Any:
    # NumPy is optional: seed it when it is installed, without making it a dependency.
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    return numpy


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python's ``random``, NumPy (when installed) and torch on every device.

    Under several processes, pass each its global rank (``Fabric.seed_everything`` does), so
    that their random streams differ: dropout masks and random augmentations are then
    independent across processes, as they would be for one process reading the whole batch.
    Rank 0 is seeded with ``seed`` itself, so a single-process run draws exactly the numbers
    it always did; rank ``r > 0`` is seeded with a number derived from ``(seed, r)``.

    Data order is not affected: ``Fabric.setup_dataloaders`` shuffles every shard with rank 0's
    seed, and a sampler seeded by the seed and the epoch (as the generated ``EpochShuffle``)
    is the same on every rank.

    Args:
        seed: the run's seed.
        rank: this process's global rank.

    Returns:
        The seed this process's generators got: ``seed`` on rank 0.

    Raises:
        ValueError: ``seed`` is not an integer in ``[0, 2**32 - 1]``, or ``rank`` is not an
            integer of at least 0.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed={seed!r} is not an integer between 0 and {_MAX_SEED}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank={rank!r} is not an integer of at least 0")
    seed = _rank_seed(seed, rank)
    random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def _rank_seed(seed: int, rank: int) -> int:
    if rank == 0:
        return seed
    # A hash, not ``seed + rank``: that would give seed 1 on rank 0 the streams of seed 0 on rank 1.
    digest = hashlib.blake2b(f"trainwright-seed:{seed}:{rank}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def capture_rng_state() -> dict[str, Any]:
    """Return the state of every random number generator, as plain data for a checkpoint.

    On CUDA, only the current device's generator is recorded (``Fabric`` makes a process's own
    device the current one): a job may resume where fewer devices are visible.
    """
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    numpy = _numpy()
    if numpy is not None:
        kind, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = (kind, keys.tolist(), pos, has_gauss, cached)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` returned; generators it did not record are left alone.

    The CUDA state goes to the current device. A state captured by trainwright 0.5 or earlier
    holds one CUDA state per device visible then, and each device still visible gets its own;
    the states of devices that are gone are dropped.
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    numpy = _numpy()
    if numpy is not None and "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state((kind, numpy.asarray(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, torch.Tensor):
            torch.cuda.set_rng_state(cuda)
        else:  # one per device, as 0.5 saved: a resume with fewer devices visible keeps the first ones
            for index, device_state in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(device_state, index)


def select_rng_state(saved: Mapping[str, Any] | Sequence[Mapping[str, Any]], rank: int) -> dict[str, Any] | None:
    """Pick, from a checkpoint's random state, the one that process ``rank`` should restore.

    A trainer saves every rank's state as a list, ``fabric.all_gather_object(capture_rng_state())``,
    and on resume each rank restores its own entry. When the job resumes on another number of
    processes, the states of ranks that no longer exist are dropped, and a rank that the
    checkpoint has no state for gets ``None``: it keeps the streams that ``seed_everything(seed,
    rank)`` gave it, distinct from every other rank's. The run continues, but not exactly as
    it would have on the old number of processes.

    A single state (a mapping, as checkpoints of trainwright 0.4 hold: rank 0's) is rank 0's
    alone; the other ranks get ``None`` rather than a copy of rank 0's streams.

    Args:
        saved: one state per rank, in rank order, or a single state.
        rank: this process's global rank.

    Returns:
        The state to pass to ``restore_rng_state``, or ``None`` to keep the current streams.

    Raises:
        TypeError: ``saved`` is neither a mapping nor a list of mappings.
    """
    if isinstance(saved, Mapping):
        return dict(saved) if rank == 0 else None
    if isinstance(saved, (str, bytes)) or not isinstance(saved, Sequence):
        raise TypeError(
            f"select_rng_state(): expected one random state per rank (a list of dicts) or a single state (a dict), "
            f"got a {type(saved).__qualname__}"
        )
    if rank >= len(saved):
        return None
    state = saved[rank]
    if not isinstance(state, Mapping):
        raise TypeError(
            f"select_rng_state(): the state of rank {rank} is a {type(state).__qualname__}, "
            "not a dict as capture_rng_state() returns"
        )
    return dict(state)
