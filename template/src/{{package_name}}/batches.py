"""An epoch's training batches as the loop takes them: from where training stands, up to
``limit_train_batches``, each one knowing whether it is the epoch's last.

A resume in the middle of an epoch starts the loader at the next batch. A loader that can say
where it stands (``loader.stateful``: torchdata's ``StatefulDataLoader``, or an iterable data set
with ``state_dict`` read in the main process) restarts from its state in the checkpoint and reads
no trained batch again; any other is told to skip the trained batches, which costs nothing for
map-style data and reads them again for a stream (``why_read_again`` says why).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, IterableDataset
from trainwright import restore_rng_state
from trainwright.config import ConfigError

_END = object()  # the end of a data loader's iterator


class TrainBatches:
    """The training loader, epoch by epoch.

    Args:
        loader: the loader as ``Fabric.setup_dataloaders`` returns it (with ``set_epoch``,
            ``skip_batches`` and, where ``stateful``, ``state_dict`` and ``load_state_dict``).
        limit: ``limit_train_batches``: at most this many batches an epoch; None for all of them.

    Raises:
        ConfigError: ``loader`` has no batch on this process.
    """

    def __init__(self, loader: Any, limit: int | None) -> None:
        self.loader, self.limit = loader, limit
        self.stateful = getattr(loader, "stateful", False)
        # The loader's state after the epoch's first n batches, for the latest two n: the loop reads
        # a batch ahead, so the batch in training is the one before the latest read.
        self._states: dict[int, Any] = {}
        self._resume_state: Any = None  # a resumed run's loader state, for its first epoch
        if self.per_epoch == 0:
            raise ConfigError(
                "the training loader has no batch on this process (its data, batch_size and drop_last, and "
                "limit_train_batches, leave none): nothing would train"
            )

    @property
    def per_epoch(self) -> int | None:
        """Batches per epoch on this process after ``limit``; None when the data has no length."""
        try:
            length = len(self.loader)
        except TypeError:  # an iterable dataset without __len__: an epoch ends when it runs out
            return self.limit
        return length if self.limit is None else min(self.limit, length)

    def epoch(self, number: int, start: int = 0, rng_state: Any = None) -> Iterator[tuple[int, Any, bool]]:
        """``(batch_idx, batch, is_last)`` for the batches of epoch ``number`` from batch ``start`` on.

        The loader is positioned at once: the epoch's shuffle, and the ``start`` batches that a
        resumed run already trained passed over, from the loader's state where ``load_state_dict``
        gave one, else skipped (see ``why_read_again``). Its iterator starts at the
        first ``next``, after the epoch's hooks. ``rng_state`` (a resumed run's random state) is
        put back where it was captured: here when ``start`` is 0, else after the loader's
        ``iter()``, which draws from the random state.

        Raises:
            ConfigError: (while iterating) epoch ``number`` from its start yielded no batch.
        """
        if start == 0 and rng_state is not None:
            restore_rng_state(rng_state)  # resumed at an epoch's start: the state was captured just before it
        self.loader.set_epoch(number)  # a fresh shuffle per epoch (the same one after a resume)
        if start and self._resume_state is not None:
            self.loader.load_state_dict(self._resume_state)  # resumed mid-epoch: go on where the loader stood
        elif start:
            self.loader.skip_batches(start)  # resumed mid-epoch: skip what was trained (loading nothing, if it can)
        self._resume_state, self._states = None, {}
        return self._batches(number, start, rng_state if start else None)

    def state_dict(self, batches_done: int) -> Any:
        """The loader's state after the current epoch's first ``batches_done`` batches, for a checkpoint.

        None at an epoch's start, for a loader that is not ``stateful``, and for a point the loop
        has passed (only the latest two are kept).
        """
        return self._states.get(batches_done)

    def load_state_dict(self, state: Any) -> None:
        """Start the next ``epoch`` that begins mid-way from ``state`` (what ``state_dict`` returned), not by a skip."""
        self._resume_state = state

    def _batches(self, number: int, start: int, rng_state: Any) -> Iterator[tuple[int, Any, bool]]:
        # Looking one batch ahead tells which batch is the epoch's last (it ends an accumulation
        # window), also for data without a length.
        limit, iterator = self.limit, iter(self.loader)
        if rng_state is not None:
            restore_rng_state(rng_state)  # resumed mid-epoch: after iter(), which draws from the random state
        if limit is not None and start >= limit:
            return  # saved after the epoch's last batch, before its end: nothing is left to train
        batch, batch_idx = next(iterator, _END), start
        while batch is not _END:
            if self.stateful:  # before the next read: where the loader stands once this batch is trained
                self._states = {batch_idx: self._states.get(batch_idx), batch_idx + 1: self.loader.state_dict()}
            upcoming = next(iterator, _END) if limit is None or batch_idx + 1 < limit else _END
            yield batch_idx, batch, upcoming is _END
            batch, batch_idx = upcoming, batch_idx + 1
        if batch_idx == 0:  # an epoch that yielded nothing: the epochs would all be empty
            raise ConfigError(f"the training loader yielded no batch in epoch {number}: nothing would train")


def why_read_again(loader: Any) -> str | None:
    """Why a mid-epoch resume of ``loader`` (as ``Fabric.setup_dataloaders`` returned it) reads trained batches again.

    None where it reads none: it restarts from its state, or skips indices of map-style data.
    """
    if getattr(loader, "stateful", False):
        return None
    dataset, workers = getattr(loader, "dataset", None), getattr(loader, "num_workers", 0)
    if isinstance(dataset, IterableDataset):
        if callable(getattr(dataset, "state_dict", None)) and callable(getattr(dataset, "load_state_dict", None)):
            return (
                f"the data set has state_dict, but each of the loader's {workers} workers reads a copy of it, "
                "whose progress the main process cannot see; torchdata's StatefulDataLoader follows its workers"
            )
        return "the iterable data set has no indices to skip; give it state_dict and load_state_dict"
    own = getattr(loader, "dataloader", loader)
    if type(own) is not DataLoader:
        return f"a {type(own).__name__} cannot be rebuilt around a shortened sampler"
    return None
