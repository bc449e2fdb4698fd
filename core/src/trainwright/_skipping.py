"""Starting a data loader's epoch at batch k without reading the k batches before it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from trainwright._loaders import loader_settings


class _WithoutFirst:
    """A sampler or batch sampler whose first ``count`` items are dropped: indices only, no data."""

    def __init__(self, sampler: Iterable[Any], count: int) -> None:
        self.sampler, self.count = sampler, count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.count, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.count)  # type: ignore[arg-type]


def iterate_from(loader: DataLoader, start: int) -> Iterator[Any]:
    """Iterate one epoch of ``loader`` from batch ``start`` on.

    The batches before ``start`` are skipped in the (batch) sampler: their indices are drawn,
    so the order is the one a full epoch has, but the dataset is never asked for them. This
    takes a rebuilt loader with the same dataset, workers, collation and settings, whose
    workers last for this epoch only. An iterable-style dataset has no indices to skip, and a
    ``DataLoader`` subclass cannot be rebuilt faithfully: both read the skipped batches and
    drop them.
    """
    if start == 0:
        return iter(loader)
    if isinstance(loader.dataset, IterableDataset) or type(loader) is not DataLoader:
        return itertools.islice(iter(loader), start, None)
    settings = {**loader_settings(loader), "persistent_workers": False}
    if loader.batch_sampler is None:  # automatic batching is off: the sampler yields one sample per batch
        rebuilt = DataLoader(loader.dataset, batch_size=None, sampler=_WithoutFirst(loader.sampler, start), **settings)
    else:
        rebuilt = DataLoader(loader.dataset, batch_sampler=_WithoutFirst(loader.batch_sampler, start), **settings)
    return iter(rebuilt)
