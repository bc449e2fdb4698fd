"""An MLflow logger; ``mlflow`` is imported when the run starts, on the first thing logged."""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwright.loggers._sender import BackgroundSender
from trainwright.loggers.base import STATUSES, Logger, flatten_params

_RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_NAME = re.compile(r"^[/\w.\- :]{1,250}$")  # what MLflow accepts as a metric or param name
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
_PARAMS_PER_BATCH = 100


class MLflowLogger(Logger):
    """Logs params, metrics and artifacts to an MLflow run.

    Where the run goes: ``tracking_uri`` if given, else the ``MLFLOW_TRACKING_URI`` environment
    variable, else a local store in ``save_dir``: the SQLite database ``mlflow.db`` and the
    folder ``artifacts/``, which ``mlflow ui --backend-store-uri sqlite:///<save_dir>/mlflow.db``
    shows. The experiment is ``experiment_name`` if given, else ``MLFLOW_EXPERIMENT_NAME``,
    else ``"trainwright"``; it is created when missing.

    The run starts on the first thing logged, never in ``__init__``: on the other ranks of a
    distributed job, where ``Fabric`` logs nothing, no run is ever started. Metrics wait in
    memory and a background thread sends them every ``flush_interval`` seconds in
    ``log_batch`` calls, so ``log_metrics`` never waits on the store. ``flush()`` (which
    ``Fabric.save`` calls before every checkpoint) and ``finalize`` send the rest.
    ``finalize`` marks the run ``FINISHED``, ``FAILED`` or, for ``"interrupted"``, ``KILLED``.

    A resumed run continues the same MLflow run: ``state_dict()`` holds its id once it has
    started, and ``load_state_dict`` (before anything is logged) reopens it. MLflow cannot
    delete metric points, so the steps that a resumed run logs again after ``rewind`` appear
    twice in the run's history (with different timestamps); MLflow keeps a run's params
    fixed, so a param whose value changed on resume is reported in a warning, not recorded.

    Args:
        save_dir: the folder for the local store; needed only without a tracking URI.
        experiment_name: the experiment to log into.
        run_name: the run's name in the UI (MLflow picks one when ``None``).
        tags: tags to set on a new run.
        tracking_uri: where to log, e.g. ``"http://mlflow.internal:5000"``.
        flush_interval: seconds between two sends of the metrics.

    Raises:
        ImportError: the ``mlflow`` package is not installed (checked without importing it).
        ValueError: there is neither a tracking URI nor ``save_dir``, or ``flush_interval`` is
            not positive.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        flush_interval: float = 5.0,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("MLflowLogger needs the mlflow package: pip install 'trainwright[mlflow]'")
        if not flush_interval > 0:
            raise ValueError(f"MLflowLogger: flush_interval={flush_interval!r} must be a number of seconds > 0")
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.save_dir = Path(save_dir) if save_dir is not None else None
        if tracking_uri is None:
            if self.save_dir is None:
                raise ValueError(
                    "MLflowLogger needs save_dir (for a local store) or a tracking URI "
                    "(tracking_uri=... or the MLFLOW_TRACKING_URI environment variable)"
                )
            tracking_uri = f"sqlite:///{self.save_dir.resolve() / 'mlflow.db'}"
            self._artifact_location: str | None = (self.save_dir.resolve() / "artifacts").as_uri()
        else:
            self._artifact_location = None  # the tracking server decides
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "trainwright"
        self.run_name = run_name
        self.tags = dict(tags or {})
        self._run_id: str | None = None
        self._client: Any = None
        self._active = False  # whether this process started (or reopened) the run and has not ended it
        self._last_step = -1
        self._checked: set[str] = set()
        self._sender = BackgroundSender(self._send_metrics, flush_interval, name="MLflowLogger")

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id, once the run has started (or was loaded by ``load_state_dict``)."""
        return self._run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name in metrics:
            if name not in self._checked:
                _check_name(name, "metric")
                self._checked.add(name)
        if not self._active:
            self._start()
        step = self._last_step + 1 if step is None else step
        self._sender.put((step, int(time.time() * 1000), dict(metrics)))
        self._last_step = step

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` (flattened to dotted names) as the run's params.

        On a resumed run only the new ones are recorded; a changed value is reported in a
        warning. Values longer than MLflow's limit of 6000 characters are cut.

        Raises:
            ValueError: a name has characters that MLflow does not accept.
        """
        from mlflow.entities import Param

        params = flatten_params(params)
        for name in params:
            _check_name(name, "param")
        if not self._active:
            self._start()
        with self._sender.lock:
            known = self._client.get_run(self._run_id).data.params
        new, changed = [], []
        for name, value in params.items():
            text = str(value)
            if len(text) > _MAX_PARAM_LENGTH:
                text = text[: _MAX_PARAM_LENGTH - 3] + "..."
            if name not in known:
                new.append(Param(name, text))
            elif known[name] != text:
                changed.append(f"{name} ({known[name]} -> {text})")
        with self._sender.lock:
            for i in range(0, len(new), _PARAMS_PER_BATCH):
                self._client.log_batch(self._run_id, params=new[i : i + _PARAMS_PER_BATCH], synchronous=True)
        if changed:
            warnings.warn(
                f"MLflowLogger: run {self._run_id} keeps its params; not recorded: {', '.join(changed)}",
                UserWarning,
                stacklevel=2,
            )

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Copy a file, or a folder with what it holds, to the run's artifacts (a folder keeps its name)."""
        if not self._active:
            self._start()
        path = Path(path)
        with self._sender.lock:
            if path.is_dir():
                self._client.log_artifacts(self._run_id, str(path), artifact_path=path.name)
            else:
                self._client.log_artifact(self._run_id, str(path))

    def rewind(self, step: int) -> None:
        """Drop the metrics after ``step`` that are not sent yet; those already sent stay."""
        self._sender.drop(lambda item: item[0] <= step)
        self._last_step = step

    def flush(self) -> None:
        """Send every metric logged so far; raises what the store raised, keeping them for a retry."""
        self._sender.flush()

    def finalize(self, status: str = "success") -> None:
        """Send the rest and mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (for ``"interrupted"``).

        Raises:
            ValueError: ``status`` is unknown.
        """
        if status not in STATUSES:
            allowed = ", ".join(map(repr, STATUSES))
            raise ValueError(f"MLflowLogger.finalize(): status={status!r} is not one of {allowed}")
        if not self._active:
            return
        try:
            self._sender.close()
        finally:
            self._client.set_terminated(self._run_id, _RUN_STATUS[status])
            self._active = False

    def state_dict(self) -> dict[str, Any]:
        """``{"run_id": ...}`` once the run has started, else ``{}``."""
        return {"run_id": self._run_id} if self._run_id is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run whose id ``state`` holds, when the run starts.

        Raises:
            RuntimeError: this logger already started a run in this process.
            TypeError: the run id is not a string.
        """
        run_id = state.get("run_id")
        if run_id is None:
            return
        if not isinstance(run_id, str):
            raise TypeError(f"MLflowLogger.load_state_dict(): run_id must be a str, got {type(run_id).__qualname__}")
        if self._active and run_id != self._run_id:
            raise RuntimeError(
                f"MLflowLogger.load_state_dict(): run {self._run_id} has started already; "
                "load the state before logging anything"
            )
        self._run_id = run_id

    # -- the run -----------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the run, or reopen the one this logger continues (blocking, once)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if self.save_dir is not None and self._artifact_location is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        if self._run_id is not None:
            try:
                self._client.update_run(self._run_id, status="RUNNING")
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                warnings.warn(
                    f"MLflowLogger: run {self._run_id} is not in {self.tracking_uri}; starting a new run",
                    UserWarning,
                    stacklevel=3,
                )
                self._run_id = None
        if self._run_id is None:
            run = self._client.create_run(self._experiment_id(), run_name=self.run_name, tags=self.tags)
            self._run_id = run.info.run_id
        self._active = True

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(self.experiment_name, artifact_location=self._artifact_location)
        except MlflowException as error:  # another process created it in between
            experiment = self._client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise error from None
            return experiment.experiment_id

    def _send_metrics(self, items: list[tuple[int, int, dict[str, float]]]) -> None:
        """The background thread's send: every buffered value, in ``log_batch`` calls of MLflow's size."""
        from mlflow.entities import Metric

        metrics = [
            Metric(name, float(value), timestamp, step)
            for step, timestamp, values in items
            for name, value in values.items()
        ]
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[i : i + _METRICS_PER_BATCH], synchronous=True)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or posixpath.normpath(name) != name or name.startswith("/"):
        raise ValueError(
            f"MLflowLogger: the {what} name {name!r} is not one MLflow accepts: up to 250 letters, digits, "
            "'_', '-', '.', ' ', ':' and '/', and not a path that normalizes to another name (no '//', '..', "
            "leading '/' or trailing '/')"
        )
