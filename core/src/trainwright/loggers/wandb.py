"""A Weights & Biases logger; ``wandb`` is imported when the run starts, on the first thing logged."""

from __future__ import annotations

import glob
import importlib.util
import os
import secrets
import string
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwright.loggers._sender import BackgroundSender, check_seconds
from trainwright.loggers.base import STATUSES, Logger, flatten_params

_EXIT_CODE = {"success": 0, "failed": 1, "interrupted": 255}
_ID_ALPHABET = string.ascii_lowercase + string.digits


class WandbLogger(Logger):
    """Logs params, metrics and files to a Weights & Biases run.

    W&B's own settings apply: ``WANDB_MODE=offline`` writes the run to
    ``<save_dir>/wandb/offline-run-*`` for ``wandb sync`` to upload later, and ``WANDB_PROJECT``,
    ``WANDB_ENTITY`` and ``WANDB_API_KEY`` work as usual. Metrics are plotted against a ``step``
    metric that holds the trainer's step, so a resumed run can log steps again.

    The run starts on the first thing logged, never in ``__init__``: on the other ranks of a
    distributed job, where ``Fabric`` logs nothing, no run is ever started (calling ``wandb``
    directly on every rank starts one run per process). Nothing here waits on W&B: starting the
    run (``wandb.init``, which waits for W&B's servers when online), the config, metrics and
    files wait in memory, in order, and a background thread hands them to ``wandb`` every
    ``flush_interval`` seconds; ``flush()`` (before every checkpoint) only asks it to do so now.
    When W&B cannot be reached everything is kept and retried, with one warning when that
    begins and one when it ends. ``finalize`` finishes the run with exit code 0 for
    ``"success"`` and non-zero otherwise, which W&B shows as finished or failed, waiting at
    most ``close_timeout`` seconds (one after a send has failed, before or during the wait).

    A resumed run continues the same W&B run: the id is chosen here, ``state_dict()`` holds it,
    and ``load_state_dict`` (before anything is logged) makes the run reopen it. W&B cannot
    delete logged points, so the steps that a resumed run logs again after ``rewind`` appear
    twice against ``step``.

    Args:
        save_dir: the folder under which W&B writes its ``wandb/`` directory.
        project: the W&B project (``None``: ``WANDB_PROJECT``, or W&B's default).
        name: the run's display name.
        tags: tags for the run.
        flush_interval: seconds between two hand-overs of the metrics to ``wandb``.
        close_timeout: the most seconds ``finalize`` waits for the run to be handed over and finished.
        **init_kwargs: passed to ``wandb.init`` (``entity``, ``group``, ``mode``, ``settings``...).

    Raises:
        ImportError: the ``wandb`` package is not installed (checked without importing it).
        ValueError: ``flush_interval`` or ``close_timeout`` is not positive.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        project: str | None = None,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        flush_interval: float = 5.0,
        close_timeout: float = 30.0,
        **init_kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ImportError("WandbLogger needs the wandb package: pip install 'trainwright[wandb]'")
        check_seconds("WandbLogger", "flush_interval", flush_interval)
        check_seconds("WandbLogger", "close_timeout", close_timeout)
        self.close_timeout = close_timeout
        self.save_dir = Path(save_dir)
        self.project = project
        self.name = name
        self.tags = list(tags or [])
        self._init_kwargs = init_kwargs
        # Chosen here (W&B ids are 8 lowercase letters and digits) so that a checkpoint holds
        # it even before the run starts; nothing is sent until the run does.
        self._run_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        self._run: Any = None
        self._open = False  # whether this process logged something since the last finalize
        self._last_step = -1
        self._sender = BackgroundSender(self._send, flush_interval, name="WandbLogger")

    @property
    def run_id(self) -> str:
        """The W&B run's id."""
        return self._run_id

    @property
    def run(self) -> Any:
        """The ``wandb`` run, for logging what this interface does not cover.

        Unlike the other methods, this starts the run now if it has not started, and waits
        for it (and for a hand-over in progress).
        """
        with self._sender.lock:
            if self._run is None:
                self._start()
            self._open = True
            return self._run

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = self._last_step + 1 if step is None else step
        self._put(("metrics", step, dict(metrics)))
        self._last_step = step

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` (flattened to dotted names) in the run's config; on resume, new
        values replace old ones."""
        self._put(("config", flatten_params(params)))

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Save a file, or every file in a folder (which keeps its name), with the run's files.

        The background thread hands them over, in order with the metrics: keep them in place
        until ``finalize``.
        """
        self._put(("files", Path(path).resolve()))

    def rewind(self, step: int) -> None:
        """Drop the metrics after ``step`` that are not handed over yet; those already sent stay."""
        self._sender.drop(lambda item: item[0] != "metrics" or item[1] <= step)
        self._last_step = step

    def flush(self) -> None:
        """Ask the background thread to hand every metric logged so far to ``wandb``; returns at once."""
        self._sender.flush()

    def finalize(self, status: str = "success") -> None:
        """Hand over the rest and finish the run: exit code 0 for ``"success"``, 1 for
        ``"failed"``, 255 for ``"interrupted"`` (W&B shows both as failed until a resume
        finishes the run).

        Raises:
            ValueError: ``status`` is unknown.
        """
        if status not in STATUSES:
            allowed = ", ".join(map(repr, STATUSES))
            raise ValueError(f"WandbLogger.finalize(): status={status!r} is not one of {allowed}")
        if not self._open:
            return
        self._open = False
        self._sender.put(("end", _EXIT_CODE[status]))
        began = time.monotonic()
        left = self._sender.close(self.close_timeout)
        if left:
            waited = time.monotonic() - began  # close_timeout, or a second once W&B is known to be down
            warnings.warn(
                f"WandbLogger: W&B did not take the rest of the run: {left} items (metrics of a step, the "
                f"config, files, the run's end) were not handed over after {waited:.1f} s "
                f"(close_timeout={self.close_timeout:g})",
                RuntimeWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        """``{"run_id": ...}``: the id the run has, or will have when it starts."""
        return {"run_id": self._run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the run continue the W&B run whose id ``state`` holds.

        Raises:
            RuntimeError: the run has started already.
            TypeError: the run id is not a string.
        """
        run_id = state.get("run_id")
        if run_id is None:
            return
        if not isinstance(run_id, str):
            raise TypeError(f"WandbLogger.load_state_dict(): run_id must be a str, got {type(run_id).__qualname__}")
        if (self._open or self._run is not None) and run_id != self._run_id:
            raise RuntimeError(
                f"WandbLogger.load_state_dict(): run {self._run_id} has started already; "
                "load the state before logging anything"
            )
        self._run_id = run_id

    def _start(self) -> None:
        import wandb

        self.save_dir.mkdir(parents=True, exist_ok=True)
        # wandb reads WANDB_MODE once per process, when it first sets itself up; read it here, so
        # that the mode in force when this run starts is the one it gets.
        mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
        run = wandb.init(
            **{
                **mode,
                "dir": str(self.save_dir),
                "project": self.project,
                "name": self.name,
                "tags": self.tags or None,
                "id": self._run_id,
                "resume": "allow",  # continue the run with this id if there is one, else start it
                **self._init_kwargs,
            }
        )
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        self._run = run

    def _put(self, item: tuple[Any, ...]) -> None:
        self._open = True
        self._sender.put(item)

    def _send(self, items: list[tuple[Any, ...]]) -> None:
        """The background thread's send: items in order, each removed from ``items`` once handed over.

        The values of one step that arrive together go in one ``run.log``.
        """
        while items:
            if self._run is None:
                self._start()
            kind = items[0][0]
            if kind == "metrics":
                step = items[0][1]
                count = next((i for i, item in enumerate(items) if item[:2] != ("metrics", step)), len(items))
                row: dict[str, float] = {}
                for _, _, values in items[:count]:
                    row.update(values)
                self._run.log({**row, "step": step})
                del items[:count]
                continue
            if kind == "config":
                self._run.config.update(items[0][1], allow_val_change=True)
            elif kind == "files":
                path = items[0][1]
                files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
                for file in files:
                    self._run.save(glob.escape(str(file)), base_path=str(path.parent), policy="now")
            elif kind == "end":
                run, self._run = self._run, None
                run.finish(exit_code=items[0][1])
            del items[0]
