"""Reading logged values off their device: one host-device sync per device, however many values."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def read_scalars(tensors: Mapping[str, torch.Tensor]) -> dict[str, bool | int | float]:
    """One-element tensors as Python numbers, each as ``.item()`` would give it.

    The tensors of each device are stacked and read with one ``.tolist()``, so a device is
    waited for once, not once per value. Mixed dtypes are stacked as float64 (float32 on MPS,
    which has no float64) and converted back: integers beyond 2**53 (2**24 on MPS) may round.
    """
    by_device: dict[torch.device, list[str]] = {}
    for name, tensor in tensors.items():
        by_device.setdefault(tensor.device, []).append(name)
    numbers: dict[str, bool | int | float] = {}
    for device, names in by_device.items():
        if len(names) == 1:
            numbers[names[0]] = tensors[names[0]].item()
            continue
        values = [tensors[name].detach().reshape(()) for name in names]
        dtypes = [value.dtype for value in values]
        if len(set(dtypes)) == 1:
            numbers.update(zip(names, torch.stack(values).tolist(), strict=True))
            continue
        common = torch.float32 if device.type == "mps" else torch.float64
        read = torch.stack([value.to(common) for value in values]).tolist()
        numbers.update((name, _as(dtype, x)) for name, dtype, x in zip(names, dtypes, read, strict=True))
    return numbers


def _as(dtype: torch.dtype, number: float) -> bool | int | float:
    if dtype is torch.bool:
        return bool(number)
    if not dtype.is_floating_point:
        return int(number)
    return number
