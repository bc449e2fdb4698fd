"""The CSV and TensorBoard loggers, and Fabric.log through them."""

import csv
import importlib.util

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
    rows = read_rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "loss", "time/iter", "lr-SGD/pg0"]
    assert rows == [
        {"step": "0", "loss": "1.5", "time/iter": "0.25", "lr-SGD/pg0": ""},
        {"step": "1", "loss": "1.25", "time/iter": "", "lr-SGD/pg0": ""},
        {"step": "2", "loss": "1.0", "time/iter": "", "lr-SGD/pg0": "0.1"},
    ]


def test_csv_file_is_complete_after_every_call(tmp_path):
    """Each logged value is on disk and parseable immediately, without finalize."""
    logger = CSVLogger(tmp_path)
    for step in range(5):
        logger.log_metrics({"loss": 1 / (step + 1)}, step=step)
        logger.log_metrics({"extra": step}, step=step)
        rows = read_rows(tmp_path / "metrics.csv")
        assert len(rows) == step + 1
        assert rows[-1] == {"step": str(step), "loss": repr(1 / (step + 1)), "extra": str(step)}


def test_csv_floats_round_trip_exactly(tmp_path):
    """Floats are written with full precision."""
    value = 0.1 + 0.2
    CSVLogger(tmp_path).log_metrics({"x": value}, step=0)
    assert float(read_rows(tmp_path / "metrics.csv")[0]["x"]) == value


def test_csv_step_none_continues_after_the_last_step(tmp_path):
    """step=None logs at the step after the last one (0 for the first)."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1})
    logger.log_metrics({"a": 2})
    logger.log_metrics({"a": 3}, step=10)
    logger.log_metrics({"a": 4})
    assert [r["step"] for r in read_rows(tmp_path / "metrics.csv")] == ["0", "1", "10", "11"]


def test_csv_shrinking_merged_row_leaves_no_tail(tmp_path):
    """Re-logging a metric with a shorter value at the same step rewrites the row cleanly."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 0.123456789}, step=0)
    logger.log_metrics({"a": 1}, step=0)
    logger.log_metrics({"a": 2}, step=1)
    assert read_rows(tmp_path / "metrics.csv") == [{"step": "0", "a": "1"}, {"step": "1", "a": "2"}]


def test_csv_append_continues_an_existing_file(tmp_path):
    """append=True keeps earlier rows and continues the step count; append=False starts afresh."""
    first = CSVLogger(tmp_path)
    first.log_metrics({"loss": 1.0}, step=0)
    first.log_metrics({"loss": 0.5}, step=1)
    first.finalize()
    resumed = CSVLogger(tmp_path, append=True)
    resumed.log_metrics({"loss": 0.25})
    resumed.log_metrics({"acc": 0.9}, step=2)
    assert read_rows(tmp_path / "metrics.csv") == [
        {"step": "0", "loss": "1.0", "acc": ""},
        {"step": "1", "loss": "0.5", "acc": ""},
        {"step": "2", "loss": "0.25", "acc": "0.9"},
    ]
    CSVLogger(tmp_path).log_metrics({"x": 1}, step=0)
    assert read_rows(tmp_path / "metrics.csv") == [{"step": "0", "x": "1"}]


def test_csv_finalize_then_log_reopens_without_wiping(tmp_path):
    """Logging after finalize appends to the file instead of replacing it."""
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"a": 1}, step=0)
    logger.finalize()
    logger.log_metrics({"a": 2}, step=1)
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
    assert read_rows(path) == [
        {"step": "0", "loss": "1.0", "acc": "0.25"},
        {"step": "1", "loss": "0.5", "acc": ""},
    ]


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
    logger.log_hyperparams({"lr": 0.1})
    logger.finalize()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(3, 1.0), (4, 0.5)]


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
