"""Rebuilding a ``DataLoader`` around another sampler, for sharding and for skipping batches."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader


def loader_settings(loader: DataLoader) -> dict[str, Any]:
    """The keyword arguments that rebuild ``loader`` around another sampler: workers, collation, pinning..."""
    settings = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "prefetch_factor": loader.prefetch_factor,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if hasattr(loader, "in_order"):  # torch 2.6 and later
        settings["in_order"] = loader.in_order
    return settings
