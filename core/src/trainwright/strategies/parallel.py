"""What every multi-process strategy shares: one process per device, one process group, collectives."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from trainwright.checkpoint import CheckpointIO
from trainwright.strategies.base import Strategy
from trainwright.strategies.environment import LaunchEnvironment
from trainwright.strategies.sharding import shard_dataloader

if TYPE_CHECKING:
    from trainwright._resolved_flags import Flags

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class ParallelStrategy(Strategy):
    """Runs one copy of the loop per process, as ``torchrun`` started them, over one process group.

    The process group uses nccl on CUDA and gloo on the CPU. Each process computes on the
    device of its local rank and reads its own shard of every data loader. Subclasses decide
    what happens to the model (``DDPStrategy`` replicates it, ``FSDPStrategy`` shards it).

    Without a launcher (no ``WORLD_SIZE`` in the environment) the job is this process alone,
    with an in-memory store: useful for testing the distributed code path on one machine.

    Args:
        timeout: how long a collective waits for the other processes before failing, so that
            a job whose peer died ends with an error instead of hanging.
        environment: this process's place in the job; read from the environment variables
            when ``Fabric`` connects the strategy, by default.
        checkpoint_io: reads and writes checkpoint files.

    Raises:
        TypeError: ``timeout`` is not a ``timedelta``.
    """

    distributed = True

    def __init__(
        self,
        *,
        timeout: timedelta = timedelta(minutes=30),
        environment: LaunchEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
    ) -> None:
        super().__init__(checkpoint_io)
        if not isinstance(timeout, timedelta):
            raise TypeError(f"timeout={timeout!r} must be a datetime.timedelta, e.g. timedelta(minutes=10)")
        self.timeout = timeout
        self._environment = environment
        self._owns_group = False

    @property
    def environment(self) -> LaunchEnvironment:
        """This process's place in the job."""
        if self._environment is None:
            self._environment = LaunchEnvironment.from_environ()
        return self._environment

    def select_device(self, flags: Flags) -> int:
        """Pick this process's device: ``devices[LOCAL_RANK]``, or ``cuda:LOCAL_RANK`` for ``devices='auto'``.

        Raises:
            ValueError: more devices were asked for than processes were launched, or the
                launcher started more processes on this node than there are devices.
        """
        env = self.environment
        devices = flags.devices
        if len(devices) > 1 and len(devices) != env.local_world_size:
            if not env.launched:
                raise ValueError(
                    f"devices={len(devices)} with strategy={self.name!r} needs one process per device; start them "
                    f"with `torchrun --nproc-per-node={len(devices)} <your script or -m module> ...`"
                )
            raise ValueError(
                f"devices={len(devices)} does not match the {env.local_world_size} processes torchrun started "
                "on this node; pass --nproc-per-node equal to devices, or devices='auto'"
            )
        if len(devices) > 1:
            return devices[env.local_rank]
        if env.world_size > 1 and flags.accelerator == "cuda":
            if env.local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK={env.local_rank} has no GPU: this node has {torch.cuda.device_count()} CUDA "
                    "devices; start at most that many processes per node"
                )
            return env.local_rank
        return devices[0]

    @property
    def global_rank(self) -> int:
        return self.environment.rank

    @property
    def local_rank(self) -> int:
        return self.environment.local_rank

    @property
    def world_size(self) -> int:
        return self.environment.world_size

    @property
    def backend(self) -> str:
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def setup_environment(self) -> None:
        """Select the device and join (or create) the process group.

        Raises:
            RuntimeError: ``torch.distributed`` is not available in this build of torch, or a
                process group that already exists has a different world size.
        """
        super().setup_environment()
        if not dist.is_available():
            raise RuntimeError(f"strategy={self.name!r} needs torch.distributed, which this build of torch lacks")
        env = self.environment
        if dist.is_initialized():  # someone else made it; use it, and leave its teardown to them
            if dist.get_world_size() != env.world_size:
                raise RuntimeError(
                    f"a process group of {dist.get_world_size()} processes exists, but WORLD_SIZE={env.world_size}"
                )
            return
        if env.launched:
            # torchrun's agent holds the store at MASTER_ADDR:MASTER_PORT; env:// joins it.
            dist.init_process_group(self.backend, init_method="env://", timeout=self.timeout)
        else:
            dist.init_process_group(self.backend, store=dist.HashStore(), rank=0, world_size=1, timeout=self.timeout)
        self._owns_group = True

    def process_dataloader(
        self, dataloader: torch.utils.data.DataLoader, evaluation: bool = False
    ) -> torch.utils.data.DataLoader:
        # Every process must shuffle alike: they all take rank zero's seed. Training shards are
        # padded to equal length; evaluation shards are not, so that no sample counts twice.
        seed = self.broadcast(torch.initial_seed() % 2**32)
        return shard_dataloader(dataloader, self.world_size, self.global_rank, seed, pad=not evaluation)

    def barrier(self, name: str | None = None) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        result = tensor.detach().clone()  # the caller's tensor is left as it was
        dist.all_reduce(result, op=_REDUCE_OPS[op])
        return result / self.world_size if op == "mean" else result

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    def all_gather_object(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def teardown(self) -> None:
        """Destroy the process group this strategy created (not one it found).

        First it sleeps for 50 ms, which lets go of the GIL: a backend's worker thread frees
        the tensors of a finished collective only after the caller's ``wait()`` has returned,
        and it needs the GIL to do so. Without that pause, a script that ends right after its
        last collective can reach interpreter shutdown while a gloo worker still waits for the
        GIL; Python then ends that thread in the middle of a C++ destructor and the process
        aborts ("terminate called without an active exception", exit code -6), after a run
        that had finished.
        """
        if self._owns_group and dist.is_initialized():
            time.sleep(0.05)  # the GIL is free for threads that wait for it (see above)
            dist.destroy_process_group()
        self._owns_group = False

    def __repr__(self) -> str:
        if self._accelerator is None:
            return f"{type(self).__name__}()"
        return (
            f"{type(self).__name__}(device={str(self.root_device)!r}, precision={self.precision.name!r}, "
            f"rank={self.global_rank}, world_size={self.world_size})"
        )
