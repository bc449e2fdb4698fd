"""``Fabric``: a device-aware helper for a training loop that you write yourself."""

from __future__ import annotations

import builtins
import functools
import inspect
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch

from trainwright._collections import apply_to_tensors, move_to_device
from trainwright._compile import unwrap_compiled
from trainwright._dispatch import _STALE, Dispatcher, UnusedHook
from trainwright._evaluation import EvenEvaluationLoader
from trainwright._scalars import read_scalars
from trainwright._version import __version__
from trainwright._worker_signals import PREEMPTION_SIGNALS, check_signals, leave_signals_to_main
from trainwright._wrappers import FabricDataLoader, FabricModule, FabricOptimizer, wrap_optimizer
from trainwright.accelerators import ACCELERATOR_CLASSES
from trainwright.checkpoint import FORMAT_VERSION, RESERVED_KEY, check_format, restore, to_plain
from trainwright.flags import probe_hardware, resolve_flags
from trainwright.loggers.base import STATUSES, Logger, flatten_params
from trainwright.precision import PRECISION_CLASSES
from trainwright.seed import seed_everything
from trainwright.strategies import Strategy, create_strategy

if TYPE_CHECKING:
    from trainwright.accelerators import Accelerator
    from trainwright.precision import Precision

REDUCE_OPS = ("mean", "sum", "max", "min")
_NO_CONTEXT = nullcontext()  # stateless, so one serves every call: no_backward_sync runs on every batch
M = TypeVar("M", bound=torch.nn.Module)


def _as_list(value: object, what: str) -> list:
    """``None`` -> ``[]``, one object -> ``[object]``, any other iterable -> a list of it."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"{what} must be one object or an iterable of them, not a {type(value).__name__}")
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def _warn_if_threads_compete(workers: int) -> None:
    """Warn when torch's compute threads and a loader's workers together want more cores than there are.

    On the CPU, the model's math runs on ``torch.get_num_threads()`` threads, whose OpenMP
    workers spin while they wait; loader workers that need a core of their own then slow every
    step several times over (160 ms against 36 ms a step, measured with 2 workers on 2 cores).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = torch.get_num_threads()
    if workers > 0 and threads > 1 and threads + workers > cores:
        warnings.warn(
            f"torch computes with {threads} threads while the loader's {workers} worker processes load data, "
            f"on {cores} cores: they compete for the cores, which can make each step several times slower; "
            f"call torch.set_num_threads({max(1, cores - workers)}) (or set OMP_NUM_THREADS) before training, "
            "or use fewer loader workers",
            stacklevel=3,
        )


