"""Resuming from a checkpoint: callback state, which changed settings apply, and what a resume reports.

``Trainer.save_checkpoint`` and ``Trainer.load_checkpoint`` use these. ``Fabric`` does the file
work: atomic writes, loading with ``weights_only=True``, and format versions.

On resume, the checkpoint brings back the *state* (weights, optimizer moments, the schedule's
position, counters, random state, callbacks) and this run's config brings the *settings*. A
changed setting applies from the resumed step on, and the resume says so, except where it
cannot: a different model shape, or a different batch layout in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from trainwright import Fabric, capture_rng_state, select_rng_state
from trainwright.config import ConfigError

from .batches import why_read_again
from .config import plain_config

if TYPE_CHECKING:
    from .trainer import Trainer

# Settings that decide which samples make up each batch of an epoch. A checkpoint taken in the
# middle of an epoch resumes at a batch index, which means something else once these change.
BATCH_LAYOUT = ("seed", "batch_size", "grad_accum_steps", "limit_train_batches", "data.")


def state_key(callback: object) -> str:
    """The name of a callback's state in a checkpoint: its ``state_key``, or else its class name."""
    return getattr(callback, "state_key", None) or type(callback).__name__


def stateful_callbacks(callbacks: Iterable[object]) -> dict[str, object]:
    """The callbacks with ``state_dict`` and ``load_state_dict``, keyed by their ``state_key``.

    The key does not depend on the callbacks' order or module path, so reordering them or moving
    a file never hands one callback another's state.

    Raises:
        ConfigError: two stateful callbacks have the same key; give one a distinct ``state_key``.
    """
    stateful: dict[str, object] = {}
    for callback in callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            key = state_key(callback)
            if key in stateful:
                raise ConfigError(
                    f"two callbacks keep their checkpoint state under {key!r}; give one of them a distinct "
                    "state_key attribute (say, its class name and the setting that tells them apart)"
                )
            stateful[key] = callback
    return stateful


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """The objects a checkpoint restores in place; ``Fabric`` stores each as its state dict."""
    return {
        "model": trainer.model,
        "optimizer": trainer.optimizer,
        "scheduler": trainer.scheduler if trainer.scheduler is not None else {},
        "trainer": trainer.position.state_dict(),  # {"epoch": ..., "batch_idx": ..., "global_step": ...}
    }


def optimizer_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The settings of each parameter group (lr, weight decay, betas, momentum, ...), without the parameters."""
    return [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]


def checkpoint_of(trainer: Trainer, rng: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``trainer.save_checkpoint`` writes: its state, the callbacks', every process's random state and
    training loader state, the config.

    ``rng`` is this process's random state at this point where the process's own is not: a resumed
    run's, loaded but not yet put back (that waits for the first epoch), so that a resume with
    nothing left to train saves the state it loaded. None: the process's own.
    """
    fabric = trainer.fabric
    # Every process's own, in one collective: the loader's state is None where it has none (see batches.py).
    loader = trainer.train_batches.state_dict(trainer.position.batch_idx)
    here = capture_rng_state() if rng is None else rng
    rng_states, loaders = zip(*fabric.all_gather_object((here, loader)), strict=True)
    return {
        **trainer_state(trainer),
        "callbacks": stateful_callbacks(fabric.callbacks),
        "loggers": {type(logger).__name__: logger.state_dict() for logger in fabric.loggers},  # tracker run ids
        "rng": list(rng_states),
        "train_loader": list(loaders),  # where each process's training loader stands: no batch is read twice
        "config": plain_config(trainer.config),
        # As the task built them, before any step: a resume tells the settings a user changed from
        # those a scheduler moved (OneCycleLR cycles momentum) by comparing these.
        "optimizer_settings": trainer.optimizer_settings,
        "metadata": trainer.metadata,
    }


