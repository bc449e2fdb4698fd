"""The CSV and TensorBoard loggers, and Fabric.log through them."""

import csv
import importlib.util
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from trainwright import CSVLogger, Fabric, TensorBoardLogger


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_rows_merge_per_step_and_columns_grow(tmp_path):
    """Metrics of one step share a row; a new metric adds a column and earlier rows keep their values."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.5}, step=0)
    logger.log_metrics({"time/iter": 0.25}, step=0)
    logger.log_metrics({"loss": 1.25}, step=1)
    logger.log_metrics({"lr-SGD/pg0": 0.1, "loss": 1.0}, step=2)
    logger.flush()
    rows = read_rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "loss", "time/iter", "lr-SGD/pg0"]
    assert rows == [
        {"step": "0", "loss": "1.5", "time/iter": "0.25", "lr-SGD/pg0": ""},
        {"step": "1", "loss": "1.25", "time/iter": "", "lr-SGD/pg0": ""},
        {"step": "2", "loss": "1.0", "time/iter": "", "lr-SGD/pg0": "0.1"},
    ]


def test_csv_rows_wait_in_memory_until_flush(tmp_path):
    """Rows wait in memory (the file holds only the header) until flush writes them all, the current step's too."""
    logger = CSVLogger(tmp_path, flush_interval=3600)
    for step in range(5):
        logger.log_metrics({"loss": 1 / (step + 1)}, step=step)
        logger.log_metrics({"extra": step}, step=step)
    assert (tmp_path / "metrics.csv").read_text() == "step\n"
    logger.flush()
    rows = read_rows(tmp_path / "metrics.csv")
    assert rows == [{"step": str(s), "loss": repr(1 / (s + 1)), "extra": str(s)} for s in range(5)]


def test_csv_each_row_is_written_once_when_its_step_ends(tmp_path):
    """With flush_interval=0 a step's row is appended, merged, as the next step begins, and never rewritten."""
    logger = CSVLogger(tmp_path, flush_interval=0)
    path = tmp_path / "metrics.csv"
    logger.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
    snapshots = []  # from step 1 on: the first row written sets the header
    for step in range(1, 6):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        logger.log_metrics({"acc": step / 10}, step=step)
        snapshots.append(path.read_text())
        assert [r["step"] for r in read_rows(path)] == [str(s) for s in range(step)]
    logger.finalize()
    snapshots.append(path.read_text())
    # Append-only: every state of the file is a prefix of the next one.
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(snapshots))
    assert len(set(snapshots)) == len(snapshots)  # and each step added to it
    assert len(read_rows(path)) == 6


def test_csv_finished_rows_are_written_after_flush_interval(tmp_path, monkeypatch):
    """A finished row reaches the file once flush_interval seconds have passed, at the next logged step."""
    # The logger's clock is the test's, so that a stall of a busy machine moves no time.
    now = [100.0]
    monkeypatch.setattr("trainwright.loggers.csv.time", types.SimpleNamespace(monotonic=lambda: now[0]))
    logger = CSVLogger(tmp_path, flush_interval=1.0)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    now[0] += 0.75
    logger.log_metrics({"loss": 0.4}, step=2)
    assert read_rows(tmp_path / "metrics.csv") == []  # still within the interval
    now[0] += 0.25  # 1.0 s after the file was opened, exactly
    logger.log_metrics({"loss": 0.25}, step=3)
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "1", "2"]
    now[0] += 0.5
    logger.log_metrics({"loss": 0.125}, step=4)
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "1", "2"]  # the interval starts again


def test_csv_rejects_a_negative_flush_interval(tmp_path):
    """flush_interval < 0 raises ValueError naming the argument."""
    with pytest.raises(ValueError, match="flush_interval=-1"):
        CSVLogger(tmp_path, flush_interval=-1)


