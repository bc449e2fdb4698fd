"""Fabric's side of logging: one sync per log_dict, hyperparameters, artifacts, flush on save, and run status."""

import csv
import dataclasses
import enum
import warnings
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from trainwright import CSVLogger, Fabric, Logger

SYNC_METHODS = {"item", "tolist", "cpu", "__float__", "__bool__", "__int__", "numpy"}


class CountSyncs(TorchFunctionMode):
    """Counts the tensor methods that read a value back to the host (a host-device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNC_METHODS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


class Recorder(Logger):
    """A logger that keeps every call, to check what Fabric hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_metrics(self, metrics, step=None):
        self.calls.append(("log_metrics", dict(metrics), step))

    def log_hyperparams(self, params):
        self.calls.append(("log_hyperparams", dict(params)))

    def log_artifact(self, path):
        self.calls.append(("log_artifact", Path(path)))

    def flush(self):
        self.calls.append(("flush",))

    def finalize(self, status="success"):
        self.calls.append(("finalize", status))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_counter_sees_a_sync():
    """The counting mode sees .item(), .tolist() and float() of a tensor (so the tests below can fail)."""
    with CountSyncs() as counter:
        t = torch.tensor([1.0])
        t.item(), t.tolist(), float(t)
    assert counter.calls == ["item", "tolist", "__float__"]


def test_log_dict_reads_many_tensors_with_one_sync():
    """Seven tensor values of mixed dtypes cost one sync; the logger gets each as .item() would give it."""
    recorder = Recorder()
    fabric = Fabric(accelerator="cpu", loggers=recorder)
    weight = torch.tensor(2.0, requires_grad=True)
    metrics = {
        "loss": weight * 1.5,
        "acc": torch.tensor([0.25], dtype=torch.float64),
        "count": torch.tensor(7),
        "big": torch.tensor(2**40 + 1),
        "finite": torch.tensor(True),
        "half": torch.tensor(0.5, dtype=torch.bfloat16),
        "lr": 0.1,
        "epoch": 3,
        "grad_norm": torch.tensor([[4.0]]),
    }
    with CountSyncs() as counter:
        fabric.log_dict(metrics, step=5)
    assert counter.calls == ["tolist"]
    (_, logged, step), *_ = recorder.calls
    assert step == 5
    assert list(logged) == list(metrics)  # the caller's order
    assert logged == {
        "loss": 3.0,
        "acc": 0.25,
        "count": 7,
        "big": 2**40 + 1,
        "finite": True,
        "half": 0.5,
        "lr": 0.1,
        "epoch": 3,
        "grad_norm": 4.0,
    }
    assert [type(v) for v in logged.values()] == [float, float, int, int, bool, float, float, int, float]


def test_log_dict_of_tensors_of_one_dtype_reads_them_together():
    """Tensors of one dtype are read in one .tolist(); one tensor alone in one .item()."""
    fabric = Fabric(accelerator="cpu", loggers=Recorder())
    with CountSyncs() as counter:
        fabric.log_dict({f"m{i}": torch.tensor(float(i)) for i in range(20)})
        fabric.log("loss", torch.tensor(1.0))
    assert counter.calls == ["tolist", "item"]
    assert fabric.logger.calls[0][1] == {f"m{i}": float(i) for i in range(20)}


def test_log_dict_of_numbers_or_without_loggers_reads_nothing():
    """Python numbers need no sync; without loggers, tensors are not even read."""
    with CountSyncs() as counter:
        Fabric(accelerator="cpu", loggers=Recorder()).log_dict({"lr": 0.1, "epoch": 2})
        Fabric(accelerator="cpu").log_dict({"loss": torch.tensor(1.0), "acc": torch.tensor(0.5)})
    assert counter.calls == []


@pytest.mark.cuda
def test_log_dict_waits_for_the_gpu_once():
    """On CUDA, log_dict of tensors of mixed dtypes synchronizes once, as CUDA's own sync debug mode counts it."""
    fabric = Fabric(accelerator="cuda", devices=1, loggers=Recorder())
    device = fabric.device
    metrics = {
        "loss": torch.tensor(1.5, device=device),
        "acc": torch.tensor([0.5], device=device, dtype=torch.float64),
        "count": torch.tensor(3, device=device),
        "lr": 0.1,
    }
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fabric.log_dict(metrics, step=0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len([w for w in caught if "synchronizing" in str(w.message)]) == 1
    assert fabric.logger.calls == [("log_metrics", {"loss": 1.5, "acc": 0.5, "count": 3, "lr": 0.1}, 0)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.ones(2), "'x' has 2 elements"),
        (torch.tensor(1 + 2j), "'x' has a complex value"),
        ("high", "'x' is a str"),
    ],
)
def test_log_dict_refuses_what_is_not_a_real_number(value, message):
    """A tensor of several elements, a complex tensor or a string raises TypeError naming the metric."""
    fabric = Fabric(accelerator="cpu", loggers=Recorder())
    with pytest.raises(TypeError, match=message):
        fabric.log_dict({"loss": 1.0, "x": value})
    assert fabric.logger.calls == []