def resume_from(trainer: Trainer, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Restore ``trainer`` from the checkpoint at ``path``.

    Returns:
        What the file held beyond the trainer's entries, and this process's random state as it
        was saved, to be put back in the epoch where it was captured (None for a process that
        the checkpoint did not have, in a larger job now: it keeps its own seeding).

    Raises:
        ConfigError: see ``load_for_resume``.
    """
    fabric, state = trainer.fabric, trainer_state(trainer)
    extra = load_for_resume(fabric, path, state, plain_config(trainer.config))
    trainer.position.load_state_dict(state["trainer"])
    rng = select_rng_state(extra.pop("rng"), fabric.global_rank)
    _resume_loader(trainer, extra.pop("train_loader", None))
    saved_loggers = extra.pop("loggers", {})
    extra.pop("metadata", None)
    if fabric.is_global_zero:
        for logger in fabric.loggers:  # once nothing can fail: continue the tracker's run, drop later rows
            if type(logger).__name__ in saved_loggers:
                logger.load_state_dict(saved_loggers[type(logger).__name__])
            logger.rewind(trainer.global_step)
    return extra, rng


def _resume_loader(trainer: Trainer, saved: list[Any] | None) -> None:
    """Hand the training loader this process's state in the checkpoint; say why, if trained batches are read again."""
    fabric, at, batches = trainer.fabric, trainer.position, trainer.train_batches
    if at.batch_idx == 0:
        return  # at an epoch's start: there is nothing to pass over
    state, why = None, why_read_again(batches.loader)
    if batches.stateful:
        if saved is not None and len(saved) != fabric.world_size:
            # Each process's stream is its own shard, which another number of processes splits otherwise.
            why = f"the checkpoint holds the training loader's state on {len(saved)} processes, this run has "
            why += str(fabric.world_size)
        elif saved is None or saved[fabric.global_rank] is None:
            why = "the checkpoint holds no state of the training loader (it was saved from a loader without one)"
        else:
            state = saved[fabric.global_rank]
    batches.load_state_dict(state)
    if state is None and why is not None:
        trained = f"the {at.batch_idx} batches of epoch {at.epoch} trained before the checkpoint"
        fabric.print(f"  {trained} are read again: {why}")


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(name, old, new)`` for each setting of ``new`` that differs from ``old``, except ``resume``."""
    changes = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            changes += changed_settings(before, value, f"{prefix}{key}.")
        elif f"{prefix}{key}" != "resume" and before != value:
            changes.append((f"{prefix}{key}", before, value))
    return changes


def load_for_resume(
    fabric: Fabric,
    path: Path,
    state: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Load ``path`` into ``state`` and the stateful callbacks; return the checkpoint's other entries.

    ``config`` is the plain form of this run's config. The optimizer's settings (learning rate,
    weight decay, ...) and the schedule's base rates are this run's, not the checkpoint's; its
    moments and the schedule's position come from the checkpoint. Prints where the run
    resumes, which callbacks start afresh, and which settings changed and now apply.

    Raises:
        ConfigError: nothing is at ``path``; it is not a checkpoint this trainer can resume
            (unreadable, refused as unsafe, another format version, another model's); or a
            setting changed that a resume cannot follow.
    """
    callbacks = stateful_callbacks(fabric.callbacks)
    optimizer, scheduler = state["optimizer"], state["scheduler"]
    settings = optimizer_settings(optimizer)  # as this run built them: nothing has stepped yet
    base_rates = list(getattr(scheduler, "base_lrs", []))
    try:
        extra = fabric.load(path, state)
        saved = extra.pop("callbacks", {})
        for key, callback in callbacks.items():  # checkpoints before 0.5 keyed callbacks by class name
            if key not in saved and type(callback).__name__ in saved:
                saved[key] = saved.pop(type(callback).__name__)
        for key in callbacks.keys() & saved.keys():
            try:
                callbacks[key].load_state_dict(saved[key])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"the state of {key} does not load ({type(error).__name__}: {error})") from None
    except FileNotFoundError:
        raise ConfigError(f"cannot resume: there is no checkpoint at {str(path)!r}") from None
    except (ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"cannot resume from {str(path)!r}: {_why(fabric, path, config, error)}") from None
    at = state["trainer"]
    changes = changed_settings(extra.pop("config", None) or {}, config)
    layout = [name for name, _, _ in changes if name.startswith(BATCH_LAYOUT)]
    if layout and at["batch_idx"] > 0:
        raise ConfigError(
            f"cannot resume from {str(path)!r}: it was saved in the middle of epoch {at['epoch']} (after batch "
            f"{at['batch_idx']}), and {', '.join(layout)} changed since, so the rest of the epoch's batches would "
            "not be the ones it left; resume with the old values, or from a checkpoint at an epoch's end"
        )
    _apply_settings(optimizer, scheduler, settings, base_rates, extra.pop("optimizer_settings", None))
    fabric.print(f"resuming from {path} at epoch {at['epoch']}, batch {at['batch_idx']} (step {at['global_step']})")
    for key in sorted(callbacks.keys() - saved.keys()):
        fabric.print(f"  {key} has no state in the checkpoint and starts afresh")
    if changes:
        changed = ", ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changes)
        fabric.print(f"  settings changed since the checkpoint, which apply from here: {changed}")
    return extra


