"""Resolution of ``Fabric``'s flags: a pure function of the flags and a hardware description.

Nothing here touches a device. ``probe_hardware`` is the one function that asks torch what is
present; ``resolve_flags`` takes its answer as an argument, so that every combination of flags
and hardware can be tested from a table on any machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from trainwright._resolved_flags import Flags
from trainwright.strategies import STRATEGY_CLASSES, Strategy
from trainwright.strategies.environment import env_int

ACCELERATORS = ("auto", "cpu", "cuda", "mps")
STRATEGIES = ("auto", *STRATEGY_CLASSES)
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class Hardware:
    """What the machine offers, as far as flag resolution cares.

    Attributes:
        cuda_devices: number of visible CUDA devices.
        cuda_bf16: whether those devices support bfloat16 (compute capability 8.0 or newer).
        mps: whether Apple's Metal backend is available.
        world_size: processes in the launched job (``WORLD_SIZE`` under torchrun), 1 otherwise.
    """

    cuda_devices: int = 0
    cuda_bf16: bool = False
    mps: bool = False
    world_size: int = 1


def probe_hardware(environ: Mapping[str, str] | None = None) -> Hardware:
    """Ask torch which devices exist. Reads, never writes, the environment."""
    environ = os.environ if environ is None else environ
    cuda_devices = torch.cuda.device_count()
    mps = getattr(torch.backends, "mps", None)
    return Hardware(
        cuda_devices=cuda_devices,
        cuda_bf16=bool(cuda_devices) and torch.cuda.is_bf16_supported(),
        mps=bool(mps and mps.is_available()),
        world_size=env_int(environ, "WORLD_SIZE", 1),
    )


def _choices(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {_choices(allowed)}")
    return value


def _strategy_class(strategy: object) -> type[Strategy] | None:
    """The class a strategy flag names (``None`` for ``"auto"``), or of the instance given."""
    if isinstance(strategy, Strategy):
        return type(strategy)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        raise ValueError(
            f"strategy={strategy.__name__} is a class; pass an instance, e.g. strategy={strategy.__name__}(), "
            f"or a name: {_choices(STRATEGIES)}"
        )
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not one of {_choices(STRATEGIES)}, or a Strategy instance")
    return None if strategy == "auto" else STRATEGY_CLASSES[strategy]


def _parse_devices(devices: object) -> int | tuple[int, ...] | None:
    """Return a count, explicit indices, or ``None`` for ``"auto"``."""
    if devices == "auto":
        return None
    if isinstance(devices, str):
        text = devices.strip()
        try:
            if "," in text:
                return tuple(int(part) for part in text.split(",") if part.strip())
            devices = int(text)
        except ValueError:
            raise ValueError(
                f"devices={devices!r} is not 'auto', a count, -1 (all) or a list of indices like '0,1'"
            ) from None
    if isinstance(devices, bool):
        raise ValueError(f"devices={devices!r} is not 'auto', a count, -1 (all) or a list of indices")
    if isinstance(devices, int):
        if devices == 0 or devices < -1:
            raise ValueError(f"devices={devices!r} must be a positive count, -1 (all devices) or 'auto'")
        return devices
    if (
        isinstance(devices, Sequence)
        and devices
        and all(isinstance(d, int) and not isinstance(d, bool) for d in devices)
    ):
        if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
            raise ValueError(f"devices={list(devices)!r} must list distinct, non-negative device indices")
        return tuple(devices)
    raise ValueError(f"devices={devices!r} is not 'auto', a count, -1 (all) or a list of indices")


def resolve_flags(
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = "auto",
    strategy: str | Strategy = "auto",
    precision: str = "32-true",
    *,
    hardware: Hardware,
) -> Flags:
    """Validate the flags against each other and the hardware, and pick concrete values.

    ``accelerator="auto"`` picks cuda, then mps, then cpu. ``devices="auto"`` is one device,
    also under a launcher, where each process has its own. ``strategy="auto"`` is ``"ddp"`` when more than
    one process or device is involved, ``"single"`` otherwise. A ``Strategy`` instance counts as
    its name; its class says whether it may span several devices (``distributed``) and which
    accelerators and precisions it runs (``check_flags``).

    Raises:
        ValueError: a flag has an unknown value, asks for hardware that is not there, does
            not fit with another flag, or names a one-process strategy in a job launched with
            several processes. The message names the flag and what would be valid.
    """
    accelerator = _check_choice("accelerator", accelerator, ACCELERATORS)
    strategy_cls = _strategy_class(strategy)
    precision = _check_choice("precision", precision, PRECISIONS)
    requested = _parse_devices(devices)

    if accelerator == "auto":
        accelerator = "cuda" if hardware.cuda_devices else "mps" if hardware.mps else "cpu"
    elif accelerator == "cuda" and not hardware.cuda_devices:
        available = "'cpu', 'mps'" if hardware.mps else "'cpu'"
        raise ValueError(f"accelerator='cuda' was requested, but no CUDA device is available; available: {available}")
    elif accelerator == "mps" and not hardware.mps:
        available = "'cpu', 'cuda'" if hardware.cuda_devices else "'cpu'"
        raise ValueError(f"accelerator='mps' was requested, but MPS is not available; available: {available}")

    present = {"cuda": hardware.cuda_devices, "mps": 1}.get(accelerator)
    if requested is None:
        indices: tuple[int, ...] = (0,)  # under a launcher, the strategy picks the device by local rank
    elif isinstance(requested, int):
        count = (present or 1) if requested == -1 else requested
        if present is not None and count > present:
            raise ValueError(f"devices={devices!r} asks for {count} {accelerator} devices, but {present} are available")
        indices = tuple(range(count))
    else:
        if accelerator == "cpu":
            raise ValueError(f"devices={devices!r}: on cpu, devices is a process count, not a list of indices")
        bad = [i for i in requested if i >= present]
        if bad:
            raise ValueError(
                f"devices={devices!r} asks for {accelerator}:{bad[0]}, "
                f"but only {accelerator}:0..{accelerator}:{present - 1} are available"
            )
        indices = requested

    if strategy_cls is None:
        strategy_cls = STRATEGY_CLASSES["ddp" if len(indices) > 1 or hardware.world_size > 1 else "single"]
    name = strategy_cls.name or strategy_cls.__name__
    if not strategy_cls.distributed and len(indices) > 1:
        several = _choices([n for n, cls in STRATEGY_CLASSES.items() if cls.distributed])
        raise ValueError(
            f"strategy={name!r} runs on one device, but devices={devices!r} selects {len(indices)}; "
            f"use one of {several}, or devices=1"
        )

    if not strategy_cls.distributed and hardware.world_size > 1:
        # Each launched process would train its own copy of the model, and all of them would
        # write the same run directory and checkpoints over each other.
        several = _choices([n for n, cls in STRATEGY_CLASSES.items() if cls.distributed])
        raise ValueError(
            f"strategy={name!r} runs one process, but this job was launched with WORLD_SIZE={hardware.world_size} "
            f"processes, which would train {hardware.world_size} independent copies writing over each other's "
            f"files; use strategy='auto' or one of {several}, or launch a single process"
        )

    if precision.startswith("bf16") and accelerator == "cuda" and not hardware.cuda_bf16:
        raise ValueError(
            f"precision={precision!r} needs bfloat16 support, which these CUDA devices lack "
            "(compute capability below 8.0); use '16-mixed' or '32-true'"
        )
    if precision == "64-true" and accelerator == "mps":
        raise ValueError("precision='64-true' is not supported on mps, which has no float64; use '32-true'")
    strategy_cls.check_flags(accelerator, precision)
    return Flags(accelerator=accelerator, devices=indices, strategy=name, precision=precision)
