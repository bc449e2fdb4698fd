"""A TensorBoard logger; ``tensorboard`` is imported on the first write, not before."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwright.loggers.base import Logger, flatten_params


class TensorBoardLogger(Logger):
    """Writes metrics as TensorBoard scalars under ``root_dir``.

    Args:
        root_dir: the folder for the event files.
        **writer_kwargs: passed to ``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        ImportError: the ``tensorboard`` package is not installed (checked without importing it).
    """

    def __init__(self, root_dir: str | os.PathLike, **writer_kwargs: Any) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError("TensorBoardLogger needs the tensorboard package: pip install 'trainwright[tensorboard]'")
        self.root_dir = Path(root_dir)
        self._writer_kwargs = writer_kwargs
        self._writer: Any = None
        self._last_step = -1

    @property
    def writer(self) -> Any:
        """The ``SummaryWriter``, created on first use."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.root_dir), **self._writer_kwargs)
            self._writer_kwargs.pop("purge_step", None)  # once: a reopened writer must not hide new steps
        return self._writer

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = self._last_step + 1 if step is None else step
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)
        self._last_step = step

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` (flattened to dotted names) with TensorBoard's hparams plugin, in the
        run's own folder, where the HPARAMS tab lists them."""
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(flatten_params(params), {})
        file_writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)

    def rewind(self, step: int) -> None:
        """Have TensorBoard hide the events after ``step`` that an earlier writer left behind."""
        self.finalize()
        self._writer_kwargs["purge_step"] = step + 1
        self._last_step = step

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str = "success") -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
