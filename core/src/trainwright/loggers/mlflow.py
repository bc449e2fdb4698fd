"""An MLflow logger; ``mlflow`` is imported when the run starts, on the first thing logged."""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import secrets
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainwright.loggers._sender import BackgroundSender, check_seconds
from trainwright.loggers.base import STATUSES, Logger, flatten_params

_RUN_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_NAME = re.compile(r"^[/\w.\- :]{1,250}$")  # what MLflow accepts as a metric or param name
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch call
_PARAMS_PER_BATCH = 100
_RUN_KEY_TAG = "trainwright_run_key"


class MLflowLogger(Logger):
    """Logs params, metrics and artifacts to an MLflow run.

    Where the run goes: ``tracking_uri`` if given, else the ``MLFLOW_TRACKING_URI`` environment
    variable, else a local store in ``save_dir``: the SQLite database ``mlflow.db`` and the
    folder ``artifacts/``, which ``mlflow ui --backend-store-uri sqlite:///<save_dir>/mlflow.db``
    shows. The experiment is ``experiment_name`` if given, else ``MLFLOW_EXPERIMENT_NAME``,
    else ``"trainwright"``; it is created when missing.

    The run starts on the first thing logged, never in ``__init__``: on the other ranks of a
    distributed job, where ``Fabric`` logs nothing, no run is ever started. Nothing here waits
    on the tracking store: starting the run, params, metrics and artifacts wait in memory, in
    order, and a background thread sends them every ``flush_interval`` seconds (metrics in
    ``log_batch`` calls). ``flush()``, which ``Fabric.save`` calls before every checkpoint,
    only asks the thread to send now. While the store is unreachable everything is kept and
    retried; one warning says so when the outage begins, and one when it ends.
    ``finalize`` sends the rest and marks the run ``FINISHED``, ``FAILED`` or, for
    ``"interrupted"``, ``KILLED``, waiting at most ``close_timeout`` seconds (a second after a
    send fails, before or during the wait); what it could not send by then is counted in a
    warning and dropped.

    A resumed run continues the same MLflow run: ``state_dict()`` holds a key chosen here, with
    which the run is tagged (``trainwright_run_key``), and the run's id once the store has
    created it; ``load_state_dict`` (before anything is logged) makes the run reopen it, by its
    id or else by its key. MLflow cannot delete metric points, so the steps that a resumed run
    logs again after ``rewind`` appear twice in the run's history (with different timestamps);
    MLflow keeps a run's params fixed, so a param whose value changed on resume is reported in
    a warning, not recorded.

    Args:
        save_dir: the folder for the local store; needed only without a tracking URI.
        experiment_name: the experiment to log into.
        run_name: the run's name in the UI (MLflow picks one when ``None``).
        tags: tags to set on a new run.
        tracking_uri: where to log, e.g. ``"http://mlflow.internal:5000"``.
        flush_interval: seconds between two sends of the metrics.
        close_timeout: the most seconds ``finalize`` waits for the store; one second after a
            send has failed (before ``finalize``, or while it waits).

    Raises:
        ImportError: the ``mlflow`` package is not installed (checked without importing it).
        ValueError: there is neither a tracking URI nor ``save_dir``, or ``flush_interval`` or
            ``close_timeout`` is not positive.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        flush_interval: float = 5.0,
        close_timeout: float = 30.0,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("MLflowLogger needs the mlflow package: pip install 'trainwright[mlflow]'")
        check_seconds("MLflowLogger", "flush_interval", flush_interval)
        check_seconds("MLflowLogger", "close_timeout", close_timeout)
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
        self._run_key = secrets.token_hex(16)  # ours, unlike the id, so a checkpoint always names the run
        self._find_by_key = False  # whether a loaded key may name a run that the store already has
        self.close_timeout = close_timeout
        self._client: Any = None
        self._active = False  # whether the sending thread started (or reopened) the run and has not ended it
        self._open = False  # whether this process logged something since the last finalize
        self._last_step = -1
        self._checked: set[str] = set()
        # The first send goes at once: it starts the run, whose id the next checkpoint records.
        self._sender = BackgroundSender(self._send, flush_interval, name="MLflowLogger", send_at_start=True)

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id, once the run has started on the store (or was loaded by ``load_state_dict``)."""
        return self._run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name in metrics:
            if name not in self._checked:
                _check_name(name, "metric")
                self._checked.add(name)
        step = self._last_step + 1 if step is None else step
        self._put(("metrics", step, int(time.time() * 1000), dict(metrics)))
        self._last_step = step

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` (flattened to dotted names) as the run's params.

        On a resumed run only the new ones are recorded; a changed value is reported in a
        warning. Values longer than MLflow's limit of 6000 characters are cut.

        Raises:
            ValueError: a name has characters that MLflow does not accept.
        """
        params = flatten_params(params)
        for name in params:
            _check_name(name, "param")
        self._put(("params", params))

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Copy a file, or a folder with what it holds, to the run's artifacts (a folder keeps its name).

        The background thread copies it, in order with the metrics: keep it in place until
        ``finalize``.
        """
        self._put(("artifact", Path(path)))

    def rewind(self, step: int) -> None:
        """Drop the metrics after ``step`` that are not sent yet; those already sent stay."""
        self._sender.drop(lambda item: item[0] != "metrics" or item[1] <= step)
        self._last_step = step

    def flush(self) -> None:
        """Ask the background thread to send everything logged so far; never waits on the store."""
        self._sender.flush()

    def finalize(self, status: str = "success") -> None:
        """Send the rest and mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (for ``"interrupted"``).

        Waits at most ``close_timeout`` seconds for the store; what is not sent by then is
        counted in a ``RuntimeWarning``.

        Raises:
            ValueError: ``status`` is unknown.
        """
        if status not in STATUSES:
            allowed = ", ".join(map(repr, STATUSES))
            raise ValueError(f"MLflowLogger.finalize(): status={status!r} is not one of {allowed}")
        if not self._open:
            return
        self._open = False
        self._sender.put(("end", _RUN_STATUS[status]))
        began = time.monotonic()
        left = self._sender.close(self.close_timeout)
        if left:
            waited = time.monotonic() - began  # close_timeout, or a second once the store is known to be down
            warnings.warn(
                f"MLflowLogger: {self.tracking_uri} did not take the rest of the run: {left} items (metrics of a "
                f"step, params, artifacts, the run's end) were not sent after {waited:.1f} s "
                f"(close_timeout={self.close_timeout:g})",
                RuntimeWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        """``{"run_key": ...}``, plus ``"run_id"`` once the run has started on the store.

        The key is chosen here and tags the run, so a checkpoint identifies the run even when
        it was taken before the store created the run (or while the store was down).
        """
        state = {"run_key": self._run_key}
        if self._run_id is not None:
            state["run_id"] = self._run_id
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run that ``state`` identifies, when the run starts: by its id, else by its key.

        Raises:
            RuntimeError: this logger already started a run in this process.
            TypeError: the run id or key is not a string.
        """
        run_id, run_key = state.get("run_id"), state.get("run_key")
        for name, value in (("run_id", run_id), ("run_key", run_key)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"MLflowLogger.load_state_dict(): {name} must be a str, got {type(value).__qualname__}")
        if run_id is None and run_key is None:
            return
        other = (run_id is not None and run_id != self._run_id) or (run_key is not None and run_key != self._run_key)
        if (self._open or self._active) and other:
            raise RuntimeError(
                f"MLflowLogger.load_state_dict(): run {self._run_id or self._run_key} has started already; "
                "load the state before logging anything"
            )
        self._run_id = run_id
        if run_key is not None:
            self._run_key, self._find_by_key = run_key, run_id is None

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
        if self._run_id is None and self._find_by_key:  # checkpointed before the store had created the run
            self._run_id = self._run_with_key()
            if self._run_id is not None:
                self._client.update_run(self._run_id, status="RUNNING")
        if self._run_id is None:
            tags = {**self.tags, _RUN_KEY_TAG: self._run_key}
            run = self._client.create_run(self._experiment_id(), run_name=self.run_name, tags=tags)
            self._run_id = run.info.run_id
        self._find_by_key = False
        self._active = True

    def _run_with_key(self) -> str | None:
        runs = self._client.search_runs(
            [self._experiment_id()], filter_string=f"tags.{_RUN_KEY_TAG} = '{self._run_key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

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

    def _put(self, item: tuple[Any, ...]) -> None:
        self._open = True
        self._sender.put(item)

    def _send(self, items: list[tuple[Any, ...]]) -> None:
        """The background thread's send: items in order, each removed from ``items`` once sent."""
        if not self._active:
            self._start()
        while items:
            kind = items[0][0]
            if kind == "metrics":
                count = next((i for i, item in enumerate(items) if item[0] != "metrics"), len(items))
                self._send_metrics(items[:count])
                del items[:count]
                continue
            if kind == "params":
                self._send_params(items[0][1])
            elif kind == "artifact":
                path = items[0][1]
                if path.is_dir():
                    self._client.log_artifacts(self._run_id, str(path), artifact_path=path.name)
                else:
                    self._client.log_artifact(self._run_id, str(path))
            elif kind == "end":
                self._client.set_terminated(self._run_id, items[0][1])
                self._active = False
            del items[0]
            if kind == "end" and items:  # logged again after finalize: reopen the run
                self._start()

    def _send_metrics(self, items: list[tuple[str, int, int, dict[str, float]]]) -> None:
        """Every value of ``items``, in ``log_batch`` calls of MLflow's size."""
        from mlflow.entities import Metric

        metrics = [
            Metric(name, float(value), timestamp, step)
            for _, step, timestamp, values in items
            for name, value in values.items()
        ]
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[i : i + _METRICS_PER_BATCH], synchronous=True)

    def _send_params(self, params: dict[str, Any]) -> None:
        """The new params of ``params``; a changed value is reported in a warning, as MLflow keeps params fixed."""
        from mlflow.entities import Param

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
        for i in range(0, len(new), _PARAMS_PER_BATCH):
            self._client.log_batch(self._run_id, params=new[i : i + _PARAMS_PER_BATCH], synchronous=True)
        if changed:
            warnings.warn(
                f"MLflowLogger: run {self._run_id} keeps its params; not recorded: {', '.join(changed)}",
                UserWarning,
                stacklevel=2,
            )


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or posixpath.normpath(name) != name or name.startswith("/"):
        raise ValueError(
            f"MLflowLogger: the {what} name {name!r} is not one MLflow accepts: up to 250 letters, digits, "
            "'_', '-', '.', ' ', ':' and '/', and not a path that normalizes to another name (no '//', '..', "
            "leading '/' or trailing '/')"
        )