class Fabric:
    """Puts a hand-written training loop on the right device, precision and processes.

    Args:
        accelerator: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"`` or ``"mps"``.
        devices: ``"auto"``, a count, ``-1`` for all, or a list of indices such as ``[1]``.
        strategy: ``"auto"``, ``"single"``, ``"ddp"`` or ``"fsdp"``, or a ``Strategy`` instance
            carrying its own options, e.g. ``DDPStrategy(find_unused_parameters=True)`` or
            ``FSDPStrategy(state_dict_type="full")`` from ``trainwright.strategies``. Fabric
            connects it to the accelerator and precision; an instance serves one Fabric.
        precision: ``"32-true"``, ``"64-true"``, ``"bf16-mixed"``, ``"16-mixed"`` (with a
            gradient scaler) or ``"bf16-true"``.
        callbacks: ``None``, one callback, or an iterable of them; kept in ``self.callbacks``,
            a plain list that may be changed later.
        loggers: ``None``, one ``Logger``, or an iterable of them; kept in ``self.loggers``.

    Raises:
        ValueError: a flag has an unknown value or asks for hardware that is not there; the
            message names the flag and lists what is allowed.
        TypeError: ``callbacks`` or ``loggers`` is a string or a mapping, or a logger lacks
            ``log_metrics``.

    Under ``torchrun`` (``WORLD_SIZE`` above 1 in the environment), ``strategy="auto"`` is DDP:
    constructing ``Fabric`` joins the process group, and ``teardown`` (or leaving a ``with``
    block) leaves it.
    """

    def __init__(
        self,
        accelerator: str = "auto",
        devices: int | str | Sequence[int] = "auto",
        strategy: str | Strategy = "auto",
        precision: str = "32-true",
        callbacks: object = None,
        loggers: Logger | Iterable[Logger] | None = None,
    ) -> None:
        flags = resolve_flags(accelerator, devices, strategy, precision, hardware=probe_hardware())
        precision_impl = PRECISION_CLASSES[flags.precision](flags.accelerator)
        self._strategy = create_strategy(strategy, flags.strategy)
        self._strategy.connect(flags, ACCELERATOR_CLASSES[flags.accelerator], precision_impl)
        self.flags = flags
        self.callbacks: list = _as_list(callbacks, "callbacks")
        self.loggers: list[Logger] = _as_list(loggers, "loggers")
        for logger in self.loggers:
            if not callable(getattr(logger, "log_metrics", None)):
                raise TypeError(f"loggers: {type(logger).__qualname__} has no log_metrics(metrics, step) method")
        self._strategy.setup_environment()
        self._backward = self._strategy.step_method("backward")  # None: the loss's own backward
        self._dispatcher = Dispatcher(is_global_zero=self._strategy.is_global_zero)
        self._plans = self._dispatcher.plans

    # -- devices and processes -------------------------------------------------------------

    @property
    def strategy(self) -> Strategy:
        """The strategy object: device placement and inter-process communication."""
        return self._strategy

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator object, e.g. for ``fabric.accelerator.synchronize()``."""
        return self._strategy.accelerator

    @property
    def precision(self) -> Precision:
        """The precision object."""
        return self._strategy.precision

    @property
    def device(self) -> torch.device:
        """The device this process computes on."""
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        """This process's index in the whole job (0 with one process)."""
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        """This process's index on its node, which picks its GPU."""
        return self._strategy.local_rank

    @property
    def world_size(self) -> int:
        """The number of processes in the job."""
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        """Whether this is global rank 0, the process that logs, prints and saves."""
        return self._strategy.is_global_zero

    @property
    def logger(self) -> Logger | None:
        """The first logger, or ``None``."""
        return self.loggers[0] if self.loggers else None

    # -- the training loop -------------------------------------------------------------------

    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager:
        """Build a model inside this context, where ``setup`` will want it.

        With ``empty_init=True`` the model is built on the meta device: nothing is allocated
        and nothing is initialised until ``setup``, which allocates it on ``device`` (one
        shard per process under FSDP) and initialises it. With ``empty_init=False`` it is
        built directly on ``device``. ``None`` (the default) means ``True`` under FSDP and
        ``False`` otherwise.

        Initialisation after building on the meta device calls ``reset_parameters()`` on every
        module that holds parameters or buffers, children before parents, then the model's own
        ``init_weights()`` if it has one. For the same seed the weights equal those of the same
        model built directly on a device when each module draws its random numbers in
        ``reset_parameters()`` at the end of its ``__init__``, as torch's modules do (see
        docs/distributed.md for the exact rule). Create the optimizers inside or after this
        context from the model's parameters; ``setup`` points them at the allocated ones.

        Raises:
            TypeError: (from ``setup``) a module holds tensors but has no ``reset_parameters()``,
                and the model has no ``init_weights()``.
        """
        return self._strategy.module_init_context(empty_init)

    @overload
    def setup(self, model: M) -> M: ...
    @overload
    def setup(self, model: M, *optimizers: torch.optim.Optimizer) -> tuple[Any, ...]: ...
    def setup(self, model: torch.nn.Module, *optimizers: torch.optim.Optimizer) -> Any:
        """Cast and move ``model`` (shard it, under FSDP) and wrap it and its optimizers for this run.

        Create the optimizers from the model's parameters before calling this: where setting up
        replaces parameters (a model built with ``init_module(empty_init=True)``, or one that
        FSDP shards), their parameter groups are pointed at the new ones by name. An optimizer
        created afterwards, from the returned model's parameters, goes to ``setup_optimizers``.
        The returned model runs its forward pass in the chosen precision; the returned
        optimizers step through the strategy (and a gradient scaler where there is one), and
        remain instances of their own classes.

        A compiled model is accepted both ways. ``model.compile()`` (in place, recommended) keeps
        the model's class and keys, and each strategy wraps it as it is. A ``torch.compile(model)``
        result is unwrapped: the strategy sets up the original model, and the compilation is
        applied on top of what the strategy returns (the ``DistributedDataParallel`` wrapper, under
        DDP). Either way checkpoint keys never carry ``_orig_mod.``.

        Returns:
            The model alone if no optimizer is given, else ``(model, *optimizers)``.

        Raises:
            TypeError: ``model`` is not an ``nn.Module`` or was set up already, an optimizer is
                not a ``torch.optim.Optimizer``, or a model built on the meta device holds a
                module that cannot be initialised (see ``init_module``).
            ValueError: an optimizer has already stepped on parameters that setting up replaces.
        """
        original, compile_over = unwrap_compiled(model)
        if isinstance(original, FabricModule):
            raise TypeError("setup(): this model was already set up; pass the original model")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"setup(): model must be a torch.nn.Module, got {type(model).__qualname__}")
        self._check_optimizers("setup()", optimizers)
        forward_module, optimizers = self._strategy.setup_module_and_optimizers(original, optimizers)
        if compile_over is not None:
            forward_module = compile_over(forward_module)
        wrapped = FabricModule(forward_module, original, self._strategy.precision)
        if not optimizers:
            return wrapped
        return (wrapped, *(self._wrap_optimizer(o) for o in optimizers))

    def setup_optimizers(self, *optimizers: torch.optim.Optimizer) -> Any:
        """Wrap optimizers created after ``setup(model)`` from the returned model's parameters.

        Returns:
            One optimizer for one argument, else a tuple in the same order.

        Raises:
            TypeError: no optimizer is given, or one is not a ``torch.optim.Optimizer`` or was set up already.
        """
        if not optimizers:
            raise TypeError("setup_optimizers() needs at least one optimizer")
        self._check_optimizers("setup_optimizers()", optimizers)
        wrapped = [self._wrap_optimizer(self._strategy.setup_optimizer(o)) for o in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def _wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        strategy = self._strategy
        # A strategy that keeps gradients where the optimizer does leaves zero_grad to the optimizer itself.
        own = type(strategy).optimizer_zero_grad is Strategy.optimizer_zero_grad
        zero_grad = None if own else strategy.optimizer_zero_grad
        return wrap_optimizer(optimizer, strategy.step_method("optimizer_step"), zero_grad)

    @staticmethod
    def _check_optimizers(where: str, optimizers: Sequence[object]) -> None:
        for i, optimizer in enumerate(optimizers):
            if isinstance(optimizer, FabricOptimizer):
                raise TypeError(f"{where}: optimizer {i} was already set up; pass the original optimizer")
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(
                    f"{where}: optimizer {i} must be a torch.optim.Optimizer, got {type(optimizer).__qualname__}"
                )

    def setup_dataloaders(
        self,
        *dataloaders: torch.utils.data.DataLoader,
        move_to_device: bool = True,
        use_distributed_sampler: bool = True,
        evaluation: bool = False,
        worker_ignored_signals: Iterable[int] = PREEMPTION_SIGNALS,
    ) -> Any:
        """Adapt data loaders to the strategy and, with ``move_to_device``, move batches to ``device``.

        Under DDP each loader is rebuilt to yield only this process's shard of the samples
        (see ``trainwright.strategies.shard_dataloader``); call ``loader.set_epoch(epoch)`` at the
        start of every epoch so that a shuffle changes from epoch to epoch. Pass
        ``use_distributed_sampler=False`` to keep loaders that shard themselves as they are.

        Training shards are padded to equal length by repeating samples, so that every process
        runs the same number of steps. Pass ``evaluation=True`` for validation and test loaders:
        every sample is then read exactly once, and shards may differ by one sample (and so by
        one batch). Under several processes the loader then pads the shorter shards with copies
        of their last batch, so that every process runs the same number of forward passes (FSDP
        all-gathers in each one); ``loader.is_padding(batch_idx)`` is true for those copies, and
        the loop counts nothing from them. Sum and count on each process and all-reduce once
        after the loop: the mean is exact. See ``trainwright._evaluation.EvenEvaluationLoader``.

        The loaders' worker processes ignore ``worker_ignored_signals`` (SIGTERM and SIGUSR1
        by default; pass ``()`` to keep torch's handling): a launcher or a scheduler that
        signals every process of the job (torchrun, SLURM) asks the main process to save and
        stop, and the workers keep serving it until it does. A SIGTERM from the main process
        itself, which is how it stops a stuck worker, still ends the worker. Each loader's own
        ``worker_init_fn`` runs after this, in every worker, so it may install handlers of its
        own; a loader rebuilt here, or by ``skip_batches``, keeps both.

        Returns:
            One loader for one argument, else a tuple in the same order.

        Raises:
            TypeError: an argument is not a ``DataLoader``, or under DDP a loader cannot be
                rebuilt with a sharded sampler (a ``DataLoader`` subclass or a custom batch sampler).
            ValueError: ``worker_ignored_signals`` holds something other than a signal that a
                process can block.
        """
        if not dataloaders:
            raise TypeError("setup_dataloaders() needs at least one data loader")
        ignored = check_signals(worker_ignored_signals, "setup_dataloaders(): worker_ignored_signals")
        device = self.device if move_to_device and self.device.type != "cpu" else None
        wrapped = []
        for i, loader in enumerate(dataloaders):
            if not isinstance(loader, torch.utils.data.DataLoader):
                raise TypeError(
                    f"setup_dataloaders(): argument {i} must be a DataLoader, got {type(loader).__qualname__}"
                )
            if self.device.type == "cpu":
                _warn_if_threads_compete(loader.num_workers)
            leave_signals_to_main(loader, ignored)  # before any rebuild, which copies worker_init_fn
            if use_distributed_sampler:
                loader = self._strategy.process_dataloader(loader, evaluation=evaluation)
            if evaluation and self.world_size > 1:
                wrapped.append(EvenEvaluationLoader(loader, device, functools.partial(self.all_reduce, op="max")))
            else:
                wrapped.append(FabricDataLoader(loader, device))
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Use instead of ``loss.backward()``: applies loss scaling where the precision needs it."""
        if self._backward is None:  # nothing to scale (32-true, bf16-mixed...): no call in between
            loss.backward(*args, **kwargs)
        else:
            self._backward(loss, *args, **kwargs)

    def clip_gradients(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        max_norm: float | None = None,
        clip_val: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = False,
    ) -> torch.Tensor | None:
        """Clip gradients by total norm (``max_norm``) or by value (``clip_val``), after unscaling.

        Returns:
            The total norm before clipping, or ``None`` when clipping by value.

        Raises:
            ValueError: not exactly one of ``max_norm`` and ``clip_val`` is given.
        """
        if (max_norm is None) == (clip_val is None):
            raise ValueError("clip_gradients() takes exactly one of max_norm and clip_val")
        original = optimizer.optimizer if isinstance(optimizer, FabricOptimizer) else optimizer
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(model, original, max_norm, norm_type, error_if_nonfinite)
        self._strategy.clip_gradients_value(model, original, clip_val)
        return None

    def autocast(self) -> AbstractContextManager:
        """The precision's forward context, for computation outside the model's forward."""
        return self._strategy.precision.forward_context()

    def no_backward_sync(self, model: torch.nn.Module, enabled: bool = True) -> AbstractContextManager:
        """Skip gradient synchronisation between processes for backward passes in this context.

        Use it on the micro-batches of gradient accumulation that do not end in an optimizer
        step. With one process it does nothing.

        Raises:
            TypeError: ``model`` is not what ``setup`` returned.
        """
        if not isinstance(model, FabricModule):
            raise TypeError("no_backward_sync() needs the model that fabric.setup() returned")
        if not enabled:
            return _NO_CONTEXT
        return self._strategy.no_backward_sync(model._forward_module)

    def to_device(self, obj: Any) -> Any:
        """Move a module, a tensor, or tensors nested in dicts, lists and tuples to ``device``."""
        if isinstance(obj, torch.nn.Module):
            return obj.to(self.device)
        return move_to_device(obj, self.device)

    # -- processes ---------------------------------------------------------------------------

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank zero only."""
        if self._strategy.is_global_zero:
            builtins.print(*args, **kwargs)

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process gets here."""
        self._strategy.barrier(name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Return process ``src``'s ``obj`` on every process."""
        return self._strategy.broadcast(obj, src)

    def all_reduce(self, data: Any, op: str = "mean") -> Any:
        """Reduce a tensor, a number, or tensors nested in containers over all processes.

        Numbers become tensors on ``device``, so the result has the same type on every process
        count.

        Raises:
            ValueError: ``op`` is not one of ``"mean"``, ``"sum"``, ``"max"``, ``"min"``.
        """
        if op not in REDUCE_OPS:
            raise ValueError(f"all_reduce(): op={op!r} is not one of {', '.join(map(repr, REDUCE_OPS))}")
        if isinstance(data, (int, float)):
            data = torch.tensor(data, device=self.device)
        return apply_to_tensors(data, lambda t: self._strategy.all_reduce(t, op))

    def all_gather(self, data: Any) -> Any:
        """Gather a tensor (or tensors nested in containers) from every process.

        Each tensor comes back with a new first dimension of size ``world_size``, also on one
        process, so code written for one process runs unchanged on many.
        """
        if isinstance(data, (int, float)):
            data = torch.tensor(data, device=self.device)
        return apply_to_tensors(data, self._strategy.all_gather)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Gather any picklable object from every process: a list of ``world_size`` entries, by global rank.

        For what a checkpoint needs of every rank, such as each rank's random state:
        ``fabric.all_gather_object(capture_rng_state())``. Every process must call it.
        """
        return self._strategy.all_gather_object(obj)

    def seed_everything(self, seed: int) -> int:
        """Seed every random generator of this process, distinctly on each rank.

        ``trainwright.seed_everything(seed, rank=global_rank)``: rank 0 is seeded with ``seed``
        itself, exactly as a single-process run is, and every other rank with a number derived
        from ``(seed, rank)``, so that dropout and augmentations differ across processes. The
        data order stays a function of the seed and the epoch (every shard is shuffled with
        rank 0's seed). Model weights built after this differ across ranks until the strategy
        makes them equal (DDP broadcasts rank 0's in ``setup``).

        Returns:
            The seed this process's generators got.

        Raises:
            ValueError: ``seed`` is not an integer in ``[0, 2**32 - 1]``.
        """
        return seed_everything(seed, rank=self.global_rank)

    # -- callbacks ---------------------------------------------------------------------------

    def call(self, hook: str, /, *args: Any, **kwargs: Any) -> list:
        """Call ``hook`` on every callback that has it, in order; return their results in order.

        Keyword arguments are filtered per callback to the names its signature accepts (all of
        them for a ``**kwargs`` parameter, or when the signature cannot be inspected);
        positional arguments are passed as they are. Callbacks without the hook are skipped.

        Raises:
            HookSignatureError: (a ``TypeError``) a callback's hook requires a parameter that
                no argument supplies; the message names the callback, the hook and the parameter.
            Exception: whatever a hook raises, with a note naming the callback and the hook.
        """
        try:
            plan = self._plans[hook]
        except (KeyError, TypeError):  # first call of this hook, or an unhashable name
            return self._dispatcher.dispatch(self.callbacks, hook, args, kwargs)
        result = plan(self.callbacks, args, kwargs)
        if result is _STALE:
            return self._dispatcher.dispatch(self.callbacks, hook, args, kwargs)
        return result

    def check_hooks(self, hooks: Mapping[str, Iterable[str]]) -> None:
        """Check, before training, that every callback accepts what the loop will pass.

        ``hooks`` maps each hook the loop fires to the keyword names it passes. Nothing is
        called; a bad signature fails here, before anything is written, rather than hours in.

        Raises:
            HookSignatureError: (a ``TypeError``) a callback's hook requires a parameter that
                its call does not pass; the same error that ``call`` would raise.
        """
        for hook, names in hooks.items():
            self._dispatcher.check(self.callbacks, hook, names)

    def unused_hooks(self, known: Iterable[str] = ()) -> list[UnusedHook]:
        """The ``on_*`` methods of the callbacks that no ``call`` has dispatched so far.

        Each comes with the closest dispatched (or ``known``) hook name as a suggestion, so a
        typo such as ``on_train_epoch_ned`` surfaces. Pass the full list of hooks your loop
        can fire as ``known`` to avoid reporting hooks that simply have not fired yet.
        """
        return self._dispatcher.unused_hooks(self.callbacks, known)

    # -- logging -----------------------------------------------------------------------------

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Log one metric to every logger, from global rank zero."""
        self.log_dict({name: value}, step)

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several metrics at one step to every logger, from global rank zero.

        Numbers pass through as they are. One-element tensors are read together, in one
        host-device sync per device for the whole call (none when every value is a number),
        so log on the steps you mean to write, not on every step.

        Raises:
            TypeError: a value is neither a real number nor a one-element real tensor.
        """
        if not self.loggers or not self._strategy.is_global_zero:
            return
        plain: dict[str, Any] = {}
        tensors: dict[str, torch.Tensor] = {}
        for name, value in metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1 or value.is_complex():
                    what = f"{value.numel()} elements" if value.numel() != 1 else "a complex value"
                    raise TypeError(f"log(): {name!r} has {what}; log a number or a one-element real tensor")
                tensors[name] = value
                plain[name] = None  # filled in below, in the caller's order
                continue
            if not isinstance(value, (int, float)) and callable(getattr(value, "item", None)):
                value = value.item()  # a NumPy scalar
            if not isinstance(value, (int, float)):
                raise TypeError(
                    f"log(): {name!r} is a {type(value).__qualname__}; log a number or a one-element tensor"
                )
            plain[name] = value
        if tensors:
            plain.update(read_scalars(tensors))  # the call's one sync: it waits for the device
        for logger in self.loggers:
            logger.log_metrics(plain, step)

    def log_hyperparams(self, params: Any) -> None:
        """Record the run's settings with every logger, from global rank zero.

        ``params`` is a mapping or a dataclass instance (such as a resolved config). Nested
        mappings and dataclasses are flattened to dotted names (``optim.lr``); ``bool``,
        ``int``, ``float`` and ``str`` values pass as they are, enums as their names, and
        anything else (paths, ``None``, lists) as its ``str``.

        Raises:
            TypeError: ``params`` is neither a mapping nor a dataclass instance.
        """
        flat = flatten_params(params)  # checked on every rank, so that all of them fail alike
        if not self._strategy.is_global_zero:
            return
        for logger in self.loggers:
            log_hyperparams = getattr(logger, "log_hyperparams", None)
            if callable(log_hyperparams):
                log_hyperparams(flat)

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Hand a file or a folder (a plot, a profiler summary, a checkpoint) to every logger
        that stores files with its run, from global rank zero.

        Raises:
            FileNotFoundError: nothing is at ``path``.
        """
        if not os.path.exists(path):
            raise FileNotFoundError(f"log_artifact(): there is no file or folder at {str(path)!r}")
        if not self._strategy.is_global_zero:
            return
        for logger in self.loggers:
            log_artifact = getattr(logger, "log_artifact", None)
            if callable(log_artifact):
                log_artifact(path)

    def _flush_loggers(self) -> None:
        for logger in self.loggers:
            flush = getattr(logger, "flush", None)
            if not callable(flush):
                continue
            try:
                flush()
            except Exception as error:  # a logger's failure must not cost the run its checkpoint
                warnings.warn(
                    f"save(): {type(logger).__qualname__}.flush() failed ({error!r}); the checkpoint is written anyway",
                    RuntimeWarning,
                    stacklevel=3,
                )

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, state: Mapping[str, Any]) -> None:
        """Write ``state`` to ``path`` atomically, from global rank zero; the others wait.

        Objects with ``state_dict`` (models, optimizers, schedulers, callbacks) are stored as
        their state dicts; everything else must be plain data. The file also records the
        checkpoint format version and the precision's state (the gradient scale). The loggers
        are flushed first, so that their files hold every step that the checkpoint has seen;
        a tracker's flush only asks its background thread to send, so a checkpoint never
        waits on a tracking service, and a logger whose flush raises is reported in a
        ``RuntimeWarning`` while the checkpoint is written anyway.

        Under FSDP every process calls this: with ``FSDPStrategy(state_dict_type="sharded")``
        (the default) ``path`` becomes a directory that each process writes its shards into,
        without gathering; with ``"full"`` the model and optimizer state are gathered to rank
        zero, which writes one file in the format above. Both replace ``path`` atomically.

        Raises:
            TypeError: ``state`` is not a mapping, or holds something that is not plain data.
            ValueError: ``state`` uses the reserved key ``"__trainwright__"``.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"save(): state must be a dict, got {type(state).__qualname__}")
        if RESERVED_KEY in state:
            raise ValueError(f"save(): the key {RESERVED_KEY!r} is reserved for trainwright's own entry")
        if self._strategy.is_global_zero:
            self._flush_loggers()  # a checkpoint must not count steps whose metrics are only in memory
        checkpoint = to_plain(dict(state), state_dict=self._strategy.object_state_dict)
        checkpoint[RESERVED_KEY] = {
            "format_version": FORMAT_VERSION,
            "trainwright_version": __version__,
            "precision": to_plain(self._strategy.precision.state_dict(), "precision state"),
        }
        self._strategy.save_checkpoint(path, checkpoint)

    def load(self, path: str | os.PathLike, state: dict[str, Any] | None = None, strict: bool = True) -> dict[str, Any]:
        """Read a checkpoint written by ``save`` and restore ``state`` in place.

        Objects in ``state`` with ``load_state_dict`` load their entry; other values are
        replaced. Loading uses ``weights_only=True``, so a checkpoint cannot run code.

        The precision's state (the gradient scale, under ``"16-mixed"``) is restored only when
        ``state`` has at least one entry, i.e. when the caller fills live state from the file,
        as a resume does. ``load(path)`` (or ``state={}``) only reads the file, and leaves the
        live gradient scaler as it is.

        Under FSDP, either format loads, on any number of processes: a sharded directory is
        resharded for this job, a full file is sharded as it is read.

        Returns:
            The checkpoint's entries that ``state`` did not ask for (all of them if ``state``
            is ``None``).

        Raises:
            FileNotFoundError: nothing is at ``path``.
            ValueError: the file is unreadable, holds pickled objects, was not written by
                ``Fabric.save``, or has a format version this release cannot read.
            KeyError: ``strict`` and an entry of ``state`` is missing from the checkpoint.
        """
        checkpoint = self._strategy.load_checkpoint(path, state)
        meta = check_format(checkpoint, path, __version__)
        del checkpoint[RESERVED_KEY]
        if not state:  # reading a file must not change the live run's gradient scale
            return checkpoint
        self._strategy.precision.load_state_dict(meta.get("precision") or {})
        where = f"checkpoint {str(path)!r}"
        restore(state, checkpoint, strict=strict, where=where, load=self._strategy.load_object_state)
        return {key: value for key, value in checkpoint.items() if key not in state}

    # -- lifetime ----------------------------------------------------------------------------

    def teardown(self, status: str = "success") -> None:
        """Finalize the loggers (on global rank zero) and release the strategy's resources.

        Args:
            status: how the run ended, passed to each logger's ``finalize``: ``"success"``,
                ``"failed"`` or ``"interrupted"`` (stopped, to be resumed). Leaving
                ``with Fabric(...)`` passes ``"failed"`` on an exception, ``"interrupted"``
                on ``KeyboardInterrupt``.

        Raises:
            ValueError: ``status`` is not one of those (and nothing is torn down).
            Exception: the first error a logger's ``finalize`` raised, once every logger was
                finalized and the strategy torn down.
        """
        if status not in STATUSES:
            raise ValueError(f"teardown(): status={status!r} is not one of {', '.join(map(repr, STATUSES))}")
        try:
            if self._strategy.is_global_zero:
                _finalize_all(self.loggers, status)
        finally:
            self._strategy.teardown()

    def __enter__(self) -> Fabric:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            status = "success"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        else:
            status = "failed"
        self.teardown(status)

    def __repr__(self) -> str:
        f = self.flags
        return (
            f"Fabric(accelerator={f.accelerator!r}, devices={list(f.devices)}, "
            f"strategy={f.strategy!r}, precision={f.precision!r})"
        )


def _finalize_all(loggers: Iterable[Any], status: str) -> None:
    """Call every logger's ``finalize``, then raise the first error any of them raised."""
    first_error: BaseException | None = None
    for logger in loggers:
        finalize = getattr(logger, "finalize", None)
        if not callable(finalize):
            continue
        try:
            if _accepts_status(finalize):
                finalize(status=status)
            else:
                finalize()  # a logger written for trainwright 0.4, before finalize took a status
        except Exception as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def _accepts_status(finalize: Any) -> bool:
    try:
        parameters = inspect.signature(finalize).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "status" or p.kind is p.VAR_KEYWORD for p in parameters)
