"""Evaluating a checkpoint without training: ``python -m <package> evaluate CHECKPOINT``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from trainwright import Fabric
from trainwright.config import ConfigError, apply_mapping, apply_overrides

from .config import Config
from .ledger import Ledger
from .position import Position
from .strategy import setup_model, strategy_for
from .task import Task
from .task_checks import task_mistakes
from .validation import Validation

# What a checkpoint's config says about this machine or that run, not about the model and its data.
NOT_CARRIED = ("name", "run_dir", "resume", "accelerator", "devices", "strategy", "loggers", "compile")


def evaluate(checkpoint: Path, flags: Iterable[str] = (), output: Path | None = None) -> tuple[dict[str, float], Path]:
    """Validate a checkpoint's model: on the task's test loader if it has one, else on its validation loader.

    ``checkpoint`` is a checkpoint (a file, or the folder of a sharded FSDP checkpoint) or a run
    directory (its ``checkpoints/last.ckpt``). The settings are the checkpoint's own, so that the
    model and the data split are the ones it trained with, changed by ``flags`` (``--devices=2``,
    ``--precision=bf16-mixed``...). A sharded checkpoint loads under FSDP on any number of
    processes, one included. Returns the metrics and the JSON file written with them (``output``,
    by default beside the checkpoint).

    Raises:
        ConfigError: there is no checkpoint there, it is not one of this project's, a flag is
            wrong, or the task has nothing to evaluate on.
    """
    path = checkpoint / "checkpoints" / "last.ckpt" if (checkpoint / "checkpoints").is_dir() else checkpoint
    config = config_of(path, flags)
    try:
        fabric = Fabric(config.accelerator, config.devices, strategy_for(config), config.precision)
    except ValueError as error:  # Fabric names the device flag that is wrong
        raise ConfigError(str(error)) from None
    task = Task(config)
    with task_mistakes("its data"):
        test = getattr(task, "build_test_dataloader", None)
        split, loader = ("test", test()) if callable(test) else ("val", task.build_dataloaders()[1])
    if loader is None:
        raise ConfigError("the task has no validation loader and no build_test_dataloader(): nothing to evaluate")
    loader = fabric.setup_dataloaders(loader, evaluation=True)  # every sample once, on some process
    model = setup_model(fabric, config, task)
    try:
        fabric.load(path, {"model": model}, strict=False)  # the weights alone; a sharded one is resharded
        if _has_average(path):  # the EMA callback's weights, which the fit's validations used
            load_average(fabric, path, model, in_place=config.strategy == "fsdp")
    except (KeyError, RuntimeError, ValueError) as error:
        raise ConfigError(f"{str(path)!r} is not a checkpoint of this project's model: {error}") from None
    validation = Validation(task, Ledger(fabric, config, Position()))
    metrics = validation.run(model, loader, config.limit_val_batches, prefix=f"{split}/")
    output = output or path.parent / f"{path.name}.{split}.json"
    if fabric.is_global_zero:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"checkpoint": str(path), "metrics": metrics}, indent=2) + "\n")
    return metrics, output


def load_average(fabric: Fabric, path: Path, model: Any, in_place: bool) -> None:
    """Put the moving average of the weights that the EMA callback saved in ``path`` into ``model``'s parameters.

    ``in_place``: under FSDP, whose parameters are shards that the load fills where they are.
    """
    if in_place:
        fabric.load(path, {"callbacks": {"ema": AverageInPlace(model)}}, strict=False)
        return
    put_average(model, fabric.load(path)["callbacks"]["ema"]["weights"])


def put_average(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy the EMA callback's ``weights`` into ``model``'s parameters, by name (a weight tied to one gets it too).

    Raises:
        KeyError: a name the model lacks: not this model's average.
    """
    parameters = dict(_unwrapped(model).named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)


class AverageInPlace:
    """The model's parameters in the place of the EMA callback's ``weights``: a sharded load fills them in place."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return {"weights": {name: p.detach() for name, p in _unwrapped(self.model).named_parameters()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # read in place already


def _unwrapped(model: Any) -> Any:
    """The model the task built, under Fabric's wrapper and torch.compile's (EMA names its parameters so)."""
    module = getattr(model, "module", model)
    return getattr(module, "_orig_mod", module)


def _has_average(path: Path) -> bool:
    file = path / "state.pt" if path.is_dir() else path
    return holds_average(torch.load(file, map_location="cpu", weights_only=True, mmap=not path.is_dir()))


def holds_average(saved: dict[str, Any]) -> bool:
    """Whether a checkpoint's entries hold the EMA callback's moving average of the weights."""
    return bool((saved.get("callbacks") or {}).get("ema"))


def config_of(path: Path, flags: Iterable[str]) -> Config:
    """The config a checkpoint was trained with, less what belongs to its machine, with ``flags`` on top.

    Raises:
        ConfigError: nothing is at ``path``, or it is not a checkpoint of this project.
    """
    file = path / "state.pt" if path.is_dir() else path  # a sharded checkpoint keeps its config beside the shards
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True, mmap=not path.is_dir())
    except FileNotFoundError:
        raise ConfigError(f"there is no checkpoint at {str(path)!r}") from None
    except Exception as error:  # torch.load raises many kinds for a file that is not a checkpoint
        raise ConfigError(f"{str(path)!r} is not a checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ConfigError(f"{str(path)!r} is not a checkpoint of this project: it holds no config")
    settings = {key: _plain(value) for key, value in saved["config"].items() if key not in NOT_CARRIED}
    config = apply_mapping(Config(), without_none(settings), source=f"the config in {path}")
    if path.is_dir():
        config.strategy = "fsdp"  # the shards load only under FSDP; one process is enough
    return apply_overrides(config, flags)


def _plain(value: Any) -> Any:
    return without_none(value) if isinstance(value, dict) else value


def without_none(section: dict[str, Any]) -> dict[str, Any]:
    """A config section without its unset (None) values, which a config file cannot hold."""
    return {key: value for key, value in section.items() if value is not None}