def test_csv_floats_round_trip_exactly(tmp_path):
    """Floats are written with full precision."""
    value = 0.1 + 0.2
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"x": value}, step=0)
    logger.finalize()
    assert float(read_rows(tmp_path / "metrics.csv")[0]["x"]) == value


def test_csv_step_none_continues_after_the_last_step(tmp_path):
    """step=None logs at the step after the last one (0 for the first)."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1})
    logger.log_metrics({"a": 2})
    logger.log_metrics({"a": 3}, step=10)
    logger.log_metrics({"a": 4})
    logger.flush()
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "1", "10", "11"]


def test_csv_shrinking_merged_row_leaves_no_tail(tmp_path):
    """A row already flushed that is re-logged with a shorter value is rewritten cleanly."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 0.123456789}, step=0)
    logger.flush()  # a checkpoint: the row of step 0 is on disk, still open for values of step 0
    logger.log_metrics({"a": 1}, step=0)
    logger.log_metrics({"a": 2}, step=1)
    logger.flush()
    assert read_rows(tmp_path / "metrics.csv") == [{"step": "0", "a": "1"}, {"step": "1", "a": "2"}]


def test_csv_a_flushed_row_that_grows_is_rewritten_in_place(tmp_path):
    """Values logged at a step after its row was flushed join that row; later rows follow it once."""
    logger = CSVLogger(tmp_path, flush_interval=0)
    logger.log_metrics({"a": 1}, step=0)
    logger.log_metrics({"a": 2, "b": 3}, step=1)
    logger.flush()
    logger.log_metrics({"a": 20.5}, step=1)
    logger.flush()
    logger.log_metrics({"b": 30}, step=1)
    logger.log_metrics({"a": 4}, step=2)
    logger.finalize()
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "a": "1", "b": ""},
        {"step": "1", "a": "20.5", "b": "30"},
        {"step": "2", "a": "4", "b": ""},
    ]


def test_csv_append_continues_an_existing_file(tmp_path):
    """append=True keeps earlier rows and continues the step count; append=False starts afresh."""
    first = CSVLogger(tmp_path)
    first.log_metrics({"loss": 1.0}, step=0)
    first.log_metrics({"loss": 0.5}, step=1)
    first.finalize()
    resumed = CSVLogger(tmp_path, append=True)
    resumed.log_metrics({"loss": 0.25})
    resumed.log_metrics({"acc": 0.9}, step=2)
    resumed.flush()
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "loss": "1.0", "acc": ""},
        {"step": "1", "loss": "0.5", "acc": ""},
        {"step": "2", "loss": "0.25", "acc": "0.9"},
    ]
    fresh = CSVLogger(tmp_path)
    fresh.log_metrics({"x": 1}, step=0)
    fresh.flush()
    assert read_rows(tmp_path / "metrics.csv") == [{"step": "0", "x": "1"}]


