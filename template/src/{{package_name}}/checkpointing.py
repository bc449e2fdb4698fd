"""Resuming from a checkpoint: what it holds beyond the trainer's counters, and what a resume reports.

``Trainer.save_checkpoint`` and ``Trainer.load_checkpoint`` use these. ``Fabric`` does the file
work: atomic writes, loading with ``weights_only=True``, and format versions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainwright import Fabric
from trainwright.config import ConfigError

from .config import changed_settings


def stateful_callbacks(callbacks: Iterable[object]) -> dict[str, object]:
    """The callbacks with ``state_dict`` and ``load_state_dict``, keyed by class name.

    A class that repeats is numbered. The key is not the module path, so that moving a
    callback's file does not orphan its state.
    """
    stateful: dict[str, object] = {}
    for callback in callbacks:
        if hasattr(callback, "state_dict") and hasattr(callback, "load_state_dict"):
            name = key = type(callback).__name__
            while key in stateful:
                key = f"{name}-{len(stateful)}"
            stateful[key] = callback
    return stateful


def load_for_resume(fabric: Fabric, path: Path, state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Load ``path`` into ``state`` and the stateful callbacks; return the checkpoint's other entries.

    Prints where the run resumes, which callbacks start afresh (the checkpoint has no state
    for them), and which settings differ from ``config``, the plain form of this run's config.

    Raises:
        ConfigError: nothing is at ``path``, or it is not a checkpoint this trainer can resume
            (unreadable, refused as unsafe, another format version, or another model's).
    """
    callbacks = stateful_callbacks(fabric.callbacks)
    try:
        extra = fabric.load(path, state)
        saved = extra.pop("callbacks", {})
        for key in callbacks.keys() & saved.keys():
            try:
                callbacks[key].load_state_dict(saved[key])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"the state of {key} does not load ({type(error).__name__}: {error})") from None
    except FileNotFoundError:
        raise ConfigError(f"cannot resume: there is no checkpoint at {str(path)!r}") from None
    except (ValueError, KeyError, RuntimeError) as error:
        reason = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        reason = " ".join(line.strip() for line in str(reason).splitlines()[:2])  # one line
        raise ConfigError(f"cannot resume from {str(path)!r}: {reason}") from None
    at = state["trainer"]
    fabric.print(f"resuming from {path} at epoch {at['epoch']}, batch {at['batch_idx']} (step {at['global_step']})")
    for key in sorted(callbacks.keys() - saved.keys()):
        fabric.print(f"  {key} has no state in the checkpoint and starts afresh")
    changed = changed_settings(extra.pop("config", None) or {}, config)
    if changed:
        fabric.print("  settings changed since the checkpoint: " + ", ".join(changed))
    return extra
