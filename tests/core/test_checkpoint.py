"""Checkpoints: plain data, atomic writes, exact round trips and refusals with clear messages."""

import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import trainwright
from tests.core.helpers import tiny_model
from trainwright import Fabric
from trainwright.checkpoint import FORMAT_VERSION, RESERVED_KEY, CheckpointIO


class CountingCallback:
    """A callback with state that must survive a resume."""

    def __init__(self):
        self.count = 0
        self.history = []

    def on_train_batch_end(self, loss):
        self.count += 1
        self.history.append(loss.item())

    def state_dict(self):
        return {"count": self.count, "history": list(self.history)}

    def load_state_dict(self, state):
        self.count = state["count"]
        self.history = list(state["history"])


def trained_objects(fabric, steps=3):
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    callback = CountingCallback()
    for _ in range(steps):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        callback.on_train_batch_end(loss)
    return model, optimizer, scheduler, callback


def fresh_objects(fabric):
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler, CountingCallback()


def test_round_trip_restores_model_optimizer_scheduler_and_callback(tmp_path):
    """save then load into fresh objects restores weights, optimizer state, schedule and callback state."""
    fabric = Fabric(accelerator="cpu")
    model, optimizer, scheduler, callback = trained_objects(fabric)
    path = tmp_path / "ckpt" / "last.ckpt"
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "callbacks": {"counting": callback}}
    fabric.save(path, {**state, "step": 3, "note": "hello"})

    model2, optimizer2, scheduler2, callback2 = fresh_objects(fabric)
    target = {
        "model": model2,
        "optimizer": optimizer2,
        "scheduler": scheduler2,
        "callbacks": {"counting": callback2},
        "step": 0,
    }
    remainder = fabric.load(path, target)

    assert remainder == {"note": "hello"}
    assert target["step"] == 3
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved_opt, loaded_opt = optimizer.state_dict(), optimizer2.state_dict()
    assert saved_opt["param_groups"] == loaded_opt["param_groups"]
    for key, value in saved_opt["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, loaded_opt["state"][key][name])
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)
    assert callback2.state_dict() == callback.state_dict()


def test_checkpoint_is_plain_data_loadable_with_weights_only(tmp_path):
    """The file loads with torch.load(weights_only=True); 'model' is the model's state dict without prefixes."""
    fabric = Fabric(accelerator="cpu")
    model = fabric.setup(tiny_model())
    fabric.save(tmp_path / "a.ckpt", {"model": model})
    raw = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert list(raw["model"]) == list(model.module.state_dict())
    assert raw[RESERVED_KEY]["format_version"] == FORMAT_VERSION


def test_save_rejects_objects_that_are_not_plain_data(tmp_path):
    """An object without state_dict is refused with its place in the state, and nothing is written."""

    class Opaque:
        pass

    fabric = Fabric(accelerator="cpu")
    with pytest.raises(TypeError, match=r"state\['extra'\]\[1\] is a .*Opaque, which a checkpoint cannot hold"):
        fabric.save(tmp_path / "x.ckpt", {"extra": [1, Opaque()]})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_the_reserved_key_and_non_mappings(tmp_path):
    """The reserved key and a non-dict state are rejected with clear errors."""
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(ValueError, match="reserved"):
        fabric.save(tmp_path / "x.ckpt", {RESERVED_KEY: 1})
    with pytest.raises(TypeError, match="state must be a dict, got list"):
        fabric.save(tmp_path / "x.ckpt", [1])


def test_load_strict_and_non_strict(tmp_path):
    """A state entry missing from the checkpoint is a KeyError naming it, unless strict=False."""
    fabric = Fabric(accelerator="cpu")
    fabric.save(tmp_path / "a.ckpt", {"step": 1})
    with pytest.raises(KeyError, match="has no entry 'epoch'"):
        fabric.load(tmp_path / "a.ckpt", {"epoch": 0})
    state = {"epoch": 0, "step": 0}
    assert fabric.load(tmp_path / "a.ckpt", state, strict=False) == {}
    assert state == {"epoch": 0, "step": 1}
    assert fabric.load(tmp_path / "a.ckpt") == {"step": 1}


