"""MLflowLogger against a real local MLflow store (SQLite), read back through MLflow's own client."""

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from tests.core.helpers import dev_dependency
from trainwright import Fabric, MLflowLogger

MlflowClient = dev_dependency("mlflow.tracking").MlflowClient


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One local store for the module: creating an MLflow database takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(autouse=True)
def no_mlflow_environment(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def client_for(store):
    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def sent(logger):
    """Wait until the logger's background thread has sent everything (the store is local)."""
    logger.flush()
    assert wait_for(lambda: logger._sender.pending == 0 and logger.run_id is not None)


def history(client, run_id, name):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp)]


def test_a_run_in_the_default_local_store(store, tmp_path):
    """Params, metrics by step, artifacts and FINISHED land in <save_dir>/mlflow.db and <save_dir>/artifacts."""
    logger = MLflowLogger(store, experiment_name="local", run_name="first", tags={"team": "vision"})
    fabric = Fabric(accelerator="cpu", loggers=logger)
    fabric.log_hyperparams({"lr": 0.1, "optim": {"name": "adamw", "betas": (0.9, 0.95)}, "max_steps": None})
    for step in range(3):
        fabric.log_dict({"loss": torch.tensor(0.5**step), "lr": 0.1}, step=step)
    fabric.log("val/acc", 0.75, step=2)
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    profile = tmp_path / "profiler"
    profile.mkdir()
    (profile / "summary.txt").write_text("table")
    fabric.log_artifact(plot)
    fabric.log_artifact(profile)
    fabric.teardown()

    client = client_for(store)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.tags["team"] == "vision"
    assert client.get_experiment(run.info.experiment_id).name == "local"
    assert run.data.params == {"lr": "0.1", "optim.name": "adamw", "optim.betas": "(0.9, 0.95)", "max_steps": "None"}
    assert history(client, logger.run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert history(client, logger.run_id, "val/acc") == [(2, 0.75)]
    artifacts = {a.path for a in client.list_artifacts(logger.run_id)}
    assert artifacts == {"plot.png", "profiler"}
    assert [a.path for a in client.list_artifacts(logger.run_id, "profiler")] == ["profiler/summary.txt"]
    assert (store / "artifacts").is_dir()


@pytest.mark.parametrize(("status", "expected"), [("failed", "FAILED"), ("interrupted", "KILLED")])
def test_finalize_marks_how_the_run_ended(store, status, expected):
    """finalize("failed") marks the run FAILED, "interrupted" KILLED, after sending what was buffered."""
    logger = MLflowLogger(store, experiment_name="status", flush_interval=3600)
    logger.log_metrics({"loss": 2.0}, step=0)
    logger.finalize(status)
    client = client_for(store)
    assert client.get_run(logger.run_id).info.status == expected
    assert history(client, logger.run_id, "loss") == [(0, 2.0)]


def test_an_exception_in_with_fabric_marks_the_run_failed(store):
    """Leaving `with Fabric(...)` on an exception marks the MLflow run FAILED."""
    logger = MLflowLogger(store, experiment_name="status")

    def diverge():
        with Fabric(accelerator="cpu", loggers=logger) as fabric:
            fabric.log("loss", 1.0, step=0)
            raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        diverge()
    assert client_for(store).get_run(logger.run_id).info.status == "FAILED"


def test_metrics_are_sent_in_the_background_not_when_logged(store):
    """log_metrics only buffers; flush wakes the sender; the background thread sends without a flush."""
    client = client_for(store)
    # An hour between the thread's sends: nothing can have reached the store but what log_metrics
    # itself sent, so the read must be empty however long it takes.
    slow = MLflowLogger(store, experiment_name="background", flush_interval=3600)
    slow.log_hyperparams({"lr": 0.1})
    sent(slow)
    slow.log_metrics({"loss": 3.0}, step=7)
    slow.log_metrics({"loss": 4.0})
    assert history(client, slow.run_id, "loss") == []
    slow.flush()
    assert wait_for(lambda: history(client, slow.run_id, "loss") == [(7, 3.0), (8, 4.0)])
    logger = MLflowLogger(store, experiment_name="background", flush_interval=0.2)
    logger.log_hyperparams({"lr": 0.1})  # starts the run
    sent(logger)
    logger.log_metrics({"loss": 1.0}, step=0)
    assert wait_for(lambda: history(client, logger.run_id, "loss") == [(0, 1.0)])
    logger.finalize()
    slow.finalize()


def resumed_and_sent(logger):
    logger.log_hyperparams({"lr": 0.1, "max_epochs": 4, "seed": 1})
    logger.log_metrics({"loss": 20.0}, step=2)
    sent(logger)


def test_a_resumed_run_continues_the_same_mlflow_run(store):
    """state_dict carries the run id through a checkpoint; the resumed logger reopens that run and finishes it."""
    first = MLflowLogger(store, experiment_name="resume", flush_interval=3600)
    first.log_hyperparams({"lr": 0.1, "max_epochs": 2})
    sent(first)
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    first.rewind(1)  # steps 2-3 were never sent: they are forgotten
    state = json.loads(json.dumps(first.state_dict()))  # as plain data, like a checkpoint holds it
    first.finalize("interrupted")
    assert client_for(store).get_run(first.run_id).info.status == "KILLED"

    resumed = MLflowLogger(store, experiment_name="resume")
    resumed.load_state_dict(state)
    assert state == {"run_id": first.run_id, "run_key": first.state_dict()["run_key"]}
    with pytest.warns(UserWarning, match=r"keeps its params; not recorded: max_epochs \(2 -> 4\)"):
        resumed_and_sent(resumed)
    assert client_for(store).get_run(first.run_id).info.status == "RUNNING"
    resumed.finalize()

    client = client_for(store)
    run = client.get_run(first.run_id)
    assert resumed.run_id == first.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "max_epochs": "2", "seed": "1"}
    assert history(client, first.run_id, "loss") == [(0, 0.0), (1, 1.0), (2, 20.0)]
    experiment = client.get_experiment_by_name("resume")
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_a_checkpoint_taken_before_the_run_started_resumes_the_same_run(store):
    """A state_dict taken before the store created the run holds the run's key; a resume finds the run by it."""
    first = MLflowLogger(store, experiment_name="early", flush_interval=3600)
    state = json.loads(json.dumps(first.state_dict()))  # nothing logged yet: no run on the store
    assert list(state) == ["run_key"]
    first.log_metrics({"loss": 1.0}, step=0)
    first.finalize("interrupted")

    resumed = MLflowLogger(store, experiment_name="early")
    resumed.load_state_dict(state)
    resumed.log_metrics({"loss": 0.5}, step=1)
    resumed.finalize()
    assert resumed.run_id == first.run_id
    client = client_for(store)
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert history(client, first.run_id, "loss") == [(0, 1.0), (1, 0.5)]