def test_csv_finalize_then_log_reopens_without_wiping(tmp_path):
    """Logging after finalize appends to the file instead of replacing it."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1}, step=0)
    logger.finalize()
    logger.log_metrics({"a": 2}, step=1)
    logger.finalize()
    assert [r["a"] for r in read_rows(tmp_path / "metrics.csv")] == ["1", "2"]


def test_csv_rewind_drops_later_rows_and_reopens_the_row_at_the_step(tmp_path):
    """rewind(1) keeps steps 0 and 1; a value logged at step 1 joins that row; step 2 follows once."""
    first = CSVLogger(tmp_path)
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    first.log_metrics({"val": 9.0}, step=3)
    first.finalize()
    resumed = CSVLogger(tmp_path, append=True)
    resumed.rewind(1)
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "loss": "0.0", "val": ""},
        {"step": "1", "loss": "1.0", "val": ""},
    ]
    resumed.log_metrics({"time": 5.0}, step=1)
    resumed.log_metrics({"loss": 2.5}, step=2)
    resumed.flush()
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "loss": "0.0", "val": "", "time": ""},
        {"step": "1", "loss": "1.0", "val": "", "time": "5.0"},
        {"step": "2", "loss": "2.5", "val": "", "time": ""},
    ]


def test_csv_rewind_before_the_first_row_and_without_a_file(tmp_path):
    """Rewinding past every row leaves the header; rewinding a missing file creates nothing."""
    CSVLogger(tmp_path / "none", append=True).rewind(5)
    assert not (tmp_path / "none").exists()
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.rewind(2)
    assert read_rows(tmp_path / "metrics.csv") == []
    logger.log_metrics({"loss": 0.5}, step=3)
    logger.flush()
    assert read_rows(tmp_path / "metrics.csv") == [{"step": "3", "loss": "0.5"}]


@pytest.mark.parametrize("cut", [1, 5, 9])
def test_csv_a_torn_last_line_is_dropped_not_read(tmp_path, cut):
    """A file whose last row a kill cut short reopens without that row; new rows follow cleanly."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 1.0, "acc": 0.25}, step=0)
    logger.log_metrics({"loss": 0.123456, "acc": 0.5}, step=1)
    logger.finalize()
    path = tmp_path / "metrics.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])  # the second row, torn
    resumed = CSVLogger(tmp_path, append=True)
    resumed.log_metrics({"loss": 0.5}, step=1)
    resumed.flush()
    assert read_rows(path) == [
        {"step": "0", "loss": "1.0", "acc": "0.25"},
        {"step": "1", "loss": "0.5", "acc": ""},
    ]


def test_csv_rewind_drops_rows_still_in_memory(tmp_path):
    """rewind(2) forgets buffered rows after step 2, keeps earlier ones on disk or not; later steps follow once."""
    logger = CSVLogger(tmp_path, flush_interval=3600)
    logger.log_metrics({"loss": 0.0}, step=0)
    logger.flush()
    for step in range(1, 6):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.rewind(2)
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "1", "2"]
    logger.log_metrics({"val": 9.0}, step=2)
    logger.log_metrics({"loss": 30.0}, step=3)
    logger.finalize()
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "loss": "0.0", "val": ""},
        {"step": "1", "loss": "1.0", "val": ""},
        {"step": "2", "loss": "2.0", "val": "9.0"},
        {"step": "3", "loss": "30.0", "val": ""},
    ]


def test_csv_log_hyperparams_writes_hparams_json(tmp_path):
    """log_hyperparams writes hparams.json next to metrics.csv, flattened, and replaces it when called again."""
    logger = CSVLogger(tmp_path / "run")
    logger.log_hyperparams({"lr": 0.1, "optim": {"name": "sgd", "betas": (0.9, 0.99)}, "out": Path("runs/x")})
    assert json.loads((tmp_path / "run" / "hparams.json").read_text()) == {
        "lr": 0.1,
        "optim.name": "sgd",
        "optim.betas": "(0.9, 0.99)",
        "out": "runs/x",
    }
    logger.log_hyperparams({"lr": 0.2})
    assert json.loads((tmp_path / "run" / "hparams.json").read_text()) == {"lr": 0.2}


CRASHING_WRITER = """
import sys
from trainwright import CSVLogger

logger = CSVLogger(sys.argv[1], flush_interval=0.01)
step = 0
while True:
    logger.log_metrics({"loss": 1.0 / (step + 1), "step_squared": step * step}, step=step)
    logger.log_metrics({"extra": 0.5}, step=step)
    if step % 50 == 0:
        logger.flush()
        print(step, flush=True)
    step += 1
"""


