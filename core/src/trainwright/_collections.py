"""Apply a function to every tensor inside nested containers."""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Return ``data`` with ``fn`` applied to each tensor in it.

    Dicts, lists, tuples and named tuples are rebuilt with the same type, and dataclass
    instances copied with their fields replaced (without calling ``__init__``, so frozen ones
    and ``__post_init__`` checks are no obstacle); anything else is returned unchanged.
    Containers without a tensor inside come back rebuilt but equal.
    """
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        items = [(k, apply_to_tensors(v, fn)) for k, v in data.items()]
        if isinstance(data, defaultdict):
            return type(data)(data.default_factory, items)
        return type(data)(items) if isinstance(data, dict) else dict(items)
    if isinstance(data, tuple):
        values = [apply_to_tensors(v, fn) for v in data]
        return type(data)(*values) if hasattr(data, "_fields") else type(data)(values)
    if isinstance(data, list):
        return type(data)(apply_to_tensors(v, fn) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        result = copy.copy(data)
        for field in dataclasses.fields(data):
            object.__setattr__(result, field.name, apply_to_tensors(getattr(data, field.name), fn))
        return result
    return data


def move_to_device(data: Any, device: torch.device) -> Any:
    """Move every tensor in ``data`` to ``device``; copies to a GPU do not block the host."""
    non_blocking = device.type == "cuda"
    return apply_to_tensors(data, lambda t: t.to(device, non_blocking=non_blocking))


def cast_floating(data: Any, dtype: torch.dtype, keep: tuple[torch.dtype, ...] = ()) -> Any:
    """Cast every floating-point tensor in ``data`` to ``dtype``, except those of a dtype in ``keep``."""
    return apply_to_tensors(data, lambda t: t.to(dtype) if t.is_floating_point() and t.dtype not in keep else t)
