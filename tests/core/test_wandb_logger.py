"""WandbLogger in offline mode, checked by decoding the run that W&B wrote; no account, no network."""

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
from tests.core.wandb_records import offline_runs, read_run
from trainwright import Fabric, WandbLogger

wandb = dev_dependency("wandb")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """Offline W&B, quiet, with its settings and caches in a temporary folder rather than the home directory."""
    home = tmp_path_factory.mktemp("wandb-home")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    for name in ("WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    yield
    wandb.teardown()  # the next test's W&B session starts afresh, under its own settings


def test_an_offline_run_holds_config_metrics_files_and_exit_code(tmp_path):
    """Params, one history row per step (values of a step merged, against `step`), files and exit code 0."""
    logger = WandbLogger(tmp_path, project="demo", name="first", tags=["baseline"], flush_interval=0.05)
    fabric = Fabric(accelerator="cpu", loggers=logger)
    fabric.log_hyperparams({"lr": 0.1, "optim": {"name": "adamw"}, "max_steps": None})
    for step in range(3):
        fabric.log_dict({"loss": torch.tensor(0.5**step), "lr": 0.1}, step=step)
        fabric.log("time/iteration_ms", 2.0, step=step)
        time.sleep(0.1)  # let the background thread hand some steps over
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    profile = tmp_path / "profiler"
    profile.mkdir()
    (profile / "summary.txt").write_text("table")
    fabric.log_artifact(plot)
    fabric.log_artifact(profile)
    fabric.teardown()

    (run_dir,) = offline_runs(tmp_path)
    run = read_run(run_dir)
    assert (run.run_id, run.project, run.name, run.tags) == (logger.run_id, "demo", "first", ["baseline"])
    assert run.config == {"lr": 0.1, "optim.name": "adamw", "max_steps": "None"}
    assert run.history == [{"step": step, "loss": 0.5**step, "lr": 0.1, "time/iteration_ms": 2.0} for step in range(3)]
    assert {"plot.png", "profiler/summary.txt"} <= set(run.files)
    assert (run_dir / "files" / "profiler" / "summary.txt").read_text() == "table"
    assert run.exit_code == 0


@pytest.mark.parametrize(("status", "exit_code"), [("failed", 1), ("interrupted", 255)])
def test_finalize_gives_a_nonzero_exit_code_unless_the_run_succeeded(tmp_path, status, exit_code):
    """finalize("failed") and ("interrupted") finish the run with a non-zero exit code, which W&B shows as failed."""
    logger = WandbLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize(status)
    (run_dir,) = offline_runs(tmp_path)
    assert read_run(run_dir).exit_code == exit_code


def test_a_resumed_run_continues_the_same_run_id(tmp_path):
    """The id travels in state_dict through a checkpoint; the resumed logger writes to the same W&B run."""
    first = WandbLogger(tmp_path, project="demo", flush_interval=3600)
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    first.rewind(1)  # steps 2-3 were never handed over: they are forgotten
    state = json.loads(json.dumps(first.state_dict()))
    first.finalize("interrupted")

    resumed = WandbLogger(tmp_path, project="demo")
    resumed.load_state_dict(state)
    resumed.log_hyperparams({"max_epochs": 4})
    resumed.log_metrics({"loss": 20.0}, step=2)
    resumed.finalize()

    assert state == {"run_id": first.run_id}
    before, after = (read_run(run_dir) for run_dir in offline_runs(tmp_path))
    assert before.run_id == after.run_id == first.run_id == resumed.run_id
    assert before.history == [{"step": 0, "loss": 0.0}, {"step": 1, "loss": 1.0}]
    assert after.history == [{"step": 2, "loss": 20.0}]
    assert (before.exit_code, after.exit_code, after.config) == (255, 0, {"max_epochs": 4})


def test_load_state_dict_after_the_run_started_is_refused(tmp_path):
    """Loading another run's id once the run has started raises RuntimeError; a wrong type raises TypeError."""
    logger = WandbLogger(tmp_path)
    with pytest.raises(TypeError, match="run_id must be a str"):
        logger.load_state_dict({"run_id": 7})
    logger.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="load the state before logging anything"):
        logger.load_state_dict({"run_id": "abcdefgh"})
    logger.finalize()


def test_bad_arguments_are_named(tmp_path, monkeypatch):
    """A bad interval, a bad status and a missing package each raise an error that names them."""
    with pytest.raises(ValueError, match="flush_interval=-1"):
        WandbLogger(tmp_path, flush_interval=-1)
    for endless in (float("inf"), float("nan"), 1e300):  # a wait Thread.join cannot take
        message = f"close_timeout={endless!r} must be a number of seconds above 0"
        with pytest.raises(ValueError, match=re.escape(message)):
            WandbLogger(tmp_path, close_timeout=endless)
    with pytest.raises(ValueError, match="status='ok'"):
        WandbLogger(tmp_path).finalize("ok")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'trainwright\[wandb\]'"):
        WandbLogger(tmp_path)


@pytest.mark.slow
def test_constructing_the_logger_starts_nothing(tmp_path):
    """Constructing WandbLogger and reading its state (as every rank does) imports no wandb and writes nothing."""
    probe = f"""
import sys
from trainwright import WandbLogger
logger = WandbLogger({str(tmp_path / "runs")!r})
logger.load_state_dict(logger.state_dict())
logger.finalize()
print(sorted(m for m in sys.modules if m.split(".")[0] == "wandb"))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_wandb_server_never_holds_up_a_checkpoint_or_the_teardown(tmp_path, monkeypatch):
    """Online W&B against a closed port: each save writes at once, one warning tells, and finalize is bounded."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it: every connection is refused
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")  # each try of wandb.init gives up after 3 s
    logger = WandbLogger(tmp_path, project="down", flush_interval=0.2, close_timeout=5)
    fabric = Fabric(accelerator="cpu", loggers=logger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.log_hyperparams({"lr": 0.1})
        slowest = 0.0
        for step in range(5):
            fabric.log("loss", 1.0, step=step)
            started = time.monotonic()
            fabric.save(tmp_path / f"step{step}.ckpt", {"step": step})
            slowest = max(slowest, time.monotonic() - started)
        deadline = time.monotonic() + 60
        while not any("sending failed" in str(w.message) for w in caught) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        fabric.teardown()
        teardown = time.monotonic() - started
    assert slowest < 2.0
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [f"step{i}.ckpt" for i in range(5)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert [m.split(":")[0] for m in messages] == ["WandbLogger", "WandbLogger"], messages
    assert "sending failed (CommError(" in messages[0]
    assert "did not take the rest of the run: 7 items" in messages[1]  # config, 5 steps, the end
    # Found down before the teardown: it waited a second, and says so rather than close_timeout's 5 s.
    waited = re.search(r"not handed over after ([\d.]+) s \(close_timeout=5\)", messages[1])
    assert waited is not None, messages[1]
    assert 0.9 <= float(waited.group(1)) < 4.0
    assert teardown < 8.0  # one more try of at most 3 s, not close_timeout after close_timeout
