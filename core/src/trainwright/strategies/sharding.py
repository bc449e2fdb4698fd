"""Giving each process its own shard of a data loader's samples."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler


class ShardedSampler(Sampler[int]):
    """Deals the indices of another sampler out to the processes: ``rank``, ``rank + n``, ...

    The order is padded by repeating its start until every process has the same number of
    samples, as ``DistributedSampler`` does, so that no process runs out of batches early and
    leaves the others waiting. ``set_epoch`` is passed on to the wrapped sampler.

    The wrapped sampler must produce the same order on every process, for instance by drawing
    it from a generator seeded with the seed and the epoch.

    Args:
        sampler: the sampler to shard.
        num_replicas: the number of processes.
        rank: this process's index among them.
    """

    def __init__(self, sampler: Sampler[int], num_replicas: int, rank: int) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} does not fit num_replicas={num_replicas}")
        self.sampler, self.num_replicas, self.rank = sampler, num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)
        total = len(self) * self.num_replicas
        while indices and len(indices) < total:
            indices += indices[: total - len(indices)]
        return iter(indices[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.num_replicas)  # type: ignore[arg-type]


def shard_dataloader(loader: DataLoader, num_replicas: int, rank: int, seed: int) -> DataLoader:
    """Return ``loader`` rebuilt so that it yields only this process's share of the samples.

    A loader in order gets a ``DistributedSampler`` without shuffling; a shuffling one gets a
    ``DistributedSampler`` that shuffles with ``seed`` and the epoch given to ``set_epoch``; any
    other sampler is wrapped in a ``ShardedSampler``. A loader that already has a
    ``DistributedSampler``, or an iterable-style dataset (which shards itself), is returned as is.

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
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        raise TypeError(
            f"setup_dataloaders(): cannot shard the custom batch sampler {type(batch_sampler).__qualname__}; {advice}"
        )
    if type(sampler) is SequentialSampler:
        sharded: Sampler[int] = DistributedSampler(loader.dataset, num_replicas, rank, shuffle=False)
    elif type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == len(loader.dataset):
        sharded = DistributedSampler(loader.dataset, num_replicas, rank, shuffle=True, seed=seed)
    else:
        sharded = ShardedSampler(sampler, num_replicas, rank)
    kwargs = {
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
        kwargs["in_order"] = loader.in_order
    if batch_sampler is None:  # automatic batching is off: the loader yields single samples
        return DataLoader(loader.dataset, batch_size=None, sampler=sharded, **kwargs)
    return DataLoader(
        loader.dataset,
        batch_size=batch_sampler.batch_size,
        drop_last=batch_sampler.drop_last,
        sampler=sharded,
        **kwargs,
    )