def _apply_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    settings: list[dict[str, Any]],
    base_rates: list[float],
    saved: list[dict[str, Any]] | None,
) -> None:
    """Give the optimizer the settings this run changed, keeping the checkpoint's position in the schedule.

    A setting applies only where this run built it otherwise than the checkpoint's run did
    (``saved``): the others keep the checkpoint's values, which a scheduler may have moved
    (momentum under ``OneCycleLR``). A checkpoint from before 0.6 has no ``saved``: then every
    setting but the rate applies, as it did.

    Raises:
        ConfigError: the learning rate changed, and the schedule is not one whose rate is a
            function of its step (a ``LambdaLR``), so the new rate cannot be placed on it.
    """
    saved = saved if saved is not None and len(saved) == len(settings) else [None] * len(settings)
    for group, own, before in zip(optimizer.param_groups, settings, saved, strict=True):
        for key, value in own.items():
            if key not in ("lr", "initial_lr") and (before is None or not _same(before.get(key), value)):
                group[key] = value
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.base_lrs = base_rates
        step = scheduler.last_epoch
        for group, base, factor in zip(optimizer.param_groups, base_rates, scheduler.lr_lambdas, strict=True):
            group["initial_lr"], group["lr"] = base, base * factor(step)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    elif not base_rates:  # no schedule: the rate is the setting itself
        for group, own in zip(optimizer.param_groups, settings, strict=True):
            group["lr"] = own["lr"]
    elif base_rates != list(scheduler.base_lrs):
        raise ConfigError(
            f"the learning rate changed since the checkpoint, but its {type(scheduler).__name__} schedule keeps the "
            "rates it was saved with; resume with the old rate, or use a schedule that is a LambdaLR of the step"
        )


def _same(a: Any, b: Any) -> bool:
    """Equality for settings, which may be tensors (a capturable optimizer's rate) or tuples of them."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _why(fabric: Fabric, path: Path, config: dict[str, Any], error: BaseException) -> str:
    """One line on why a checkpoint did not load, naming the settings behind a shape mismatch."""
    reason = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    reason = " ".join(line.strip() for line in str(reason).splitlines()[:2])
    if "size mismatch" in reason or "parameter group" in reason:
        try:
            old = fabric.load(path).get("config") or {}
        except (ValueError, KeyError, RuntimeError):
            return reason
        shape = [f"{name} {a!r} -> {b!r}" for name, a, b in changed_settings(old, config) if name.startswith("model.")]
        if shape:
            return f"the model changed since the checkpoint ({', '.join(shape)}), and its weights do not fit: {reason}"
        if "parameter group" in reason:
            return f"{reason} (the task now builds its optimizer with other parameter groups)"
    return reason