@pytest.mark.slow
def test_csv_sigkill_loses_only_unflushed_rows_and_never_tears_the_file(tmp_path):
    """A writer killed with SIGKILL leaves whole rows only: every flushed step, then a gap-free run of later ones."""
    for attempt in range(2):  # a kill between writes, then one a little later
        run_dir = tmp_path / str(attempt)
        process = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, str(run_dir)], stdout=subprocess.PIPE, text=True
        )
        watchdog = threading.Timer(60, process.kill)  # a writer that hangs ends, and the readline with it
        watchdog.start()
        try:
            lines = [process.stdout.readline() for _ in range(3 + attempt)]
        finally:
            watchdog.cancel()
        assert all(lines), f"the writer printed {lines} and stopped (killed after 60 s)"
        flushed = [int(line) for line in lines]
        time.sleep(0.01 * attempt)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        raw = (run_dir / "metrics.csv").read_bytes()
        rows = read_rows(run_dir / "metrics.csv")
        steps = [int(r["step"]) for r in rows if r["step"]]
        assert steps[: flushed[-1] + 1] == list(range(flushed[-1] + 1))
        if raw.endswith(b"\n"):  # a whole file: every row complete
            assert steps == list(range(len(steps)))
            assert all(r["extra"] == "0.5" and float(r["loss"]) == 1 / (int(r["step"]) + 1) for r in rows)
        resumed = CSVLogger(run_dir, append=True)
        resumed.rewind(flushed[-1])
        resumed.log_metrics({"loss": -1.0}, step=flushed[-1] + 1)
        resumed.finalize()
        rows = read_rows(run_dir / "metrics.csv")
        assert [int(r["step"]) for r in rows] == list(range(flushed[-1] + 2))
        assert rows[-1]["loss"] == "-1.0"


def test_fabric_log_writes_csv(tmp_path):
    """fabric.log and log_dict reach the CSV file, tensors as numbers."""
    fabric = Fabric(accelerator="cpu", loggers=CSVLogger(tmp_path / "run"))
    fabric.log("loss", torch.tensor(0.5), step=0)
    fabric.log_dict({"loss": 0.25, "acc": torch.tensor(1.0)}, step=1)
    fabric.teardown()
    assert read_rows(tmp_path / "run" / "metrics.csv") == [
        {"step": "0", "loss": "0.5", "acc": ""},
        {"step": "1", "loss": "0.25", "acc": "1.0"},
    ]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logger_writes_scalars(tmp_path):
    """The TensorBoard logger writes scalars that TensorBoard reads back with their steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.log_metrics({"loss": 0.5})
    logger.finalize()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(3, 1.0), (4, 0.5)]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_records_hparams_with_the_hparams_plugin(tmp_path):
    """log_hyperparams writes a session that TensorBoard's hparams plugin reads back, flattened and typed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1, "optim": {"name": "sgd"}, "amp": True, "limit": None})
    logger.finalize()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {name: value.WhichOneof("kind") for name, value in start.session_start_info.hparams.items()}
    # torch's hparams summary stores a bool as a number.
    assert values == {
        "lr": "number_value",
        "optim.name": "string_value",
        "amp": "number_value",
        "limit": "string_value",
    }
    hparams = start.session_start_info.hparams
    assert (hparams["lr"].number_value, hparams["amp"].number_value) == (0.1, 1.0)
    assert (hparams["optim.name"].string_value, hparams["limit"].string_value) == ("sgd", "None")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_rewind_hides_the_steps_after_it(tmp_path):
    """After rewind(1), TensorBoard shows steps 0-1 of the first writer and the new 2-3, each once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TensorBoardLogger(tmp_path)
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finalize()
    resumed = TensorBoardLogger(tmp_path)
    resumed.rewind(1)
    resumed.log_metrics({"loss": 20.0}, step=2)
    resumed.finalize()
    resumed.log_metrics({"loss": 30.0}, step=3)  # a reopened writer must not purge again
    resumed.finalize()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 0.0), (1, 1.0), (2, 20.0), (3, 30.0)]


def test_tensorboard_logger_explains_a_missing_package(tmp_path, monkeypatch):
    """Without tensorboard installed, constructing the logger says how to install it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'trainwright\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)
