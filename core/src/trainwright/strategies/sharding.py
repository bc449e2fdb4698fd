"""Giving each process its own shard of a data loader's samples."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from trainwright._loaders import loader_settings


class ShardedSampler(Sampler[int]):
    """Deals the indices of another sampler out to the processes: ``rank``, ``rank + n``, ...

    With ``pad`` (the default, for training), the order is padded by repeating its start until
    every process has the same number of samples, as ``DistributedSampler`` does, so that no
    process runs out of batches early and leaves the others waiting in a collective. Without
    it (for evaluation), every sample is dealt exactly once and the shards may differ in
    length by one. ``set_epoch`` is passed on to the wrapped sampler.

    The wrapped sampler must produce the same order on every process, for instance by drawing
    it from a generator seeded with the seed and the epoch.

    Args:
        sampler: the sampler to shard.
        num_replicas: the number of processes.
        rank: this process's index among them.
        pad: whether to pad the shards to equal length.
    """

    def __init__(self, sampler: Sampler[int], num_replicas: int, rank: int, pad: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} does not fit num_replicas={num_replicas}")
        self.sampler, self.num_replicas, self.rank, self.pad = sampler, num_replicas, rank, pad

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)
        if not self.pad:
            return iter(indices[self.rank :: self.num_replicas])
        total = len(self) * self.num_replicas
        while indices and len(indices) < total:
            indices += indices[: total - len(indices)]
        return iter(indices[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        size = len(self.sampler)  # type: ignore[arg-type]
        if not self.pad:
            return len(range(self.rank, size, self.num_replicas))
        return math.ceil(size / self.num_replicas)


class _EpochPermutation(Sampler[int]):
    """A shuffle of ``range(size)`` drawn from ``seed + epoch``: the order ``DistributedSampler`` shuffles to."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def shard_dataloader(loader: DataLoader, num_replicas: int, rank: int, seed: int, pad: bool = True) -> DataLoader:
    """Return ``loader`` rebuilt so that it yields only this process's share of the samples.

    For training (``pad=True``), a loader in order gets a ``DistributedSampler`` without
    shuffling; a shuffling one gets a ``DistributedSampler`` that shuffles with ``seed`` and the
    epoch given to ``set_epoch``; any other sampler is wrapped in a ``ShardedSampler``. Every
    process then gets the same number of samples, some of them twice.

    For evaluation (``pad=False``), every sampler is wrapped in an unpadded ``ShardedSampler``
    (a shuffling loader's order is ``DistributedSampler``'s, from ``seed`` and the epoch), so
    every sample is read exactly once, and shards differ in length by at most one sample. Use
    it only for a loop that runs no collective per batch: sum and count on each process, then
    all-reduce once after the loop.

    A loader that already has a ``DistributedSampler`` (padding included), or an iterable-style
    dataset (which shards itself), is returned as is.

    Raises:
        TypeError: the loader is a subclass of ``DataLoader`` or has a custom batch sampler,
            neither of which can be rebuilt faithfully. Shard it yourself and pass
            ``use_distributed_sampler=False`` to ``Fabric.setup_dataloaders``.
    """
    batch_sampler = loader.batch_sampler
    # With an explicit BatchSampler, its sampler (not ``loader.sampler``) decides the order.
    sampler = batch_sampler.sampler if isinstance(batch_sampler, BatchSampler) else loader.sampler
    if isinstance(loader.dataset, IterableDataset) or isinstance(sampler, DistributedSampler):
        return loader
    advice = "give it a DistributedSampler yourself and call setup_dataloaders(..., use_distributed_sampler=False)"
    if type(loader) is not DataLoader:
        raise TypeError(
            f"setup_dataloaders(): cannot rebuild a {type(loader).__qualname__} with a sharded sampler; {advice}"
        )
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        raise TypeError(
            f"setup_dataloaders(): cannot shard the custom batch sampler {type(batch_sampler).__qualname__}; {advice}"
        )
    shuffled = type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == len(loader.dataset)
    if not pad:
        order = _EpochPermutation(len(loader.dataset), seed) if shuffled else sampler
        sharded: Sampler[int] = ShardedSampler(order, num_replicas, rank, pad=False)
    elif type(sampler) is SequentialSampler:
        sharded = DistributedSampler(loader.dataset, num_replicas, rank, shuffle=False)
    elif shuffled:
        sharded = DistributedSampler(loader.dataset, num_replicas, rank, shuffle=True, seed=seed)
    else:
        sharded = ShardedSampler(sampler, num_replicas, rank)
    settings = loader_settings(loader)
    if batch_sampler is None:  # automatic batching is off: the loader yields single samples
        return DataLoader(loader.dataset, batch_size=None, sampler=sharded, **settings)
    return DataLoader(
        loader.dataset,
        batch_size=batch_sampler.batch_size,
        drop_last=batch_sampler.drop_last,
        sampler=sharded,
        **settings,
    )
