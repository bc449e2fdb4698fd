"""Fully sharded data parallel (FSDP2): each process holds only its shard of the parameters,
gradients and optimizer state, so a model that does not fit on one device still trains.

``torch.distributed.fsdp`` and ``torch.distributed.checkpoint`` are imported only when a model
is set up or a checkpoint is written, never by ``import trainwright``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from trainwright import _distributed_checkpoint as sharded
from trainwright._version import __version__
from trainwright._wrappers import FabricModule, FabricOptimizer
from trainwright.checkpoint import CheckpointIO, check_format, load_into, to_plain
from trainwright.strategies._materialize import materialize
from trainwright.strategies._random_streams import keep_per_rank_random_streams
from trainwright.strategies._unsharded_gradients import drop_unsharded_gradients, fsdp_params
from trainwright.strategies.environment import LaunchEnvironment
from trainwright.strategies.parallel import ParallelStrategy

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from trainwright._resolved_flags import Flags
    from trainwright.accelerators import Accelerator
    from trainwright.precision import Precision

#: ``wrap_policy``: which submodules become FSDP units of their own (see ``FSDPStrategy``).
WrapPolicy = Callable[[torch.nn.Module], bool] | type[torch.nn.Module] | Iterable[type[torch.nn.Module]] | None

STATE_DICT_TYPES = ("sharded", "full")
#: What ``param_dtype`` accepts, by name: the 16-bit types FSDP2 can gather float32 shards in.
PARAM_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: Precisions whose parameters are stored in another type already: gathering them in another
#: 16-bit type would be a second, lossy cast.
_STORED_IN_OTHER_TYPES = ("bf16-true", "64-true")


class FSDPStrategy(ParallelStrategy):
    """Shards the model over the processes with FSDP2 (``torch.distributed.fsdp.fully_shard``).

    The model is split into *units*, each sharded on its own: before a unit's forward (and
    again in backward) its parameters are all-gathered, and afterwards its gradients are
    reduce-scattered, so each process keeps ``1 / world_size`` of the parameters, gradients and
    optimizer state between uses. The units are chosen by ``wrap_policy``; the whole model is
    always the last, outermost unit.

    The default policy makes each child of an ``nn.ModuleList`` a unit (the blocks of a
    transformer, say), except for module lists nested inside such a child. Pass module classes
    (``wrap_policy={Block}``) or a function of the module (``wrap_policy=lambda m: ...``) to
    choose otherwise.

    The sharding runs over an explicit ``DeviceMesh`` of this process's device type: on a
    machine with GPUs, FSDP's own default mesh would be a CUDA one even for a CPU (gloo) job.

    Args:
        wrap_policy: which submodules become units: ``None`` (the default above), module
            classes, or a function returning ``True`` for a module that should be one.
        reshard_after_forward: free each unit's gathered parameters after its forward pass and
            gather them again in backward (``True``, least memory: ZeRO-3), or keep them until
            backward (``False``, one all-gather fewer per step: ZeRO-2). The outermost unit is
            never resharded after forward, since backward needs it first.
        cpu_offload: keep the sharded parameters, gradients and optimizer state in host memory,
            which makes the optimizer step run on the CPU. Only with ``accelerator='cuda'``.
        param_dtype: gather the float32 shards in this 16-bit type (``torch.bfloat16`` or
            ``torch.float16``, or their names), so that every unit computes with 16-bit
            parameters: half the all-gather traffic and gathered memory, at the cost of a 16-bit
            residual stream. The shards, the optimizer and the gradient reduction stay float32,
            and the model's output is cast back to float32. ``None`` (the default) gathers the
            parameters in the type they are stored in: the ``-mixed`` precisions then mean what
            they mean without FSDP (float32 parameters, with autocast around the forward pass).
        state_dict_type: what ``fabric.save`` writes: ``"sharded"`` (a directory that every process
            writes its own shards into, without gathering) or ``"full"`` (one file written by
            rank zero, in the same format as without FSDP). ``fabric.load`` reads either.
        timeout: how long a collective waits for the other processes before failing.
        environment: this process's place in the job; read from the environment by default.
        checkpoint_io: reads and writes checkpoint files.

    Raises:
        TypeError: ``wrap_policy`` is neither a function nor module classes.
        ValueError: ``state_dict_type`` is not ``"sharded"`` or ``"full"``, or ``param_dtype``
            is not a 16-bit floating-point type.
    """

    name = "fsdp"

    def __init__(
        self,
        *,
        wrap_policy: WrapPolicy = None,
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        param_dtype: torch.dtype | str | None = None,
        state_dict_type: str = "sharded",
        timeout: timedelta = timedelta(minutes=30),
        environment: LaunchEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
    ) -> None:
        super().__init__(timeout=timeout, environment=environment, checkpoint_io=checkpoint_io)
        if state_dict_type not in STATE_DICT_TYPES:
            raise ValueError(
                f"FSDPStrategy(): state_dict_type={state_dict_type!r} is not one of "
                f"{', '.join(map(repr, STATE_DICT_TYPES))}"
            )
        self.wrap_policy = _check_policy(wrap_policy)
        self.reshard_after_forward = bool(reshard_after_forward)
        self.cpu_offload = bool(cpu_offload)
        self.param_dtype = _check_param_dtype(param_dtype)
        self.state_dict_type = state_dict_type
        self._mesh: DeviceMesh | None = None
        self._sharded: list[torch.nn.Module] = []  # the models this strategy set up
        self._fsdp_params: list[Any] = []  # FSDP2's records of their parameters, for zero_grad

    def connect(self, flags: Flags, accelerator_cls: type[Accelerator], precision: Precision) -> None:
        """Take the accelerator and precision that ``Fabric`` resolved.

        Raises:
            ValueError: ``cpu_offload=True`` without ``accelerator='cuda'``, or ``param_dtype``
                with a precision that stores the parameters in another type than float32.
        """
        if self.cpu_offload and flags.accelerator != "cuda":
            raise ValueError(
                f"FSDPStrategy(cpu_offload=True) needs accelerator='cuda', not {flags.accelerator!r}: it moves "
                "the shards from device memory to host memory"
            )
        if self.param_dtype is not None and precision.name in _STORED_IN_OTHER_TYPES:
            raise ValueError(
                f"FSDPStrategy(param_dtype={self.param_dtype}) gathers float32 shards in 16 bits, but "
                f"precision={precision.name!r} stores the parameters in another type; use it with '32-true', "
                "'bf16-mixed' or '16-mixed'"
            )
        super().connect(flags, accelerator_cls, precision)

    def setup_environment(self) -> None:
        super().setup_environment()
        from torch.distributed.device_mesh import init_device_mesh

        # An explicit mesh of this process's device type: fully_shard's default mesh takes the
        # accelerator's type, CUDA on a GPU machine, which a CPU (gloo) job cannot use.
        self._mesh = init_device_mesh(self.root_device.type, (self.world_size,))

    @property
    def mesh(self) -> DeviceMesh:
        """The one-dimensional device mesh, over every process, that the model is sharded on."""
        if self._mesh is None:
            raise RuntimeError("FSDPStrategy has no device mesh before Fabric sets up its environment")
        return self._mesh

    # -- the model -------------------------------------------------------------------------------

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager:
        """Build on the meta device unless ``empty_init=False``: the model is materialised shard by shard."""
        return super().module_init_context(empty_init is not False)

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Shard ``module`` in place, unit by unit, bottom-up; return it.

        A model built on the meta device is materialised and initialised one unit at a time,
        just before the unit is sharded, so at most one unit is ever held whole. Each unit's
        tensors are broadcast from rank zero before sharding, so every process starts from
        the same weights, as under DDP. Each process keeps its own random streams, even when a
        model-level ``init_weights()`` draws into the sharded parameters.
        """
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        # The "-mixed" precisions need nothing here: their autocast runs around the forward pass,
        # over parameters gathered in float32, as without FSDP. Only an explicit param_dtype
        # gathers in 16 bits; the root then casts the output back, so the loss is float32.
        if self.param_dtype is None:
            mp_policy = root_policy = MixedPrecisionPolicy()
        else:
            mp_policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=torch.float32)
            root_policy = MixedPrecisionPolicy(
                param_dtype=self.param_dtype, reduce_dtype=torch.float32, output_dtype=torch.float32
            )
        offload_policy = CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy()
        units = [*_units(module, self.wrap_policy), module]
        unit_ids = {id(unit) for unit in units}

        def shard(unit: torch.nn.Module) -> None:
            self.precision.convert_module(unit)
            self._sync_from_rank_zero(unit, unit_ids)
            fully_shard(
                unit,
                mesh=self.mesh,
                reshard_after_forward=self.reshard_after_forward and unit is not module,
                mp_policy=root_policy if unit is module else mp_policy,
                offload_policy=offload_policy,
            )

        keep_per_rank_random_streams(self.mesh)  # before an init_weights() draws into the shards
        materialize(module, self.root_device, units, shard)
        self._sharded.append(module)
        self._fsdp_params.extend(fsdp_params(module))
        return module

    def _sync_from_rank_zero(self, unit: torch.nn.Module, unit_ids: set[int]) -> None:
        """Move the unit's own tensors to the device and give every process rank zero's values.

        The unit's own tensors are those outside the units nested in it, which were synced
        (and sharded) before it.
        """
        from torch.distributed.tensor import DTensor

        device = self.root_device
        tensors: dict[int, torch.Tensor] = {}  # by id: a tensor tied within the unit is sent once
        stack = [unit]
        while stack:
            submodule = stack.pop()
            stack.extend(child for child in submodule.children() if id(child) not in unit_ids)
            for parameter in submodule._parameters.values():
                if parameter is None or id(parameter) in tensors or isinstance(parameter, DTensor):
                    continue  # a DTensor is tied to a nested unit's parameter, which is sharded already
                if parameter.device != device:
                    parameter.data = parameter.data.to(device)  # in place: tied parameters stay tied
                tensors[id(parameter)] = parameter.detach()
            for key, buffer in submodule._buffers.items():
                if buffer is None or id(buffer) in tensors:
                    continue
                if buffer.device != device:
                    submodule._buffers[key] = buffer = buffer.to(device)
                tensors[id(buffer)] = buffer
        if self.world_size > 1:
            for tensor in tensors.values():
                dist.broadcast(tensor, src=0)

    def no_backward_sync(self, module: torch.nn.Module) -> AbstractContextManager:
        """Accumulate unsharded gradients locally; the next backward outside reduce-scatters their sum."""
        from torch.distributed.fsdp import FSDPModule

        return _without_gradient_sync([m for m in module.modules() if isinstance(m, FSDPModule)])

    def optimizer_zero_grad(self, optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        """Zero the sharded gradients and drop the unsharded ones that ``no_backward_sync`` accumulated.

        Without the second part, the gradients of a window dropped before its synchronising
        backward (a skipped step) would be reduce-scattered with the next window's.
        """
        held = (p for group in optimizer.param_groups for p in group["params"])
        drop_unsharded_gradients(self._fsdp_params, held, set_to_none)
        optimizer.zero_grad(set_to_none=set_to_none)

    def clip_gradients_norm(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float,
        norm_type: float,
        error_if_nonfinite: bool,
    ) -> torch.Tensor:
        """Clip by the norm of the whole gradient, combined over every process's shards."""
        from torch.distributed.tensor import DTensor

        self.precision.unscale_gradients(optimizer)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        shards = [g.to_local() for g in grads if isinstance(g, DTensor)]
        whole = [g for g in grads if not isinstance(g, DTensor)]  # the same on every process
        norm_type = float(norm_type)
        device = self.root_device
        if math.isinf(norm_type):
            total = _local_norm(shards, norm_type, device)
            dist.all_reduce(total, op=dist.ReduceOp.MAX)
            total = torch.maximum(total, _local_norm(whole, norm_type, device))
        else:
            total = _local_norm(shards, norm_type, device) ** norm_type
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            total = (total + _local_norm(whole, norm_type, device) ** norm_type) ** (1.0 / norm_type)
        if error_if_nonfinite and not torch.isfinite(total):  # reads the value only when asked to
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is non-finite, so it cannot be clipped"
            )
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # as torch.nn.utils.clip_grad_norm_
        for tensor in [*shards, *whole]:
            tensor.mul_(coefficient.to(tensor.device, tensor.dtype))
        return total

    def clip_gradients_value(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_val: float) -> None:
        from torch.distributed.tensor import DTensor

        self.precision.unscale_gradients(optimizer)
        for parameter in module.parameters():
            if parameter.grad is not None:
                grad = parameter.grad.to_local() if isinstance(parameter.grad, DTensor) else parameter.grad
                grad.clamp_(-clip_val, clip_val)

    # -- checkpoints -----------------------------------------------------------------------------

    def _model(self, obj: Any) -> torch.nn.Module | None:
        module = obj.module if isinstance(obj, FabricModule) else obj
        return next((m for m in self._sharded if m is module), None)

    def _optimizer_and_model(self, obj: Any) -> tuple[torch.optim.Optimizer, torch.nn.Module] | None:
        optimizer = obj.optimizer if isinstance(obj, FabricOptimizer) else obj
        if not isinstance(optimizer, torch.optim.Optimizer):
            return None
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for model in self._sharded:
            if any(id(p) in held for p in model.parameters()):
                return optimizer, model
        return None

    def object_state_dict(self, obj: Any, full: bool | None = None) -> Any:
        """The state of a sharded model or its optimizer: gathered to rank zero (full) or as shards."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        full = self.state_dict_type == "full" if full is None else full
        options = StateDictOptions(full_state_dict=full, cpu_offload=full)
        model = self._model(obj)
        if model is not None:
            return get_model_state_dict(model, options=options)
        pair = self._optimizer_and_model(obj)
        if pair is None:
            return super().object_state_dict(obj)
        optimizer, model = pair
        state = get_optimizer_state_dict(model, optimizer, options=options)
        return _keyed_by_index(state) if full else state

    def load_object_state(self, obj: Any, state: Any, strict: bool) -> None:
        """Load a full (plain tensors) or sharded (``DTensor`` s) state into a sharded model or its optimizer."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        full = not _holds_dtensors(state)
        model = self._model(obj)
        if model is not None:
            set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=full, strict=strict))
            return
        pair = self._optimizer_and_model(obj)
        if pair is None:
            load_into(obj, state, strict)
            return
        optimizer, model = pair
        if full:  # today's format, keyed by position: shard each tensor like its parameter
            optimizer.load_state_dict(_sharded_like_parameters(state, optimizer))
        else:
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(strict=strict))

    def save_checkpoint(self, path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
        """Write a directory of shards (``state_dict_type="sharded"``) or one file from rank zero."""
        if self.state_dict_type == "sharded":
            sharded.save_sharded(
                path,
                checkpoint,
                is_coordinator=self.is_global_zero,
                broadcast=self.broadcast,
                barrier=self.barrier,
                checkpoint_io=self.checkpoint_io,
            )
            return
        super().save_checkpoint(path, checkpoint)  # rank zero writes one file, replacing a directory too

    def load_checkpoint(self, path: str | os.PathLike, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Read a checkpoint file, or a directory of shards into the shape this job needs."""
        found = sharded.locate(path)
        if found.is_file():
            return self.checkpoint_io.load(found)

        def targets(skeleton: dict[str, Any]) -> dict[str, torch.Tensor]:
            check_format(skeleton, path, __version__)  # before reading shards laid out by another format
            wanted = {key: state[key] for key in (state or {}) if key in skeleton}
            shards = to_plain(wanted, state_dict=lambda obj: self.object_state_dict(obj, full=False))
            return sharded.split_dtensors(shards)[1]

        return sharded.load_sharded(found, self.checkpoint_io, targets)

    def __repr__(self) -> str:
        options = f"state_dict_type={self.state_dict_type!r}, reshard_after_forward={self.reshard_after_forward}"
        if self.param_dtype is not None:
            options += f", param_dtype={self.param_dtype}"
        if self._accelerator is None:
            return f"{type(self).__name__}({options})"
        return (
            f"{type(self).__name__}({options}, device={str(self.root_device)!r}, precision={self.precision.name!r}, "
            f"rank={self.global_rank}, world_size={self.world_size})"
        )


# -- helpers ------------------------------------------------------------------------------------------


def _check_param_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in PARAM_DTYPES:
        return PARAM_DTYPES[dtype]
    if dtype in PARAM_DTYPES.values():
        return dtype
    raise ValueError(
        f"FSDPStrategy(): param_dtype={dtype!r} is not None, torch.bfloat16 or torch.float16 "
        f"(or their names {', '.join(map(repr, PARAM_DTYPES))})"
    )


def _check_policy(policy: WrapPolicy) -> WrapPolicy:
    if policy is None:
        return None
    if isinstance(policy, type):
        policy = (policy,)
    elif callable(policy):
        return policy
    if isinstance(policy, Iterable) and not isinstance(policy, (str, bytes)):
        classes = tuple(policy)
        bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, torch.nn.Module))]
        if classes and not bad:
            return classes
    raise TypeError(
        f"FSDPStrategy(): wrap_policy={policy!r} is not None, nn.Module classes (e.g. {{Block}}) "
        "or a function that returns True for the modules to shard as units of their own"
    )


def _units(model: torch.nn.Module, policy: WrapPolicy) -> list[torch.nn.Module]:
    """The submodules ``policy`` makes units of, leaving out those without parameters."""
    if policy is None:
        chosen: list[torch.nn.Module] = []

        def visit(module: torch.nn.Module) -> None:
            if isinstance(module, torch.nn.ModuleList):
                chosen.extend(module)  # each block is a unit; lists inside a block are not searched
                return
            for child in module.children():
                visit(child)

        visit(model)
    elif isinstance(policy, tuple):
        chosen = [m for m in model.modules() if isinstance(m, policy)]
    else:
        chosen = [m for m in model.modules() if policy(m)]
    unique = {id(m): m for m in chosen if m is not model and next(m.parameters(), None) is not None}
    return list(unique.values())


@contextlib.contextmanager
def _without_gradient_sync(modules: list[torch.nn.Module]) -> Iterator[None]:
    for module in modules:
        module.set_requires_gradient_sync(False, recurse=False)
    try:
        yield
    finally:
        for module in modules:
            module.set_requires_gradient_sync(True, recurse=False)


def _local_norm(tensors: list[torch.Tensor], norm_type: float, device: torch.device) -> torch.Tensor:
    # In float32 at least (float64 for float64 gradients), as torch.nn.utils.clip_grad_norm_ computes it.
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    # A shard can be empty (a bias of 1 entry on 2 processes); the infinity norm of nothing is undefined.
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return torch.zeros((), device=device, dtype=dtype)
    norms = [torch.linalg.vector_norm(t, norm_type, dtype=dtype).to(device) for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def _holds_dtensors(value: Any) -> bool:
    return bool(sharded.split_dtensors(value)[1])


def _keyed_by_index(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter name (DCP's) -> by position, as ``Optimizer.state_dict()``."""
    if not state:  # ranks other than zero get nothing from a gathered state dict
        return state
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        positions = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": positions})
    return {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def _sharded_like_parameters(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A full optimizer state dict (keyed by position) with each tensor shaped like its parameter made a
    ``DTensor`` sharded as that parameter is; each process cuts its own shard, without communication."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def like(parameter: torch.Tensor, value: Any) -> Any:
        if isinstance(parameter, DTensor) and isinstance(value, torch.Tensor) and value.shape == parameter.shape:
            local = value.to(parameter.to_local().device)
            return distribute_tensor(local, parameter.device_mesh, parameter.placements, src_data_rank=None)
        return value

    sharded_state = {}
    for index, entry in state.get("state", {}).items():
        if not isinstance(index, int) or not 0 <= index < len(parameters):
            raise ValueError(
                f"the checkpoint's optimizer has state for parameter {index!r}, but this optimizer has "
                f"{len(parameters)} parameters"
            )
        sharded_state[index] = {key: like(parameters[index], value) for key, value in entry.items()}
    return {**state, "state": sharded_state}
