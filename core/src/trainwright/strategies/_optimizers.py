"""Keeping an optimizer pointed at its model's parameters when setting up replaces them."""

from __future__ import annotations

import torch


def parameter_names(module: torch.nn.Module) -> dict[int, str]:
    """``id(parameter) -> name`` for every parameter of ``module`` (a tied parameter under its first name)."""
    return {id(parameter): name for name, parameter in module.named_parameters()}


def remap_parameters(
    optimizer: torch.optim.Optimizer, names: dict[int, str], module: torch.nn.Module, where: str
) -> None:
    """Replace, in ``optimizer``'s parameter groups, parameters of ``module`` that setup replaced.

    ``names`` maps the parameters as they were before setup to their names (``parameter_names``);
    each one that is no longer ``module``'s parameter of that name is swapped for the one that is.
    Parameters that never belonged to ``module`` are left alone.

    Raises:
        ValueError: the optimizer holds state for a replaced parameter: it has stepped, and its
            state has the old parameter's shape and place, which the new one need not share.
    """
    current = dict(module.named_parameters())
    for group in optimizer.param_groups:
        for index, parameter in enumerate(group["params"]):
            name = names.get(id(parameter))
            if name is None or current[name] is parameter:
                continue
            if optimizer.state.get(parameter):
                raise ValueError(
                    f"{where} has state for parameter {name!r}, which setup() replaced (it was sharded or "
                    "materialised). Create the optimizer before it first steps, and pass it to setup() with the model."
                )
            optimizer.state.pop(parameter, None)
            group["params"][index] = current[name]
