"""Materialising a model built on the meta device: allocate its tensors, then initialise them.

The order is what makes the result independent of the strategy. Modules are visited children
first (post-order), which is the order in which constructors usually initialise them: a leaf
such as ``nn.Linear`` draws its weights in its own ``__init__``, and a parent that re-initialises
its children (``nn.MultiheadAttention``, a model's ``init_weights``) does so at the end of its
``__init__``. A model built on the meta device and materialised here therefore draws the same
random numbers, in the same order, as the same model built directly on a device.

A strategy that shards passes ``units`` and ``on_unit``: each unit is handed over as soon as its
subtree is initialised, so that only one unit at a time is ever held unsharded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

#: The per-module initialiser, by its name in torch's convention; ``_reset_parameters`` is what
#: ``nn.MultiheadAttention`` and ``nn.Transformer`` call theirs.
_RESET_HOOKS = ("reset_parameters", "_reset_parameters")
#: The model-level hook, called once at the end, for initialisation schemes that span modules.
MODEL_INIT_HOOK = "init_weights"


def _has_meta_tensors(module: torch.nn.Module) -> bool:
    tensors = [*module._parameters.values(), *module._buffers.values()]
    return any(t is not None and t.is_meta for t in tensors)


def _reset_hook(module: torch.nn.Module) -> Callable[[], object] | None:
    for name in _RESET_HOOKS:
        hook = getattr(module, name, None)
        if callable(hook):
            return hook
    return None


def _allocate(module: torch.nn.Module, device: torch.device, memo: dict[int, torch.Tensor]) -> None:
    """Give ``module``'s own meta tensors uninitialised storage on ``device``; tied tensors stay tied."""
    for store, make in ((module._parameters, _new_parameter), (module._buffers, _new_buffer)):
        for key, tensor in store.items():
            if tensor is None or not tensor.is_meta:
                continue
            if id(tensor) not in memo:
                memo[id(tensor)] = make(tensor, device)
            store[key] = memo[id(tensor)]


def _new_parameter(meta: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.nn.Parameter(torch.empty_like(meta, device=device), requires_grad=meta.requires_grad)


def _new_buffer(meta: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.empty_like(meta, device=device)


def materialize(
    module: torch.nn.Module,
    device: torch.device,
    units: Collection[torch.nn.Module] = (),
    on_unit: Callable[[torch.nn.Module], None] | None = None,
) -> None:
    """Allocate ``module``'s meta-device tensors on ``device`` and initialise them, children first.

    Each module that held meta tensors gets its ``reset_parameters()`` called; then, if the
    model defines ``init_weights()``, that is called once, last. ``on_unit(unit)`` is called
    for each module in ``units`` once its whole subtree is materialised (also for a model without
    meta tensors, so that a sharding strategy can use the same walk).

    Raises:
        TypeError: a module holds meta tensors but has no ``reset_parameters()``, and the model
            has no ``init_weights()`` to initialise them instead. Nothing has been allocated.
    """
    pending = {id(m) for m in module.modules() if _has_meta_tensors(m)}
    if not pending and on_unit is None:
        return
    init_weights = getattr(module, MODEL_INIT_HOOK, None)
    if pending and not callable(init_weights):
        missing = [
            f"{name or '<the model>'} ({type(m).__qualname__})"
            for name, m in module.named_modules()
            if id(m) in pending and _reset_hook(m) is None
        ]
        if missing:
            raise TypeError(
                f"cannot initialise a model built on the meta device: {', '.join(missing)} "
                f"{'holds' if len(missing) == 1 else 'hold'} parameters or buffers but "
                f"{'has' if len(missing) == 1 else 'have'} no reset_parameters(). Give "
                f"{'it' if len(missing) == 1 else 'them'} one, or give the model an {MODEL_INIT_HOOK}() "
                "method that initialises every tensor, or build it with init_module(empty_init=False)"
            )
    unit_ids = {id(unit) for unit in units}
    memo: dict[int, torch.Tensor] = {}
    visited: set[int] = set()

    def visit(current: torch.nn.Module) -> None:
        if id(current) in visited:  # a submodule registered twice is initialised once
            return
        visited.add(id(current))
        for child in current.children():
            visit(child)
        if id(current) in pending:
            _allocate(current, device, memo)
            reset = _reset_hook(current)
            if reset is not None:
                with torch.no_grad():
                    reset()
        if on_unit is not None and id(current) in unit_ids:
            on_unit(current)

    visit(module)
    if pending and callable(init_weights):
        with torch.no_grad():
            init_weights()