class Mode(enum.Enum):
    FAST = 1


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass
class Config:
    run_dir: Path = Path("runs/demo")
    max_steps: int | None = None
    mode: Mode = Mode.FAST
    optim: Optim = dataclasses.field(default_factory=Optim)
    extra: dict = dataclasses.field(default_factory=lambda: {"a": {"b": True}, "empty": {}})


def test_log_hyperparams_flattens_a_config_into_loggable_values():
    """A dataclass config reaches the loggers flat, with dotted names; paths, None, tuples and enums become strings."""
    recorder = Recorder()
    Fabric(accelerator="cpu", loggers=recorder).log_hyperparams(Config())
    assert recorder.calls == [
        (
            "log_hyperparams",
            {
                "run_dir": "runs/demo",
                "max_steps": "None",
                "mode": "FAST",
                "optim.lr": 0.1,
                "optim.betas": "(0.9, 0.999)",
                "extra.a.b": True,
                "extra.empty": "{}",
            },
        )
    ]


def test_log_hyperparams_refuses_what_is_not_a_mapping():
    """A list of params raises TypeError saying what is accepted."""
    with pytest.raises(TypeError, match="mapping or a dataclass instance, got list"):
        Fabric(accelerator="cpu", loggers=Recorder()).log_hyperparams([("lr", 0.1)])


def test_log_artifact_hands_an_existing_path_to_the_loggers(tmp_path):
    """An existing file reaches every logger; a missing one raises FileNotFoundError naming it."""
    recorder = Recorder()
    fabric = Fabric(accelerator="cpu", loggers=[recorder, CSVLogger(tmp_path)])  # CSV ignores artifacts
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    fabric.log_artifact(plot)
    assert recorder.calls == [("log_artifact", plot)]
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        fabric.log_artifact(tmp_path / "missing.png")


def test_save_flushes_the_loggers_first(tmp_path):
    """After fabric.save, metrics.csv holds every step logged so far, the current one too, with no teardown."""
    csv_logger = CSVLogger(tmp_path / "logs", flush_interval=3600)
    recorder = Recorder()
    fabric = Fabric(accelerator="cpu", loggers=[csv_logger, recorder])
    for step in range(3):
        fabric.log("loss", torch.tensor(float(step)), step=step)
    assert read_rows(tmp_path / "logs" / "metrics.csv") == []
    fabric.save(tmp_path / "last.ckpt", {"step": 2})
    assert [r["step"] for r in read_rows(tmp_path / "logs" / "metrics.csv")] == ["0", "1", "2"]
    assert recorder.calls[-1] == ("flush",)


@pytest.mark.parametrize(
    ("error", "status"),
    [(None, "success"), (ValueError, "failed"), (KeyboardInterrupt, "interrupted")],
)
def test_leaving_fabric_passes_how_the_run_ended(error, status):
    """Leaving `with Fabric(...)` finalizes the loggers with success, failed on an exception, interrupted on Ctrl-C."""
    recorder = Recorder()

    def run():
        with Fabric(accelerator="cpu", loggers=recorder):
            if error is not None:
                raise error

    if error is None:
        run()
    else:
        with pytest.raises(error):
            run()
    assert recorder.calls == [("finalize", status)]


def test_teardown_status_is_checked():
    """An unknown status raises ValueError listing the allowed ones, before anything is finalized."""
    recorder = Recorder()
    fabric = Fabric(accelerator="cpu", loggers=recorder)
    with pytest.raises(ValueError, match="status='crashed' is not one of 'success', 'failed', 'interrupted'"):
        fabric.teardown("crashed")
    assert recorder.calls == []
    fabric.teardown("failed")
    assert recorder.calls == [("finalize", "failed")]


def test_teardown_finalizes_every_logger_even_when_one_fails():
    """A logger whose finalize raises does not keep the others from finalizing; its error surfaces afterwards."""

    class Broken(Logger):
        def log_metrics(self, metrics, step=None):
            pass

        def finalize(self, status="success"):
            raise OSError("disk full")

    class Legacy:
        """A logger written for 0.4: finalize takes no status."""

        finalized = False

        def log_metrics(self, metrics, step=None):
            pass

        def finalize(self):
            self.finalized = True

    recorder, legacy = Recorder(), Legacy()
    fabric = Fabric(accelerator="cpu", loggers=[Broken(), legacy, recorder])
    with pytest.raises(OSError, match="disk full"):
        fabric.teardown("failed")
    assert legacy.finalized
    assert recorder.calls == [("finalize", "failed")]


def test_the_base_logger_defaults_do_nothing():
    """A logger that only implements log_metrics accepts every other call and has an empty state."""

    class Minimal(Logger):
        def log_metrics(self, metrics, step=None):
            pass

    minimal = Minimal()
    minimal.log_hyperparams({"lr": 0.1})
    minimal.log_artifact("anything")
    minimal.rewind(3)
    minimal.flush()
    minimal.finalize("failed")
    minimal.load_state_dict({})
    assert minimal.state_dict() == {}
    with pytest.raises(NotImplementedError):
        Logger().log_metrics({"loss": 1.0})
