"""The model's weights alone, for inference: ``python -m <package> export CHECKPOINT OUT``.

A checkpoint holds everything a resume needs (optimizer moments, random state, callbacks); an
export holds the model's state dict only, in one file that loads into ``Task(config).build_model()``:

    model = Task(config).build_model()
    safetensors.torch.load_model(model, "model.safetensors")                  # a .safetensors file
    model.load_state_dict(torch.load("model.pt", weights_only=True))          # a torch.save file

safetensors (``pip install safetensors``) is used where it is installed; the project does not
require it. It stores each tensor once, so weights that two modules share (a tied embedding)
are written once and tied again by ``load_model``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

import torch
from trainwright import Fabric
from trainwright.config import ConfigError, apply_mapping

from .config import Config
from .evaluate import holds_average, load_average, put_average, without_none
from .task import Task

Format = Literal["safetensors", "torch"]
SUFFIXES: dict[str, Format] = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".bin": "torch"}
# Precisions whose weights are not float32: the export keeps the checkpoint's type.
WEIGHT_DTYPES = {"bf16-true": torch.bfloat16, "64-true": torch.float64}


def export(
    checkpoint: Path, output: Path, format: Format | None = None, force: bool = False, average: bool = True
) -> tuple[Path, Format]:
    """Write the weights of ``checkpoint``'s model to ``output``; return where, and in which format.

    ``checkpoint`` is a checkpoint file, the folder of a sharded FSDP checkpoint (read in this
    one process), or a run directory (its ``checkpoints/last.ckpt``). The model is built from the
    checkpoint's own config and loaded with its weights, so a checkpoint of another model fails
    here rather than at inference. Those are the EMA callback's moving average where the
    checkpoint has one (the weights the fit validated, as ``evaluate`` and ``sample`` use them),
    unless ``average`` is false. ``format`` defaults to ``output``'s suffix (``.safetensors``;
    ``.pt``, ``.pth`` or ``.bin`` for torch), else safetensors where it is installed, else torch;
    an ``output`` without one of those suffixes gets the format's (``.safetensors`` or ``.pt``).

    Raises:
        ConfigError: there is no checkpoint there, it is not one of this project's, ``output``
            exists (without ``force``) or is a directory, or safetensors is asked for but not installed.
    """
    format = format or SUFFIXES.get(output.suffix) or ("safetensors" if _has_safetensors() else "torch")
    if output.suffix not in SUFFIXES and not output.is_dir():
        output = output.with_name(output.name + (".safetensors" if format == "safetensors" else ".pt"))
    if format == "safetensors" and not _has_safetensors():
        raise ConfigError("the safetensors format needs the safetensors package: pip install safetensors")
    if output.is_dir():
        raise ConfigError(f"{str(output)!r} is a directory; name the file to write, say {str(output / 'model')!r}")
    if output.exists() and not force:
        raise ConfigError(f"{str(output)!r} exists; remove it, name another file, or pass --force to replace it")
    model, _, saved = load_model(checkpoint, average)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    if format == "safetensors":
        from safetensors.torch import save_model

        step = str(saved.get("trainer", {}).get("global_step", ""))
        weights = "ema" if average and holds_average(saved) else "trained"
        save_model(model, str(partial), metadata={"global_step": step, "weights": weights})
    else:
        torch.save(model.state_dict(), partial)
    os.replace(partial, output)  # never a half-written file at ``output``
    return output, format


def load_model(checkpoint: Path, average: bool = True) -> tuple[torch.nn.Module, Task, dict[str, Any]]:
    """The model of ``checkpoint`` (see ``export``) on the CPU in evaluation mode, its task, the checkpoint's entries.

    With ``average``, the parameters are the EMA callback's moving average where the checkpoint
    has one (the buffers stay the trained ones, as during the fit's validations).

    Raises:
        ConfigError: there is no checkpoint there, or it is not one of this project's.
    """
    path = checkpoint / "checkpoints" / "last.ckpt" if (checkpoint / "checkpoints").is_dir() else checkpoint
    # A folder is a sharded checkpoint that FSDP wrote: FSDP reads it back, in this one process.
    sharded = path.is_dir()
    fabric = Fabric(accelerator="cpu", devices=1, strategy="fsdp" if sharded else "auto")
    try:
        saved = fabric.load(path)
        sections = {name: without_none(saved["config"][name]) for name in ("data", "model")}
        task = Task(apply_mapping(Config(), sections, source=f"the config in {path}"))
        model = task.build_model()
        dtype = WEIGHT_DTYPES.get(saved["config"].get("precision"))
        if dtype is not None:
            model = model.to(dtype)
        averaged = average and holds_average(saved)
        if sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sharded_model = fabric.setup(model)
            fabric.load(path, {"model": sharded_model}, strict=False)
            if averaged:  # the average's shards, read straight into the parameters
                load_average(fabric, path, sharded_model, in_place=True)
            # Gathered into plain tensors (one process holds every shard), then into a plain model.
            weights = get_model_state_dict(sharded_model, options=StateDictOptions(full_state_dict=True))
            model = task.build_model().to(dtype or torch.float32)
            model.load_state_dict(weights)
        else:
            model.load_state_dict(saved["model"])
            if averaged:  # the parameters only; the buffers stay the trained ones
                put_average(model, saved["callbacks"]["ema"]["weights"])
    except FileNotFoundError:
        raise ConfigError(f"there is no checkpoint at {str(path)!r}") from None
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise ConfigError(f"{str(path)!r} is not a checkpoint of this project's model: {error}") from None
    finally:
        fabric.teardown("success")
    return model.eval(), task, saved


def _has_safetensors() -> bool:
    return importlib.util.find_spec("safetensors") is not None
