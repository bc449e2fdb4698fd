"""``loader.skip_batches(k)``: an epoch started at batch k yields the tail of the full epoch and never reads the head.

Every dataset here records each ``__getitem__`` in a file, one index per line, so that reads
made in worker processes are counted too.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, Sampler, SequentialSampler

from trainwright import Fabric
from trainwright.strategies import shard_dataloader

SIZE = 23  # odd, and not a multiple of the batch size


class RecordedReads(Dataset):
    """Sample ``i`` is ``(i, i * 10.0)``; each read appends ``i`` to ``log``."""

    def __init__(self, log: Path, size: int = SIZE) -> None:
        self.log, self.size = log, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, float]:
        # One short append per read: whole lines even when several workers write at once.
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{index}\n".encode())
        finally:
            os.close(fd)
        return index, index * 10.0


def reads(log: Path) -> list[int]:
    """The indices read since the log was last cleared, and clear it."""
    if not log.exists():
        return []
    indices = [int(line) for line in log.read_text().splitlines()]
    log.unlink()
    return indices


def indices_of(batches: list) -> list[int]:
    return [int(i) for index, _ in batches for i in index]


def assert_same_batches(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (a_index, a_value), (b_index, b_value) in zip(got, expected, strict=True):
        assert torch.equal(a_index, b_index)
        assert torch.equal(a_value, b_value)


class EpochShuffle(Sampler[int]):
    """A shuffle drawn from the seed and the epoch, as an exactly resumable loader needs."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


def make_loader(log: Path, shard: int | None, shuffle: bool, num_workers: int):
    """A loader as Fabric returns it; ``shard`` is this process's rank of 2 (sharded as DDP shards), or None."""
    if shard is None:
        sampler = EpochShuffle(SIZE, seed=7) if shuffle else None
        loader = DataLoader(RecordedReads(log), batch_size=4, sampler=sampler, num_workers=num_workers)
    else:  # a DistributedSampler, shuffled (or not) by the seed and the epoch
        loader = DataLoader(RecordedReads(log), batch_size=4, shuffle=shuffle, num_workers=num_workers)
        loader = shard_dataloader(loader, 2, shard, seed=7)
    return Fabric(accelerator="cpu").setup_dataloaders(loader, use_distributed_sampler=False)


def case(shard: int | None, shuffle: bool, workers: int, *marks: pytest.MarkDecorator):
    where = "one process" if shard is None else f"rank {shard} of 2"
    order = "shuffled" if shuffle else "in order"
    return pytest.param(shard, shuffle, workers, id=f"{where}-{order}-{workers} workers", marks=marks)


CASES = [case(shard, shuffle, 0) for shard, shuffle in itertools.product([None, 0, 1], [False, True])]
CASES += [case(None, True, 2, pytest.mark.slow), case(1, True, 2, pytest.mark.slow)]  # worker processes read


@pytest.mark.parametrize(("shard", "shuffle", "workers"), CASES)
@pytest.mark.parametrize("skip", [3, 1])
def test_an_epoch_started_at_batch_k_is_the_tail_and_reads_only_it(tmp_path, shard, shuffle, workers, skip):
    """After set_epoch(e) and skip_batches(k), the loader yields batches k.. of epoch e and reads only their samples."""
    log = tmp_path / "reads.log"
    full_loader = make_loader(log, shard, shuffle, workers)
    full_loader.set_epoch(2)
    full = list(full_loader)
    reads(log)
    loader = make_loader(log, shard, shuffle, workers)
    loader.set_epoch(2)
    loader.skip_batches(skip)
    tail = list(loader)
    assert_same_batches(tail, full[skip:])
    assert sorted(reads(log)) == sorted(indices_of(full[skip:]))
    assert len(loader) == len(full)  # the length of a whole epoch
    # Only that iteration: the next one is a whole epoch again.
    assert_same_batches(list(loader), full)


def test_a_skip_at_or_past_the_end_yields_nothing_and_reads_nothing(tmp_path):
    """Skipping every batch of the epoch, or more, yields no batch and reads no sample."""
    log = tmp_path / "reads.log"
    loader = make_loader(log, shard=None, shuffle=False, num_workers=0)
    for skip in (len(loader), len(loader) + 2):
        loader.skip_batches(skip)
        assert list(loader) == []
        assert reads(log) == []


def test_skipping_works_without_automatic_batching_and_with_a_batch_sampler(tmp_path):
    """A loader with batch_size=None skips samples; one with its own batch sampler skips its batches."""
    log = tmp_path / "reads.log"
    fabric = Fabric(accelerator="cpu")
    single = fabric.setup_dataloaders(DataLoader(RecordedReads(log), batch_size=None))
    single.skip_batches(20)
    assert [index for index, _ in single] == [20, 21, 22]
    assert reads(log) == [20, 21, 22]

    class Pairs(BatchSampler):
        """A custom batch sampler: two indices per batch."""

    pairs = DataLoader(RecordedReads(log), batch_sampler=Pairs(SequentialSampler(range(SIZE)), 2, drop_last=False))
    loader = fabric.setup_dataloaders(pairs)
    loader.skip_batches(10)
    assert [index.tolist() for index, _ in loader] == [[20, 21], [22]]
    assert reads(log) == [20, 21, 22]


def test_iterable_datasets_and_loader_subclasses_read_the_skipped_batches(tmp_path):
    """Without indices to skip (an iterable dataset) or a loader that can be rebuilt, the head is read and dropped."""
    log = tmp_path / "reads.log"

    class Stream(IterableDataset):
        def __iter__(self):
            return (RecordedReads(log)[i] for i in range(6))

    class MyLoader(DataLoader):
        pass

    fabric = Fabric(accelerator="cpu")
    for loader in (DataLoader(Stream(), batch_size=2), MyLoader(RecordedReads(log, size=6), batch_size=2)):
        wrapped = fabric.setup_dataloaders(loader)
        wrapped.skip_batches(2)
        assert [index.tolist() for index, _ in wrapped] == [[4, 5]]
        assert reads(log) == list(range(6))


@pytest.mark.parametrize("count", [-1, 1.5, "2", True, None])
def test_bad_skip_counts_are_refused(tmp_path, count):
    """A count that is not an integer of at least 0 raises ValueError naming it."""
    loader = make_loader(tmp_path / "reads.log", shard=None, shuffle=False, num_workers=0)
    with pytest.raises(ValueError, match=rf"skip_batches\(\): count={count!r} is not an integer of at least 0"):
        loader.skip_batches(count)
