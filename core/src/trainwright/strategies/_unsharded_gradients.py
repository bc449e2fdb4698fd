"""FSDP2's unsharded gradients: what backward passes under ``no_backward_sync`` accumulate.

A backward pass that does not reduce-scatter leaves each parameter's gradient whole, on FSDP's
own unsharded parameter (or, with a reduce dtype, in an accumulation buffer beside it), not on
the sharded parameter the optimizer holds. ``optimizer.zero_grad()`` clears only the latter, so
gradients of a window that was dropped before its synchronising backward (a skipped step)
would be added into the next window's reduce-scatter. FSDP2 has no public call that drops
them, so this reaches its per-parameter state; every access is guarded, and on a torch whose
internals differ nothing is found and nothing is cleared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def fsdp_params(model: torch.nn.Module) -> list[Any]:
    """FSDP2's per-parameter records (``FSDPParam``) of every unit of ``model``."""
    from torch.distributed.fsdp import FSDPModule

    found: list[Any] = []
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        state = module._get_fsdp_state()
        groups = getattr(state, "_fsdp_param_groups", None)
        if groups is None:  # torch before 2.9 had one group per unit
            group = getattr(state, "_fsdp_param_group", None)
            groups = [group] if group is not None else []
        for group in groups:
            found.extend(getattr(group, "fsdp_params", ()))
    return found


def _pending(fsdp_param: Any) -> Iterator[tuple[Any, str]]:
    """``(owner, attribute)`` of each unsharded gradient ``fsdp_param`` holds."""
    unsharded = getattr(fsdp_param, "_unsharded_param", None)  # set once the parameter was first gathered
    if unsharded is not None and unsharded.grad is not None:
        yield unsharded, "grad"
    if getattr(fsdp_param, "unsharded_accumulated_grad", None) is not None:
        yield fsdp_param, "unsharded_accumulated_grad"


def drop_unsharded_gradients(records: Iterable[Any], held: Iterable[torch.Tensor], set_to_none: bool) -> None:
    """Clear the unsharded gradients of the parameters in ``held`` (an optimizer's), as ``zero_grad`` would.

    Args:
        records: ``fsdp_params(model)`` of the models to look in.
        held: the (sharded) parameters whose gradients are being zeroed.
        set_to_none: drop the tensors (``True``) or fill them with zeros.
    """
    pending = [(record, list(_pending(record))) for record in records]
    pending = [(record, found) for record, found in pending if found]
    if not pending:  # the usual case: the last backward reduce-scattered everything
        return
    ids = {id(parameter) for parameter in held}
    for record, found in pending:
        if id(getattr(record, "sharded_param", None)) not in ids:
            continue  # another optimizer's parameter: its window goes on
        for owner, attribute in found:
            if set_to_none:
                setattr(owner, attribute, None)
            else:
                getattr(owner, attribute).zero_()
