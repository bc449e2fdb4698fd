"""Evaluation loaders that run the same number of batches on every process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from trainwright._wrappers import FabricDataLoader

_END = object()


class EvenEvaluationLoader(FabricDataLoader):
    """An evaluation loader that yields as many batches on every process as the longest shard has.

    Evaluation shards hold every sample exactly once, so they may differ by a batch. A model
    whose forward pass runs a collective (FSDP all-gathers every layer's parameters) would then
    leave the process with the extra batch waiting for the others forever. This loader pads
    each shorter shard with copies of its own last batch; ``is_padding(batch_idx)`` tells which
    batches those are, and a loop runs the forward pass on them but counts nothing from them,
    so means over the evaluation set stay exact.

    The number of batches is agreed once per iteration (one all-reduce of the shards' lengths)
    for a loader with a length. Data without a length (an iterable-style dataset) is agreed
    batch by batch: one small all-reduce before each batch, the price of not knowing the end.

    Args:
        dataloader: this process's shard of the evaluation data.
        device: where batches go; ``None`` leaves them where the loader puts them.
        all_reduce_max: the maximum of a number over the processes, as a tensor.
    """

    def __init__(
        self,
        dataloader: DataLoader,
        device: torch.device | None,
        all_reduce_max: Callable[[float], torch.Tensor],
    ) -> None:
        super().__init__(dataloader, device)
        self._all_reduce_max = all_reduce_max
        self._real: int | None = None  # batches of this shard in the current iteration, once known

    def is_padding(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` of the current iteration is a copy that only pads this shard."""
        return self._real is not None and batch_idx >= self._real

    def _length(self) -> int | None:
        if isinstance(self._dataloader.dataset, IterableDataset):
            return None  # a length it may declare is not reliable per process (workers, sharding)
        try:
            return len(self._dataloader)
        except TypeError:
            return None

    def __iter__(self) -> Iterator[Any]:
        self._real = None
        length = self._length()
        batches = super().__iter__()
        if length is not None:
            return self._static(batches, length)
        return self._agreed(batches)

    def _static(self, batches: Iterator[Any], length: int) -> Iterator[Any]:
        total = int(self._all_reduce_max(float(length)).item())  # once per evaluation
        self._real = length
        last = _END
        for last in batches:
            yield last
        if length < total:
            yield from self._pad(last, total - length)

    def _agreed(self, batches: Iterator[Any]) -> Iterator[Any]:
        count, last = 0, _END
        while True:
            batch = next(batches, _END) if self._real is None else _END
            others = self._all_reduce_max(0.0 if batch is _END else 1.0).item()  # one per batch
            if not others:
                return
            if batch is _END:
                self._real = count if self._real is None else self._real
                yield from self._pad(last, 1)
            else:
                yield batch
                last = batch
            count += 1

    def _pad(self, last: Any, count: int) -> Iterator[Any]:
        if last is _END:
            last = self._first_sample()
        for _ in range(count):
            yield last

    def _first_sample(self) -> Any:
        """A batch of the dataset's first sample, for a process whose shard is empty."""
        loader = self._dataloader
        if isinstance(loader.dataset, IterableDataset):
            raise RuntimeError(
                "an evaluation shard is empty on this process while others have batches, and an iterable-style "
                "dataset has no sample to pad it with: give every process at least one evaluation batch"
            )
        batch_size = None if loader.batch_size is None else 1
        one = DataLoader(loader.dataset, batch_size=batch_size, sampler=[0], collate_fn=loader.collate_fn)
        return next(iter(FabricDataLoader(one, self._device)))
