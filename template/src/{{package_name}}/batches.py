"""An epoch's training batches as the loop takes them: from where training stands, up to
``limit_train_batches``, each one knowing whether it is the epoch's last."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trainwright import restore_rng_state
from trainwright.config import ConfigError

_END = object()  # the end of a data loader's iterator


class TrainBatches:
    """The training loader, epoch by epoch.

    Args:
        loader: the loader as ``Fabric.setup_dataloaders`` returns it (with ``set_epoch`` and
            ``skip_batches``).
        limit: ``limit_train_batches``: at most this many batches an epoch; None for all of them.

    Raises:
        ConfigError: ``loader`` has no batch on this process.
    """

    def __init__(self, loader: Any, limit: int | None) -> None:
        self.loader, self.limit = loader, limit
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
        resumed run already trained skipped without being loaded. Its iterator starts at the
        first ``next``, after the epoch's hooks. ``rng_state`` (a resumed run's random state) is
        put back where it was captured: here when ``start`` is 0, else after the loader's
        ``iter()``, which draws from the random state.

        Raises:
            ConfigError: (while iterating) epoch ``number`` from its start yielded no batch.
        """
        if start == 0 and rng_state is not None:
            restore_rng_state(rng_state)  # resumed at an epoch's start: the state was captured just before it
        self.loader.set_epoch(number)  # a fresh shuffle per epoch (the same one after a resume)
        if start:
            self.loader.skip_batches(start)  # resumed mid-epoch: skip what was trained, without loading it
        return self._batches(number, start, rng_state if start else None)

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
            upcoming = next(iterator, _END) if limit is None or batch_idx + 1 < limit else _END
            yield batch_idx, batch, upcoming is _END
            batch, batch_idx = upcoming, batch_idx + 1
        if batch_idx == 0:  # an epoch that yielded nothing: the epochs would all be empty
            raise ConfigError(f"the training loader yielded no batch in epoch {number}: nothing would train")
