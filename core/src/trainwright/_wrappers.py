"""What ``Fabric.setup`` and ``Fabric.setup_dataloaders`` return: thin wrappers that route the
forward pass, the optimizer step and batches through the strategy and precision."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import IterableDataset

from trainwright._collections import move_to_device
from trainwright._skipping import iterate_from

if TYPE_CHECKING:
    from trainwright.precision import Precision


class FabricModule(torch.nn.Module):
    """Wraps a model so that its forward pass runs in the chosen precision.

    Attribute reads that the wrapper cannot answer go to the original model, and
    ``state_dict``/``load_state_dict`` are the original's, so checkpoint keys carry no prefix.

    Args:
        forward_module: what the forward pass calls (the model, or the strategy's wrapper of it).
        original_module: the model as the user built it.
        precision: supplies the forward context and the input/output casts.
    """

    def __init__(self, forward_module: torch.nn.Module, original_module: torch.nn.Module, precision: Precision) -> None:
        super().__init__()
        self._forward_module = forward_module
        # Kept out of ``_modules`` so that parameters are not listed twice, and read from
        # ``__dict__`` on the hot path instead of through ``nn.Module.__getattr__``.
        self.__dict__["_original_module"] = original_module
        self.__dict__["_forward"] = forward_module
        self.__dict__["_precision"] = precision
        self.__dict__["_wraps_forward"] = precision.wraps_forward

    @property
    def module(self) -> torch.nn.Module:
        """The model as the user built it (unwrapped)."""
        return self._original_module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # nn.Module.__call__ runs hook machinery that costs a few microseconds per step; the
        # wrapper skips it unless hooks were registered on the wrapper itself. The original
        # model's own hooks (and global ones) still run inside its own __call__.
        if self._forward_pre_hooks or self._forward_hooks or self._backward_pre_hooks or self._backward_hooks:
            return super().__call__(*args, **kwargs)
        if not self._wraps_forward:  # nothing to cast or enter: the model itself, one call sooner
            return self._forward(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._wraps_forward:
            return self._forward(*args, **kwargs)
        precision = self._precision
        args, kwargs = precision.convert_input((args, kwargs))
        with precision.forward_context():
            output = self._forward(*args, **kwargs)
        return precision.convert_output(output)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self._original_module.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_original_module")
            if original is None:
                raise
            return getattr(original, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # An attribute the original model has (say, a flag its forward reads) is set there;
        # the wrapper's own attributes, and new ones, stay on the wrapper.
        original = self.__dict__.get("_original_module")
        owned = name in self.__dict__ or name in self._parameters or name in self._buffers or name in self._modules
        if original is not None and not owned and hasattr(original, name):
            setattr(original, name, value)
        else:
            super().__setattr__(name, value)


class FabricOptimizer:
    """Mixed in front of the user's optimizer class by ``wrap_optimizer``.

    ``step`` goes through the strategy where it or the precision adds something (a gradient
    scaler, say), and so does ``zero_grad`` where the strategy keeps gradients of its own (FSDP
    also drops the unsharded gradients that backward passes under ``no_backward_sync``
    accumulated); otherwise each is the optimizer's own, with at most one call in front.
    Everything else is the original optimizer's: its ``param_groups`` and ``state`` are shared,
    not copied, and ``isinstance(wrapped, type(original))`` holds, so LR schedulers accept it.
    """

    _optimizer: torch.optim.Optimizer
    _step: Callable[..., Any] | None  # None: the optimizer's own step (``_own_step``)
    _zero_grad: Callable[..., None] | None  # None: the optimizer's own zero_grad

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer as the user built it (unwrapped)."""
        return self._optimizer

    # The original's, read on every step by schedulers and LR monitors: through __getattr__,
    # which Python calls only after a failed lookup has raised, each read would cost microseconds.
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self._optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self._optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self._optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._optimizer.defaults = value

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._step(self._optimizer, closure)

    def _own_step(self, closure: Callable[[], Any] | None = None) -> Any:
        # ``step`` where neither strategy nor precision adds anything: the optimizer's, one call sooner.
        # Looked up on every call, so that a step patched later (an LR scheduler's counter) still runs.
        return self._optimizer.step() if closure is None else self._optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._zero_grad(self._optimizer, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Loading into the original keeps one copy of the state; the base class would rebind
        # ``state`` and ``param_groups`` on the wrapper and leave the original stale.
        self._optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._optimizer.add_param_group(param_group)

    def __getattr__(self, name: str) -> Any:
        original = self.__dict__.get("_optimizer")
        if original is None:
            raise AttributeError(name)
        return getattr(original, name)

    def __repr__(self) -> str:
        return f"Fabric({self._optimizer!r})"


def wrap_optimizer(
    optimizer: torch.optim.Optimizer,
    step: Callable[..., Any] | None,
    zero_grad: Callable[[torch.optim.Optimizer, bool], None] | None,
) -> torch.optim.Optimizer:
    """Return a ``FabricOptimizer`` in front of ``optimizer``, still an instance of its class.

    ``step(optimizer, closure)`` takes its steps, and ``None`` leaves them to the optimizer's own
    ``step``; ``zero_grad(optimizer, set_to_none)`` zeroes its gradients, and ``None`` leaves that
    to the optimizer's own ``zero_grad``, with no call in front.
    """
    cls = type(optimizer)
    namespace: dict[str, Any] = {"__module__": cls.__module__}
    if step is None:
        namespace["step"] = FabricOptimizer._own_step
    wrapper_cls = type(f"Fabric{cls.__name__}", (FabricOptimizer, cls), namespace)
    wrapper = object.__new__(wrapper_cls)
    wrapper.__dict__.update(_optimizer=optimizer, _step=step, _zero_grad=zero_grad)
    if zero_grad is None:
        wrapper.__dict__["zero_grad"] = optimizer.zero_grad
    return wrapper


class FabricDataLoader:
    """Wraps a data loader so that every batch arrives on the device.

    Args:
        dataloader: the loader to iterate.
        device: where batches go; ``None`` leaves them where the loader puts them.
    """

    def __init__(self, dataloader: torch.utils.data.DataLoader, device: torch.device | None) -> None:
        self._dataloader = dataloader
        self._device = device
        self._skip = 0
        self._state: dict[str, Any] | None = None  # where the next iteration starts, from load_state_dict

    @property
    def dataloader(self) -> torch.utils.data.DataLoader:
        """The loader as the user built it (unwrapped)."""
        return self._dataloader

    def __len__(self) -> int:
        return len(self._dataloader)

    def set_epoch(self, epoch: int) -> None:
        """Tell the sampler which epoch starts, so that a shuffle differs from epoch to epoch.

        Passed on to the sampler, to the batch sampler's sampler, and to the data set, where they
        have ``set_epoch`` (as ``DistributedSampler`` and streaming data sets do, and a map-style
        data set may, to seed its augmentations by epoch and sample index); otherwise nothing
        happens, so the same loop runs on one process and on many. Loader workers copy the data
        set when an epoch's iteration starts, so they see the epoch set before it, except
        persistent workers, which keep the copy of their first epoch.
        """
        loader = self._dataloader
        samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None), loader.dataset]
        # Each once, in order, by identity: a data set may be a list, which cannot be hashed.
        unique = {id(s): s for s in samplers if s is not None}.values()
        for sampler in unique:
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        """Start the next iteration at batch ``count``, without reading the batches before it.

        For a mid-epoch resume: call ``set_epoch(epoch)`` and ``skip_batches(batches_done)``,
        then iterate; the loader yields what a full epoch would have yielded from batch
        ``count`` on. The skipped batches are dropped in the sampler, as indices, so the
        dataset never loads them and nothing is copied to the device. Only the next
        iteration is affected; the ones after it are whole epochs again, and ``len`` stays the
        length of a whole epoch. A ``count`` at or past the end yields nothing.

        An iterable-style dataset has no indices to skip, and a ``DataLoader`` subclass cannot
        be rebuilt around a shortened sampler: those read the skipped batches and drop them
        (without moving them to the device). The first iteration after the call starts fresh
        workers for that epoch, even with ``persistent_workers``.

        Raises:
            ValueError: ``count`` is not an integer of at least 0.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"skip_batches(): count={count!r} is not an integer of at least 0")
        self._skip, self._state = count, None

    @property
    def stateful(self) -> bool:
        """Whether ``state_dict`` can tell where an iteration stands, so that a resume reads no batch twice.

        True for a loader with ``state_dict`` and ``load_state_dict`` of its own (torchdata's
        ``StatefulDataLoader``, which follows what its workers have read), and for an
        iterable-style data set with them (a Hugging Face ``datasets.IterableDataset``, your own)
        read in this process (``num_workers=0``). With workers, a plain ``DataLoader`` iterates a
        copy of the data set in each worker, and the copy in this process knows nothing of their
        progress: such a loader is not stateful, and ``skip_batches`` is the way to resume it.
        """
        return _state_source(self._dataloader) is not None

    def state_dict(self) -> dict[str, Any] | None:
        """Where the current iteration stands, after the batches it has yielded so far; None if not ``stateful``.

        Call it between two batches: a later ``load_state_dict`` with it starts an iteration at the
        next batch, without reading the ones before it. Batches that workers prefetched, and the
        batch a loop looks ahead at, are not counted as read until the loop has taken them. The
        state is a copy (later batches leave it alone): ``{"loader": ...}``, the loader's own, or
        ``{"dataset": ...}``, the data set's. Either is put into checkpoints as it is, so it must
        be plain data (numbers, strings, tensors, and lists and dicts of them).
        """
        source = _state_source(self._dataloader)
        if source is None:
            return None
        owner = self._dataloader if source == "loader" else self._dataloader.dataset
        return {source: copy.deepcopy(owner.state_dict())}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Start the next iteration, and only that one, where ``state`` (from ``state_dict``) was taken.

        The state is handed to the loader (or to the data set) when that iteration starts, after
        any ``set_epoch``. None changes nothing. It replaces a ``skip_batches`` request, as
        ``skip_batches`` replaces it.

        Raises:
            ValueError: ``state`` is not what ``state_dict`` returns for this loader (another
                loader's, or this loader is not ``stateful``).
        """
        if state is None:
            return
        source = _state_source(self._dataloader)
        if source is None or not isinstance(state, dict) or state.keys() != {source}:
            kind = "this loader is not stateful" if source is None else f"this loader's state is {{{source!r}: ...}}"
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict(): cannot start this loader from a state with {got}: {kind}")
        self._state, self._skip = state, 0

    def is_padding(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` of the current iteration only pads this process's shard.

        Always ``False`` here; see ``EvenEvaluationLoader``, which ``setup_dataloaders(...,
        evaluation=True)`` returns under several processes.
        """
        return False

    def __iter__(self) -> Iterator[Any]:
        skip, self._skip = self._skip, 0
        state, self._state = self._state, None
        if state is not None:
            owner = self._dataloader if "loader" in state else self._dataloader.dataset
            owner.load_state_dict(next(iter(state.values())))
        batches = iterate_from(self._dataloader, skip) if skip else iter(self._dataloader)
        if self._device is None:
            return batches
        return (move_to_device(batch, self._device) for batch in batches)

    def __getattr__(self, name: str) -> Any:
        dataloader = self.__dict__.get("_dataloader")
        if dataloader is None:
            raise AttributeError(name)
        return getattr(dataloader, name)


def _state_source(loader: Any) -> str | None:
    """Whose ``state_dict`` says where an iteration of ``loader`` stands: ``"loader"``, ``"dataset"`` or None."""
    if callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None)):
        return "loader"
    dataset = getattr(loader, "dataset", None)
    stateful = callable(getattr(dataset, "state_dict", None)) and callable(getattr(dataset, "load_state_dict", None))
    if stateful and isinstance(dataset, IterableDataset) and loader.num_workers == 0:
        return "dataset"
    return None