def test_interrupted_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    """A save interrupted half-way keeps the previous checkpoint loadable and leaves no temporary file."""
    fabric = Fabric(accelerator="cpu")
    path = tmp_path / "last.ckpt"
    fabric.save(path, {"step": 1, "weights": torch.ones(1000)})
    before = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        fabric.save(path, {"step": 2, "weights": torch.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert fabric.load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_killed_writer_leaves_the_previous_file_and_its_leftovers_are_removed(tmp_path):
    """SIGKILL during a slow save keeps the old checkpoint; the next save removes the dead writer's temp file."""
    path = tmp_path / "last.ckpt"
    Fabric(accelerator="cpu").save(path, {"step": 1})
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        from trainwright import Fabric
        real_save = torch.save
        def slow_save(obj, f, *args, **kwargs):
            f.write(b"PK partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        Fabric(accelerator="cpu").save({str(path)!r}, {{"step": 2}})
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert leftovers == [f".last.ckpt.{writer.pid}.tmp"]
    fabric = Fabric(accelerator="cpu")
    assert fabric.load(path)["step"] == 1
    fabric.save(path, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert fabric.load(path)["step"] == 3


class Exploit:
    """Unpickling this would create a marker file: the attack that weights_only prevents."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_load_refuses_pickled_objects_without_running_them(tmp_path):
    """A file holding an arbitrary pickled object is refused with a clear error, and its code never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"model": Exploit(str(marker)), RESERVED_KEY: {"format_version": 1}}, path)
    with pytest.raises(ValueError, match=r"refusing to load .*evil\.ckpt.*pickled objects") as refused:
        Fabric(accelerator="cpu").load(path)
    assert not marker.exists()
    assert "Unsupported global" in str(refused.value)  # names what was refused
    assert "weights_only" not in str(refused.value)  # and never suggests turning the protection off


def test_load_refuses_a_raw_pickle_without_unsafe_advice(tmp_path):
    """A plain pickle (not torch.save's format) is refused too; the message carries no advice to unpickle it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"model": Exploit(str(marker))}, protocol=4))
    with pytest.raises(ValueError, match="refusing to load") as refused:
        Fabric(accelerator="cpu").load(path)
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)


def test_load_refuses_unknown_format_version(tmp_path):
    """A checkpoint with another format version is refused with a message naming both versions."""
    path = tmp_path / "future.ckpt"
    torch.save({"step": 1, RESERVED_KEY: {"format_version": 99}}, path)
    with pytest.raises(
        ValueError, match=f"format version 99, but trainwright .* reads format version {FORMAT_VERSION}"
    ):
        Fabric(accelerator="cpu").load(path)


def test_load_refuses_files_not_written_by_fabric(tmp_path):
    """A plain torch file without trainwright's entry is refused, pointing at torch.load."""
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(ValueError, match=r"was not written by Fabric\.save.*torch\.load"):
        Fabric(accelerator="cpu").load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", pickle.dumps([1, 2, 3], protocol=2)])
def test_load_reports_corrupt_files(tmp_path, content):
    """An empty, truncated or foreign file is a ValueError naming the file, not a torch traceback."""
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.ckpt"):
        Fabric(accelerator="cpu").load(path)


def test_load_missing_file_names_it(tmp_path):
    """Loading a path with nothing there raises FileNotFoundError naming the path."""
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt"):
        Fabric(accelerator="cpu").load(tmp_path / "nowhere.ckpt")


def test_scaler_state_round_trips_with_16_mixed(tmp_path):
    """Under 16-mixed, the gradient scale is saved and restored without the user asking."""
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    model = torch.nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(model(torch.randn(2, 4)).sum() * 1e6)  # overflows in float16: the step is skipped
    optimizer.step()
    fabric.save(tmp_path / "a.ckpt", {"step": 1})
    saved_scale = torch.load(tmp_path / "a.ckpt", weights_only=True)[RESERVED_KEY]["precision"]["scaler"]["scale"]
    assert saved_scale == 2.0**15  # halved from the initial 2**16 by the overflow

    other = Fabric(accelerator="cpu", precision="16-mixed")
    other.load(tmp_path / "a.ckpt", {"step": 0})
    model2 = torch.nn.Linear(4, 1)
    model2 = other.setup(model2)
    other.backward(model2(torch.randn(2, 4)).sum())
    assert other.precision.scaler.get_scale() == 2.0**15


def test_reading_a_checkpoint_leaves_the_live_gradient_scale(tmp_path):
    """load(path) and load(path, {}) only read: the live scaler keeps its scale; a state to fill restores it."""
    writer = Fabric(accelerator="cpu", precision="16-mixed")
    writer.save(tmp_path / "a.ckpt", {"step": 1})  # the initial scale, 2**16

    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    model = torch.nn.Linear(4, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(model(torch.randn(2, 4)).sum() * 1e6)  # overflows in float16: the step is skipped
    optimizer.step()
    fabric.backward(model(torch.randn(2, 4)).sum())  # ends the iteration: the scale is halved
    assert fabric.precision.scaler.get_scale() == 2.0**15

    assert fabric.load(tmp_path / "a.ckpt") == {"step": 1}
    assert fabric.load(tmp_path / "a.ckpt", {}) == {"step": 1}
    assert fabric.precision.scaler.get_scale() == 2.0**15
    fabric.load(tmp_path / "a.ckpt", {"step": 0})
    assert fabric.precision.scaler.get_scale() == 2.0**16


def test_checkpoint_io_creates_folders_and_replaces_atomically(tmp_path):
    """CheckpointIO creates missing folders and the written file replaces the old one whole."""
    checkpoint_io = CheckpointIO()
    path = tmp_path / "a" / "b" / "c.ckpt"
    checkpoint_io.save({"v": 1}, path)
    checkpoint_io.save({"v": 2}, path)
    assert checkpoint_io.load(path) == {"v": 2}
    assert os.listdir(path.parent) == ["c.ckpt"]


@pytest.mark.parametrize("strategy", ["single", "ddp"])
def test_single_and_ddp_files_are_torch_save_of_the_plain_state(tmp_path, strategy):
    """A single-device or DDP checkpoint is byte for byte torch.save of the state dicts plus the format entry."""
    with Fabric(accelerator="cpu", strategy=strategy) as fabric:
        model, optimizer, scheduler, _ = trained_objects(fabric)
        fabric.save(tmp_path / "a.ckpt", {"model": model, "optimizer": optimizer, "scheduler": scheduler, "n": 3})
        expected = {
            "model": OrderedDict(model.module.state_dict()),  # without torch's _metadata attribute
            "optimizer": optimizer.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "n": 3,
            RESERVED_KEY: {
                "format_version": FORMAT_VERSION,
                "trainwright_version": trainwright.__version__,
                "precision": {},
            },
        }
    buffer = io.BytesIO()
    torch.save(expected, buffer)  # to a file object, as CheckpointIO writes, so the archive names agree
    assert (tmp_path / "a.ckpt").read_bytes() == buffer.getvalue()


def test_a_logger_whose_flush_fails_costs_no_checkpoint(tmp_path):
    """save() writes the checkpoint when a logger's flush raises, and names the logger in a RuntimeWarning."""

    class Unreachable:
        def log_metrics(self, metrics, step=None):
            pass

        def flush(self):
            raise ConnectionError("tracker unreachable")

    fabric = Fabric(accelerator="cpu", loggers=Unreachable())
    with pytest.warns(RuntimeWarning, match=r"Unreachable.flush\(\) failed \(ConnectionError"):
        fabric.save(tmp_path / "a.ckpt", {"step": 3})
    assert fabric.load(tmp_path / "a.ckpt") == {"step": 3}
