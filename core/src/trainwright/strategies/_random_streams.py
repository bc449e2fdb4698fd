"""Keeping each process's own random streams when random numbers are drawn on sharded tensors.

The first random operation on a ``DTensor`` (say, a model's ``init_weights()`` drawing into
sharded parameters) makes torch create its DTensor random-number tracker, and by default that
tracker broadcasts rank 0's device generator state to every rank. From then on every process
draws the same numbers: the same dropout masks on every rank, against ``seed_everything``'s
rule that each rank has streams of its own. A tracker created beforehand without that
broadcast is used instead, and the processes keep their own states.

Only accelerators with DTensor random support (CUDA and the like) have a tracker; on the CPU
DTensor random operations draw from each process's own generator anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


def keep_per_rank_random_streams(mesh: DeviceMesh) -> None:
    """Create torch's DTensor random-number tracker for ``mesh`` without copying rank 0's state to all.

    Does nothing when a tracker exists already (it was made by the user, or by an earlier
    model) or when the mesh's device has no DTensor random support.
    """
    # torch has no public way to do this: ``torch.distributed.tensor.random.manual_seed`` makes
    # the same tracker, but also seeds every generator with one seed, on every rank alike.
    from torch.distributed.tensor import _random

    if getattr(_random, "_rng_tracker", None) is not None or mesh.device_type == "cpu":
        return
    if _random.is_rng_supported_mesh(mesh):
        _random._rng_tracker = _random.OffsetBasedRNGTracker(mesh, run_state_sync=False)