def logged_and_sent(logger):
    logger.log_metrics({"loss": 1.0}, step=0)
    sent(logger)


def test_a_run_id_unknown_to_the_store_starts_a_new_run(store):
    """Resuming with a run id the store does not have warns and starts a new run rather than failing."""
    logger = MLflowLogger(store, experiment_name="unknown")
    logger.load_state_dict({"run_id": "0" * 32})
    with pytest.warns(UserWarning, match="is not in"):
        logged_and_sent(logger)
    logger.finalize()
    assert logger.run_id != "0" * 32
    assert client_for(store).get_run(logger.run_id).info.status == "FINISHED"


def test_the_tracking_settings_of_the_environment_win(store, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME choose the store and experiment; save_dir is then unused."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-environment")
    logger = MLflowLogger(tmp_path / "unused")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize()
    run = client_for(store).get_run(logger.run_id)
    assert client_for(store).get_experiment(run.info.experiment_id).name == "from-environment"
    assert not (tmp_path / "unused").exists()


def test_load_state_dict_after_the_run_started_is_refused(store):
    """Loading another run's id once this logger has started its own run raises RuntimeError."""
    logger = MLflowLogger(store, experiment_name="late")
    logger.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="load the state before logging anything"):
        logger.load_state_dict({"run_id": "f" * 32})
    logger.finalize()


