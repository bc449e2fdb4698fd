"""The strategy interface: where the model lives and how the processes of a job cooperate."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from trainwright._distributed_checkpoint import is_sharded_checkpoint, locate, save_file
from trainwright.checkpoint import CheckpointIO, load_into
from trainwright.precision.base import Precision
from trainwright.strategies._materialize import materialize
from trainwright.strategies._optimizers import parameter_names, remap_parameters

if TYPE_CHECKING:
    from trainwright._resolved_flags import Flags
    from trainwright.accelerators import Accelerator


class Strategy:
    """A way of running the training loop on one or more processes.

    The defaults here are those of a job with one process: collectives return their input, and
    there is no gradient synchronisation to suspend. A multi-process strategy overrides them.
    ``Fabric`` only ever calls these methods; it never asks which strategy it has, so a new
    capability belongs here, with a default, rather than in a branch of ``Fabric``.

    A strategy is built with its own options only, e.g. ``DDPStrategy(find_unused_parameters=True)``;
    ``Fabric`` then connects it to the accelerator and precision that its flags resolve to.

    Args:
        checkpoint_io: reads and writes checkpoint files.
    """

    #: The name ``Fabric(strategy=...)`` accepts; the registry in ``trainwright.strategies`` is keyed by it.
    name: ClassVar[str] = ""
    #: Whether the strategy runs one process per device, and so may span several devices.
    distributed: ClassVar[bool] = False

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        self.checkpoint_io = checkpoint_io or CheckpointIO()
        self._accelerator: Accelerator | None = None
        self._precision: Precision | None = None

    # -- connecting to a Fabric ------------------------------------------------------------------

    @classmethod
    def check_flags(cls, accelerator: str, precision: str) -> None:
        """Refuse an accelerator or precision this strategy cannot run; a pure check on resolved names.

        Raises:
            ValueError: the combination is not supported; the message says what would be.
        """
        if cls.distributed and accelerator == "mps":
            raise ValueError(f"strategy={cls.name!r} is not supported on mps, which has a single device; use devices=1")

    def connect(self, flags: Flags, accelerator_cls: type[Accelerator], precision: Precision) -> None:
        """Take the accelerator and precision that ``Fabric`` resolved; called once, by ``Fabric``.

        Raises:
            RuntimeError: the strategy is already connected to another ``Fabric``.
            ValueError: the flags do not fit this strategy (see ``select_device``).
        """
        if self._accelerator is not None:
            raise RuntimeError(
                f"this {type(self).__name__} already belongs to a Fabric; create a new one for each Fabric"
            )
        self._accelerator = accelerator_cls(self.select_device(flags))
        self._precision = precision

    def select_device(self, flags: Flags) -> int:
        """The index of the device this process computes on."""
        return flags.devices[0]

    @property
    def accelerator(self) -> Accelerator:
        """The device this process computes on."""
        if self._accelerator is None:
            raise RuntimeError(f"{type(self).__name__} is not connected yet: pass it to Fabric(strategy=...)")
        return self._accelerator

    @property
    def precision(self) -> Precision:
        """The numeric format of the forward and backward passes."""
        if self._precision is None:
            raise RuntimeError(f"{type(self).__name__} is not connected yet: pass it to Fabric(strategy=...)")
        return self._precision

    # -- devices and processes -------------------------------------------------------------------

    @property
    def root_device(self) -> torch.device:
        return self.accelerator.device

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    def setup_environment(self) -> None:
        """Prepare the device (and, for several processes, the process group)."""
        self.accelerator.setup_device()

    # -- models and optimizers -------------------------------------------------------------------

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager:
        """The context ``Fabric.init_module`` builds a model in.

        Args:
            empty_init: ``True`` builds on the meta device (no memory; ``setup`` materialises and
                initialises the model); ``False`` builds on this process's device; ``None``
                chooses what suits the strategy (here: the device).
        """
        return torch.device("meta") if empty_init else torch.device(self.root_device)

    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[torch.optim.Optimizer]]:
        """Set ``module`` up, then point ``optimizers`` at the parameters it now has.

        Setting up may replace parameter objects (materialising a meta-device model, or sharding
        it); an optimizer built from the old ones has its parameter groups remapped by name.

        Returns:
            What the forward pass should call, and the optimizers.

        Raises:
            ValueError: an optimizer has state (it has stepped) for a parameter that was replaced.
        """
        names = parameter_names(module)
        forward_module = self.setup_module(module)
        for index, optimizer in enumerate(optimizers):
            remap_parameters(optimizer, names, module, where=f"setup(): optimizer {index}")
        return forward_module, [self.setup_optimizer(optimizer) for optimizer in optimizers]

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Materialise (if built on the meta device), cast and move ``module``; return what the forward pass calls."""
        materialize(module, self.root_device)
        return self.precision.convert_module(module).to(self.root_device)

    def setup_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def process_dataloader(
        self, dataloader: torch.utils.data.DataLoader, evaluation: bool = False
    ) -> torch.utils.data.DataLoader:
        """Adapt a data loader to this strategy (e.g. give each process its own shard).

        With ``evaluation``, every sample must be read exactly once across the processes, even
        if their shards then differ in length.
        """
        return dataloader

    # -- the step --------------------------------------------------------------------------------

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.precision.backward(tensor, *args, **kwargs)

    def step_method(self, name: str) -> Callable[..., Any] | None:
        """What ``Fabric`` calls on every step for ``name`` (``"backward"`` or ``"optimizer_step"``), with no
        Python call that only forwards: ``self.<name>``, or the precision's own method where this strategy
        only forwards to it, or ``None`` where the precision too only forwards (to the tensor's
        ``backward``, to the optimizer's ``step``), as every precision but 16-mixed does."""
        if getattr(type(self), name) is not getattr(Strategy, name):
            return getattr(self, name)
        if getattr(type(self.precision), name) is not getattr(Precision, name):
            return getattr(self.precision, name)
        return None

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    def optimizer_zero_grad(self, optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        """Zero the gradients of ``optimizer``'s parameters, wherever the strategy keeps them."""
        optimizer.zero_grad(set_to_none=set_to_none)

    def clip_gradients_norm(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float,
        error_if_nonfinite: bool,
    ) -> torch.Tensor:
        self.precision.unscale_gradients(optimizer)
        return torch.nn.utils.clip_grad_norm_(
            module.parameters(), max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        self.precision.unscale_gradients(optimizer)
        torch.nn.utils.clip_grad_value_(module.parameters(), clip_val)

    def no_backward_sync(self, module: torch.nn.Module) -> AbstractContextManager:
        """Skip gradient synchronisation in backward passes inside the context."""
        return contextlib.nullcontext()

    # -- collectives -----------------------------------------------------------------------------

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process has reached this point."""

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Return process ``src``'s ``obj`` on every process."""
        return obj

    def all_reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        """Reduce ``tensor`` over all processes with ``op`` (validated by the caller)."""
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack every process's ``tensor`` along a new first dimension of size ``world_size``."""
        return tensor.unsqueeze(0)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Return every process's ``obj`` (picklable), as a list indexed by global rank."""
        return [obj]

    # -- checkpoints -----------------------------------------------------------------------------

    def object_state_dict(self, obj: Any) -> Any:
        """What a checkpoint stores for ``obj``, an object with ``state_dict`` (a model, an optimizer, ...)."""
        return obj.state_dict()

    def load_object_state(self, obj: Any, state: Any, strict: bool) -> None:
        """Restore what ``object_state_dict`` returned for ``obj`` into it."""
        load_into(obj, state, strict)

    def save_checkpoint(self, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
        """Write ``checkpoint`` (plain data) from global rank zero only; the other ranks wait for it.

        What is at ``path`` is replaced atomically, a sharded checkpoint's directory (written
        under FSDP, before a change of strategy) too.
        """
        if self.is_global_zero:
            save_file(path, checkpoint, self.checkpoint_io)
        self.barrier("save_checkpoint")

    def load_checkpoint(self, path: str | os.PathLike, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Read what ``save_checkpoint`` wrote, as plain data; ``state`` holds the objects it will restore.

        Raises:
            FileNotFoundError: ``path`` is a folder that holds no checkpoint.
            ValueError: ``path`` is a directory: a sharded checkpoint, which only FSDP reads.
        """
        if not os.path.exists(path):  # a save that replaced a directory was killed between its renames?
            path = locate(path)  # the newest complete checkpoint beside it, or FileNotFoundError
        if os.path.isdir(path):
            if not is_sharded_checkpoint(path):
                raise FileNotFoundError(f"checkpoint {str(path)!r} is a folder that holds no checkpoint")
            raise ValueError(
                f"load(): {str(path)!r} is a directory, a sharded checkpoint written under FSDP; load it with "
                "strategy='fsdp' (one process will do), or save it with FSDPStrategy(state_dict_type='full')"
            )
        return self.checkpoint_io.load(path)

    def teardown(self) -> None:
        """Release what ``setup_environment`` acquired."""

    def __repr__(self) -> str:
        if self._accelerator is None:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(device={str(self.root_device)!r}, precision={self.precision.name!r})"
