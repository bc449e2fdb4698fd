"""The hooks the trainer fires, with the keyword arguments each receives besides ``trainer`` and ``fabric``.

A callback method takes any of these by name and nothing else; ``Fabric.check_hooks`` checks
every callback against this table before training starts, so a wrong signature fails at once.
The table is plain data, so ``python -OO`` (which drops docstrings) keeps it.
"""

from __future__ import annotations

HOOKS: dict[str, tuple[str, ...]] = {
    "on_sanity_check_end": ("metrics",),  # a few validation batches' metrics, before training; not logged
    "on_fit_start": ("model", "optimizer"),
    "on_train_epoch_start": ("epoch",),
    "on_train_batch_start": ("batch", "batch_idx"),
    "on_before_backward": ("loss",),
    "on_after_backward": ("model",),
    "on_before_optimizer_step": ("model", "optimizer", "global_step"),  # steps taken before this one
    "on_train_batch_end": ("batch", "batch_idx", "loss", "outputs", "global_step"),  # loss: on the device
    "on_log": ("metrics", "global_step"),  # the training values just read, as numbers, at each log step
    "on_train_epoch_end": ("epoch", "global_step", "metrics"),  # metrics: this epoch's validation, or {}
    "on_validation_epoch_start": ("epoch",),
    "on_validation_batch_end": ("batch", "batch_idx", "outputs"),
    "on_validation_epoch_end": ("epoch", "global_step", "metrics"),
    "on_save_checkpoint": ("checkpoint",),  # the dict about to be written; add entries to it
    "on_load_checkpoint": ("checkpoint",),  # what the file held beyond the trainer's own entries
    "on_fit_end": ("global_step", "metrics"),
    "on_exception": ("exception",),
}

# Fired on every batch: the trainer dispatches each only while some callback implements it.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)


def implemented(callbacks: list[object], hooks: tuple[str, ...] = BATCH_HOOKS) -> frozenset[str]:
    """The names in ``hooks`` that at least one of ``callbacks`` has as a method."""
    return frozenset(hook for hook in hooks if any(callable(getattr(c, hook, None)) for c in callbacks))