def test_bad_arguments_are_named(tmp_path, monkeypatch):
    """No store, a bad interval, a bad metric name and a bad status each raise an error that names them."""
    with pytest.raises(ValueError, match="needs save_dir"):
        MLflowLogger()
    with pytest.raises(ValueError, match="flush_interval=0"):
        MLflowLogger(tmp_path, flush_interval=0)
    # No wait a thread cannot take: an endless one would raise OverflowError in finalize, at exit.
    for endless in (float("inf"), float("nan"), 1e300):
        message = f"close_timeout={endless!r} must be a number of seconds above 0"
        with pytest.raises(ValueError, match=re.escape(message)):
            MLflowLogger(tmp_path, close_timeout=endless)
    logger = MLflowLogger(tmp_path, experiment_name="bad")
    with pytest.raises(ValueError, match="metric name 'loss@val'"):
        logger.log_metrics({"loss@val": 1.0}, step=0)
    with pytest.raises(ValueError, match="status='done'"):
        logger.finalize("done")
    logger.finalize()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'trainwright\[mlflow\]'"):
        MLflowLogger(tmp_path)


@pytest.mark.slow
def test_constructing_the_logger_starts_nothing(tmp_path):
    """Constructing MLflowLogger (as every rank does) imports no mlflow and creates no store."""
    probe = f"""
import sys
from trainwright import MLflowLogger
MLflowLogger({str(tmp_path / "store")!r}).state_dict()
print(sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert not (tmp_path / "store").exists()


def closed_port() -> int:
    """A local port that nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def outage_warnings(caught) -> list[str]:
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return [message for message in messages if "MLflowLogger" in message]


def train_and_save(fabric, folder, steps=6):
    """A few steps that log, each followed by a checkpoint; returns how long the slowest save took."""
    slowest = 0.0
    for step in range(steps):
        fabric.log("loss", 1.0 / (step + 1), step=step)
        started = time.monotonic()
        fabric.save(folder / f"step{step}.ckpt", {"step": step})
        slowest = max(slowest, time.monotonic() - started)
    return slowest


def test_an_unreachable_tracking_server_never_holds_up_a_checkpoint_or_the_teardown(tmp_path):
    """Against a closed port (MLflow retrying for minutes), each save writes at once; teardown waits close_timeout."""
    logger = MLflowLogger(tracking_uri=f"http://127.0.0.1:{closed_port()}", close_timeout=1.0)
    fabric = Fabric(accelerator="cpu", loggers=logger)
    fabric.log_hyperparams({"lr": 0.1})
    slowest = train_and_save(fabric, tmp_path)  # the thread meanwhile retries with backoff, for minutes
    assert slowest < 2.0
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [f"step{i}.ckpt" for i in range(6)]
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.teardown()
    assert time.monotonic() - started < 5.0
    (message,) = outage_warnings(caught)
    waited = re.search(r"were not sent after ([\d.]+) s \(close_timeout=1\)", message)
    assert waited is not None, message
    assert 0.9 <= float(waited.group(1)) < 5.0  # the time it waited, said as it was
    assert "did not take the rest of the run: 8 items" in message  # the params, six steps of metrics, the end


def test_an_outage_is_reported_once_and_its_end_once(tmp_path, monkeypatch):
    """A store unreachable for many retries warns once; once reachable it gets everything, and one more warning."""
    monkeypatch.chdir(tmp_path)  # a store given by URI keeps its artifacts in ./mlruns
    store = tmp_path / "not-yet"
    store.write_text("a file where the store's folder should be: the database cannot be opened")
    logger = MLflowLogger(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", flush_interval=0.05)
    fabric = Fabric(accelerator="cpu", loggers=logger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.log_hyperparams({"lr": 0.1})
        assert train_and_save(fabric, tmp_path) < 2.0
        assert wait_for(lambda: outage_warnings(caught))
        time.sleep(0.5)  # ten more failing ticks, which must not warn again
        assert len(outage_warnings(caught)) == 1
        store.unlink()  # the store becomes reachable (MLflow creates its folder)
        assert wait_for(lambda: logger._sender.pending == 0)
        fabric.teardown()
    first, recovered = outage_warnings(caught)
    assert first.startswith("MLflowLogger: sending failed (")
    assert recovered.startswith("MLflowLogger: sending works again after")
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert [step for step, _ in history(client, logger.run_id, "loss")] == list(range(6))
