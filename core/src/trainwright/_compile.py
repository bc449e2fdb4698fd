"""Models compiled with ``torch.compile(model)``: set up the original, then compile on top again."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch


def unwrap_compiled(
    module: torch.nn.Module,
) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.nn.Module] | None]:
    """Split a ``torch.compile(model)`` result into the model and a way to compile alike.

    ``torch.compile(model)`` returns an ``OptimizedModule`` whose state dict keys start with
    ``_orig_mod.``. A strategy must wrap (or shard) the model itself, so ``Fabric.setup`` sets
    up the original and then calls the returned function on what the strategy produced: the
    user's compiled module when that is the model itself, otherwise a new compiled module over
    it with the same compiler settings. ``model.compile()`` (in place) needs none of this.

    Returns:
        ``(module, None)`` for a module that is not an ``OptimizedModule``.
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded if anything was compiled
    if eval_frame is None or not isinstance(module, eval_frame.OptimizedModule):
        return module, None
    original = module._orig_mod

    def compile_over(forward_module: torch.nn.Module) -> torch.nn.Module:
        if forward_module is original:
            return module
        # What torch.compile itself builds: the same dynamo context (backend, mode, options).
        return type(module)(forward_module, module.dynamo_ctx)

    return original, compile_over
