"""``loader.state_dict()`` and ``load_state_dict``: a stream restarted from a state reads none of the batches before it.

The stream records each sample it reads in a file, one line per read, so that reads made in
worker processes are counted too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainwright import Fabric

# Two workers on two cores: the warning that they compete with torch's threads is beside the point.
pytestmark = pytest.mark.filterwarnings("ignore:torch computes with")

SIZE = 24  # 6 batches of 4: 3 for each of 2 workers


class CountedStream(IterableDataset):
    """Samples ``0..size-1`` (a worker reads every other one); each read appends the sample to ``log``.

    ``state_dict`` is the number of samples the current iteration has yielded, and the next
    iteration after ``load_state_dict`` starts there, as the trainer's data sets must.
    """

    def __init__(self, log: Path, size: int = SIZE) -> None:
        self.log, self.size, self.yielded, self.start = log, size, 0, 0

    def __iter__(self):
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        mine = list(range(worker_id, self.size, workers))
        start, self.start, self.yielded = self.start, 0, self.start
        return self._read(mine[start:])

    def _read(self, samples: list[int]):
        for sample in samples:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{sample}\n".encode())
            finally:
                os.close(fd)
            self.yielded += 1
            yield sample

    def state_dict(self) -> dict[str, int]:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start = state["yielded"]


def reads(log: Path) -> list[int]:
    """The samples read since the log was last cleared, and clear it."""
    if not log.exists():
        return []
    samples = [int(line) for line in log.read_text().splitlines()]
    log.unlink()
    return samples


def stateful_loader(log: Path, num_workers: int) -> DataLoader:
    stateful_dataloader = pytest.importorskip("torchdata.stateful_dataloader")
    return stateful_dataloader.StatefulDataLoader(CountedStream(log), batch_size=4, num_workers=num_workers)


def plain_loader(log: Path, num_workers: int) -> DataLoader:
    return DataLoader(CountedStream(log), batch_size=4, num_workers=num_workers)


def first_then_rest(make, log: Path, num_workers: int, taken: int) -> tuple[list, list, list[int]]:
    """The whole epoch; the epoch of a new loader restarted from the state after ``taken`` batches; its reads."""
    fabric = Fabric(accelerator="cpu")
    loader = fabric.setup_dataloaders(make(log, num_workers))
    batches = iter(loader)
    whole = [next(batches) for _ in range(taken)]
    state = loader.state_dict()
    whole += list(batches)
    reads(log)
    resumed = fabric.setup_dataloaders(make(log, num_workers))
    resumed.load_state_dict(state)
    rest = list(resumed)
    return whole, rest, reads(log)


CASES = [
    pytest.param(stateful_loader, 0, id="StatefulDataLoader-0 workers"),
    pytest.param(stateful_loader, 2, id="StatefulDataLoader-2 workers", marks=pytest.mark.slow),
    pytest.param(plain_loader, 0, id="DataLoader over a stateful data set-0 workers"),
]


@pytest.mark.parametrize(("make", "num_workers"), CASES)
def test_a_loader_restarted_from_its_state_yields_the_rest_and_reads_only_it(tmp_path, make, num_workers):
    """State after 3 of 6 batches, taken while workers prefetch: a new loader yields batches 3.. and reads only them."""
    log = tmp_path / "reads.log"
    whole, rest, read = first_then_rest(make, log, num_workers, taken=3)
    assert len(whole) == 6
    assert [b.tolist() for b in rest] == [b.tolist() for b in whole[3:]]
    assert sorted(read) == sorted(int(sample) for batch in whole[3:] for sample in batch)


@pytest.mark.parametrize(("make", "num_workers"), CASES[:1] + CASES[2:])
def test_only_the_next_iteration_starts_from_the_state(tmp_path, make, num_workers):
    """After the restarted iteration, the next one is a whole epoch again."""
    log = tmp_path / "reads.log"
    loader = Fabric(accelerator="cpu").setup_dataloaders(make(log, num_workers))
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    list(batches)
    loader.load_state_dict(state)
    assert len(list(loader)) == 5
    assert len(list(loader)) == 6


def test_a_state_is_a_copy_that_later_batches_leave_alone(tmp_path):
    """The data set's state is copied when taken: reading on does not change a state already taken."""
    loader = Fabric(accelerator="cpu").setup_dataloaders(plain_loader(tmp_path / "reads.log", 0))
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    next(batches)
    assert state == {"dataset": {"yielded": 4}}
    assert loader.state_dict() == {"dataset": {"yielded": 8}}


def test_a_loader_that_cannot_say_where_it_stands_is_not_stateful(tmp_path):
    """A map-style data set, or a stateful stream read by a plain loader's workers: no state, and a state is refused."""
    fabric = Fabric(accelerator="cpu")
    mapped = fabric.setup_dataloaders(DataLoader(torch.arange(8.0), batch_size=4))
    workers = fabric.setup_dataloaders(plain_loader(tmp_path / "reads.log", 2))
    streamed = fabric.setup_dataloaders(plain_loader(tmp_path / "reads.log", 0))
    assert [mapped.stateful, workers.stateful, streamed.stateful] == [False, False, True]
    assert [mapped.state_dict(), workers.state_dict()] == [None, None]
    mapped.load_state_dict(None)  # nothing to restore: a whole epoch
    assert len(list(mapped)) == 2
    with pytest.raises(ValueError, match="this loader is not stateful"):
        workers.load_state_dict({"dataset": {"yielded": 4}})
    with pytest.raises(ValueError, match=r"state with \['loader'\]: this loader's state is \{'dataset': ...\}"):
        streamed.load_state_dict({"loader": {}})


def test_a_state_and_a_skip_replace_each_other(tmp_path):
    """The later of load_state_dict and skip_batches decides where the next iteration starts."""
    log = tmp_path / "reads.log"
    loader = Fabric(accelerator="cpu").setup_dataloaders(plain_loader(log, 0))
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    list(batches)
    loader.load_state_dict(state)
    loader.skip_batches(2)  # an iterable data set reads the skipped batches, and drops them
    assert len(list(loader)) == 4
    loader.skip_batches(2)
    loader.load_state_dict(state)
    assert len(list(loader)) == 5
