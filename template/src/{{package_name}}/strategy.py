"""How a run spreads over processes: the strategy that ``config.strategy`` names, with its options.

``ddp`` keeps a whole copy of the model on every process and averages the gradients; ``fsdp``
(FSDP2) shards the parameters, gradients and optimizer state across the processes, for models
that do not fit on one device with their optimizer. Both run under ``torchrun`` (scripts/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from trainwright import Fabric
from trainwright.config import ConfigError
from trainwright.strategies import FSDPStrategy, Strategy

from .task_checks import task_mistakes

if TYPE_CHECKING:
    from .config import Config
    from .task import Task


@dataclass
class FSDPConfig:
    """Settings of ``strategy="fsdp"``; set as ``--fsdp.<field>=...`` or an ``[fsdp]`` table.

    The model is sharded one unit per block (each module of an ``nn.ModuleList``, such as a
    transformer's blocks), then the rest as one unit: see ``FSDPStrategy`` to shard otherwise.
    """

    reshard_after_forward: bool = field(
        default=True, metadata={"help": "free a unit's gathered weights after its forward: less memory, more traffic"}
    )
    cpu_offload: bool = field(default=False, metadata={"help": "keep the shards in host memory between uses"})
    param_dtype: Literal["bfloat16", "float16"] | None = field(
        default=None,
        metadata={
            "help": "gather the float32 shards in this type, so that whole layers (the residual stream too) "
            "compute in 16 bits: half the traffic (none: --precision=bf16-mixed autocasts over float32 weights, "
            "as under ddp)"
        },
    )
    meta_init: bool = field(
        default=False,
        metadata={
            "help": "build the model on the meta device and initialise it shard by shard, for models too big for "
            "one device (a model-level init_weights() then draws on each process: not DDP's weights)"
        },
    )
    checkpoint: Literal["sharded", "full"] = field(
        default="sharded",
        metadata={"help": "sharded: a folder that each process writes its part of; full: one file from process 0"},
    )


def strategy_for(config: Config) -> str | Strategy:
    """What ``Fabric(strategy=...)`` gets: the name, or for FSDP a strategy carrying its settings."""
    if config.strategy != "fsdp":
        return config.strategy
    c = config.fsdp
    return FSDPStrategy(
        reshard_after_forward=c.reshard_after_forward,
        cpu_offload=c.cpu_offload,
        param_dtype=c.param_dtype,
        state_dict_type=c.checkpoint,
    )


def checkpoint_activations(model: torch.nn.Module, classes: tuple[type[torch.nn.Module], ...] | None) -> None:
    """Recompute the activations of the chosen submodules in backward instead of keeping them, in place.

    ``classes`` chooses the instances of those module classes (a task's ``checkpointed_modules``);
    ``None``, each child of an ``nn.ModuleList`` (a transformer's blocks). The wrapper's prefix
    never reaches a checkpoint's keys, so a checkpoint loads with the setting on or off.

    Raises:
        ConfigError: nothing in the model is chosen.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    if classes is None:
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
        chosen = {id(child) for modules in lists for child in modules}
    else:
        chosen = {id(m) for m in model.modules() if isinstance(m, tuple(classes))}
    if not chosen:
        names = "nn.ModuleList" if classes is None else ", ".join(c.__name__ for c in classes)
        raise ConfigError(
            f"activation_checkpointing is on, but the model has no {names} to checkpoint; name the module classes "
            "in the task (checkpointed_modules = (Block,)) or turn it off"
        )
    apply_activation_checkpointing(model, check_fn=lambda module: id(module) in chosen)


def setup_model(fabric: Fabric, config: Config, task: Task) -> torch.nn.Module:
    """The task's model on this run's devices: built, set up by the strategy, and compiled if ``config.compile``.

    Raises:
        ConfigError: the task raised ``ValueError`` or ``FileNotFoundError`` while building it, or
            ``sync_batchnorm`` asks for what the device cannot do (see ``sync_batchnorm``).
    """
    meta = config.strategy == "fsdp" and config.fsdp.meta_init  # nothing allocated until it is sharded
    with fabric.init_module(empty_init=meta), task_mistakes("its model"):
        model = task.build_model()
    if config.activation_checkpointing:  # before sharding, so that FSDP's units are the checkpointed modules
        checkpoint_activations(model, getattr(task, "checkpointed_modules", None))
    if config.sync_batchnorm and fabric.world_size > 1:
        model = sync_batchnorm(model, fabric.device)
    if config.compile:
        # Fabric compiles what the strategy makes of the model; the checkpoint keeps the plain model's keys.
        model = torch.compile(model)
    return fabric.setup(model)


# The devices that torch's SyncBatchNorm computes on; it has no CPU (nor MPS) kernel.
SYNC_BATCHNORM_DEVICES = ("cuda", "xpu", "hpu")


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` with each batch norm computing its statistics over the batches of all processes.

    Under DDP and FSDP each process normalises with its own batch's mean and variance, and its
    running statistics follow its own batches: with small batches per process, noisier than one
    process's over the whole batch. ``SyncBatchNorm`` gathers the statistics from every process
    in each training forward (one all-gather per batch norm), so they are the whole batch's.

    Raises:
        ConfigError: the model has batch norms and ``device`` is one that SyncBatchNorm cannot run on.
    """
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    if not any(isinstance(module, norms) for module in model.modules()):
        return model
    if device.type not in SYNC_BATCHNORM_DEVICES:
        raise ConfigError(
            f"sync_batchnorm=true needs GPUs: torch's SyncBatchNorm computes on {', '.join(SYNC_BATCHNORM_DEVICES)} "
            f"only, not on {device.type}; turn it off (each process then keeps statistics of its own batches)"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
