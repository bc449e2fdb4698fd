"""What setup, setup_dataloaders and the other loop helpers return and check."""

import dataclasses
import os
import warnings

import pytest
import torch

from tests.core.helpers import loader, tiny_model
from trainwright import Fabric


@pytest.fixture
def fabric():
    return Fabric(accelerator="cpu")


def test_setup_returns_model_alone_or_with_optimizers(fabric):
    """setup(model) returns the model; setup(model, *opts) returns a tuple of model and optimizers."""
    model = tiny_model()
    assert isinstance(fabric.setup(model), torch.nn.Module)
    model = tiny_model()
    a, b = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters())
    result = fabric.setup(model, a, b)
    assert len(result) == 3
    assert isinstance(result[1], torch.optim.SGD)
    assert isinstance(result[2], torch.optim.Adam)


def test_wrapped_model_keeps_keys_and_forwards_attributes(fabric):
    """The wrapped model has the original's state-dict keys and forwards attribute reads and writes."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.temperature = 1.0

        def forward(self, x):
            return self.linear(x) / self.temperature

        def describe(self):
            return "net"

    original = Net()
    model = fabric.setup(original)
    assert list(model.state_dict()) == ["linear.weight", "linear.bias"]
    assert model.describe() == "net"
    assert model.module is original
    model.temperature = 2.0
    assert original.temperature == 2.0
    model.new_attribute = 3
    assert not hasattr(original, "new_attribute")
    model.eval()
    assert not original.training
    assert len(list(model.parameters())) == 2  # not listed twice


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("not a model",), "model must be a torch.nn.Module, got str"),
        ((torch.nn.Linear(1, 1), "sgd"), "optimizer 0 must be a torch.optim.Optimizer, got str"),
    ],
)
def test_setup_rejects_wrong_types(fabric, args, message):
    """setup() names the argument that has the wrong type."""
    with pytest.raises(TypeError, match=message):
        fabric.setup(*args)


def test_setup_twice_is_an_error(fabric):
    """Setting up an already set-up model or optimizer raises TypeError instead of double wrapping."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    with pytest.raises(TypeError, match="already set up"):
        fabric.setup(model)
    with pytest.raises(TypeError, match="optimizer 0 was already set up"):
        fabric.setup(tiny_model(), optimizer)


def test_setup_optimizers_wraps_optimizers_built_after_the_model(fabric):
    """setup_optimizers wraps an optimizer over the set-up model's parameters, which then trains the model."""
    model = fabric.setup(tiny_model())
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.optimizer is not optimizer
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    first, second = fabric.setup_optimizers(
        torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters(), lr=0.1)
    )
    assert isinstance(first, torch.optim.SGD)
    assert isinstance(second, torch.optim.Adam)


def test_setup_optimizers_rejects_what_is_not_a_fresh_optimizer(fabric):
    """setup_optimizers() needs an optimizer, names a wrong type, and refuses one set up already."""
    model = fabric.setup(tiny_model())
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="needs at least one optimizer"):
        fabric.setup_optimizers()
    with pytest.raises(TypeError, match=r"setup_optimizers\(\): optimizer 0 must be a torch.optim.Optimizer, got str"):
        fabric.setup_optimizers("sgd")
    with pytest.raises(TypeError, match=r"setup_optimizers\(\): optimizer 0 was already set up"):
        fabric.setup_optimizers(optimizer)


def test_wrapped_optimizer_works_with_lr_schedulers(fabric):
    """A scheduler built on the wrapped optimizer changes the learning rate the real optimizer uses."""
    model = tiny_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1.0))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    assert optimizer.optimizer.param_groups[0]["lr"] == 0.5
    assert optimizer.param_groups is optimizer.optimizer.param_groups


@pytest.mark.parametrize("built_on", ["original before setup", "original after setup", "wrapper"])
def test_a_scheduler_sees_the_wrapped_optimizers_steps_wherever_it_was_built(fabric, built_on):
    """The scheduler's "step before optimizer.step()" check holds, whichever optimizer it patched and when.

    A scheduler counts steps by patching its optimizer's ``step``; the wrapper's step must run that patch.
    """
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    if built_on == "original before setup":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model, wrapped = fabric.setup(model, optimizer)
    if built_on != "original before setup":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer if "original" in built_on else wrapped, 1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
        for _ in range(2):
            model(torch.randn(2, 4)).sum().backward()
            wrapped.step()
            scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_backward_calls_the_losss_own_backward(fabric):
    """Where nothing scales the loss, fabric.backward still calls the loss's backward, a subclass's own included."""

    class Recorded(torch.Tensor):
        calls = 0

        def backward(self, *args, **kwargs):
            type(self).calls += 1
            return super().backward(*args, **kwargs)

    model = fabric.setup(tiny_model())
    loss = model(torch.randn(2, 4)).sum().as_subclass(Recorded)
    fabric.backward(loss)
    assert Recorded.calls == 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_wrapped_step_passes_a_closure_and_returns_its_loss(fabric):
    """``step(closure)`` reaches the optimizer with the closure, as LBFGS needs, and returns what it returns."""
    model = tiny_model()
    model, optimizer = fabric.setup(model, torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3))
    inputs = torch.randn(8, 4)
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = model(inputs).pow(2).mean()
        fabric.backward(loss)
        calls.append(loss.item())
        return loss

    first = optimizer.step(closure)
    assert len(calls) > 1  # LBFGS evaluated the closure several times
    assert first.item() == calls[0]
    assert model(inputs).pow(2).mean().item() < calls[0]


def test_wrapped_optimizer_load_state_dict_keeps_one_state(fabric):
    """Loading state through the wrapper updates the optimizer that actually steps."""
    model = tiny_model()
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=0.1))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    fresh_model = tiny_model()
    fresh_model, fresh = fabric.setup(fresh_model, torch.optim.Adam(fresh_model.parameters(), lr=0.5))
    fresh.load_state_dict(saved)
    assert fresh.optimizer.param_groups[0]["lr"] == 0.1
    assert fresh.state is fresh.optimizer.state
    assert len(fresh.optimizer.state) == len(saved["state"])


def test_wrapped_optimizer_shares_groups_state_and_defaults_both_ways(fabric):
    """param_groups, state and defaults read and rebind the original's, also after the original rebinds them."""
    model = tiny_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    original = optimizer.optimizer
    original.param_groups = [dict(original.param_groups[0], lr=0.2)]  # as Optimizer.load_state_dict rebinds it
    assert optimizer.param_groups is original.param_groups
    assert optimizer.param_groups[0]["lr"] == 0.2
    state, defaults = {"k": 1}, {"lr": 0.3}
    optimizer.state, optimizer.defaults = state, defaults
    assert original.state is state
    assert original.defaults is defaults
    assert optimizer.state is state
    assert optimizer.defaults is defaults
    assert not {"param_groups", "state", "defaults"} & set(vars(optimizer))


def test_setup_dataloaders(fabric):
    """setup_dataloaders keeps length and batches, returns a tuple for several, and rejects non-loaders."""
    one = fabric.setup_dataloaders(loader())
    assert len(one) == len(loader())
    for (a, b), (c, d) in zip(one, loader(), strict=True):
        assert torch.equal(a, c)
        assert torch.equal(b, d)
    assert one.batch_size == 32  # attributes of the original loader are forwarded
    two = fabric.setup_dataloaders(loader(), loader(batch_size=8))
    assert isinstance(two, tuple)
    assert len(two[1]) == 32
    with pytest.raises(TypeError, match="argument 1 must be a DataLoader, got list"):
        fabric.setup_dataloaders(loader(), [1, 2])
    with pytest.raises(TypeError, match="at least one data loader"):
        fabric.setup_dataloaders()


def test_to_device_handles_nested_containers(fabric):
    """to_device moves tensors inside dicts, lists, tuples and named tuples and keeps their types."""
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.ones(2), "rest": [Pair(torch.zeros(1), 3), ("s", torch.ones(1))]}
    moved = fabric.to_device(batch)
    assert isinstance(moved["rest"][0], Pair)
    assert moved["rest"][0].b == 3
    assert moved["rest"][1][0] == "s"
    assert moved["x"].device == fabric.device
    assert isinstance(fabric.to_device(torch.nn.Linear(1, 1)), torch.nn.Linear)


def test_clip_gradients_by_norm_and_value(fabric):
    """clip_gradients returns the pre-clip norm and clips; it needs exactly one of max_norm and clip_val."""
    model = tiny_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    (model(torch.randn(8, 4)) * 100).sum().backward()
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    norm = fabric.clip_gradients(model, optimizer, max_norm=1.0)
    assert norm.item() == pytest.approx(expected.item(), rel=1e-5)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert clipped.item() == pytest.approx(1.0, rel=1e-4)
    assert fabric.clip_gradients(model, optimizer, clip_val=0.01) is None
    assert max(p.grad.abs().max().item() for p in model.parameters()) <= 0.01 + 1e-7
    with pytest.raises(ValueError, match="exactly one of max_norm and clip_val"):
        fabric.clip_gradients(model, optimizer)
    with pytest.raises(ValueError, match="exactly one of max_norm and clip_val"):
        fabric.clip_gradients(model, optimizer, max_norm=1.0, clip_val=1.0)


def test_no_backward_sync_needs_a_set_up_model(fabric):
    """no_backward_sync works as a context on a set-up model and rejects a raw one."""
    model = fabric.setup(tiny_model())
    with fabric.no_backward_sync(model):
        model(torch.randn(2, 4)).sum().backward()
    with fabric.no_backward_sync(model, enabled=False):
        pass
    with pytest.raises(TypeError, match=r"needs the model that fabric\.setup"):
        fabric.no_backward_sync(tiny_model())


def test_single_process_collectives(fabric):
    """With one process, collectives return their input, with all_gather adding a world dimension."""
    t = torch.arange(3.0)
    assert torch.equal(fabric.all_reduce(t), t)
    assert torch.equal(fabric.all_reduce(t, op="max"), t)
    assert fabric.all_reduce(2.5).item() == 2.5
    assert fabric.all_reduce({"a": t})["a"] is t
    assert fabric.all_gather(t).shape == (1, 3)
    assert fabric.broadcast({"k": 1}) == {"k": 1}
    fabric.barrier()
    assert (fabric.global_rank, fabric.local_rank, fabric.world_size, fabric.is_global_zero) == (0, 0, 1, True)
    with pytest.raises(ValueError, match="op='avg' is not one of 'mean', 'sum', 'max', 'min'"):
        fabric.all_reduce(t, op="avg")


def test_print_on_rank_zero(fabric, capsys):
    """fabric.print prints on global rank zero, with print's arguments."""
    fabric.print("a", 1, sep="-")
    assert capsys.readouterr().out == "a-1\n"


def test_loggers_are_validated():
    """A logger without log_metrics is a TypeError naming its class."""

    class NotALogger:
        pass

    with pytest.raises(TypeError, match="NotALogger has no log_metrics"):
        Fabric(accelerator="cpu", loggers=[NotALogger()])


def test_log_converts_tensors_and_rejects_non_scalars():
    """log sends Python numbers to the loggers and rejects tensors with several elements."""

    class Memory:
        def __init__(self):
            self.rows = []

        def log_metrics(self, metrics, step=None):
            self.rows.append((dict(metrics), step))

    memory = Memory()
    fabric = Fabric(accelerator="cpu", loggers=memory)
    fabric.log("loss", torch.tensor(0.5), step=3)
    fabric.log_dict({"a": 1, "b": torch.tensor([2.0])})
    assert memory.rows == [({"loss": 0.5}, 3), ({"a": 1, "b": 2.0}, None)]
    assert type(memory.rows[0][0]["loss"]) is float
    with pytest.raises(TypeError, match="'v' has 3 elements"):
        fabric.log("v", torch.ones(3))
    with pytest.raises(TypeError, match="'s' is a str"):
        fabric.log("s", "text")


def test_teardown_finalizes_loggers():
    """teardown (or leaving the with block) finalizes every logger."""

    class Finalized:
        done = 0

        def log_metrics(self, metrics, step=None):
            pass

        def finalize(self):
            self.done += 1

    logger = Finalized()
    with Fabric(accelerator="cpu", loggers=[logger]) as fabric:
        fabric.log("x", 1)
    assert logger.done == 1


def test_hooks_on_the_original_and_on_the_wrapper_both_run(fabric):
    """Forward hooks registered on the original model or on the wrapped one both fire."""
    original = torch.nn.Linear(2, 2)
    fired = []
    original.register_forward_hook(lambda *args: fired.append("original"))
    model = fabric.setup(original)
    model(torch.randn(1, 2))
    assert fired == ["original"]
    model.register_forward_hook(lambda *args: fired.append("wrapper"))
    model(torch.randn(1, 2))
    assert fired == ["original", "original", "wrapper"]


@dataclasses.dataclass(frozen=True)
class Pair:
    """A frozen dataclass batch, with a check in __post_init__ that copying must not trip."""

    inputs: torch.Tensor
    labels: torch.Tensor
    name: str = "pair"

    def __post_init__(self) -> None:
        if self.inputs.device.type == "meta":
            raise AssertionError("__init__ must not run again when the batch moves")


def test_dataclass_batches_move_and_cast_whole():
    """A dataclass batch (frozen, nested in a dict) moves to the device, and casts, field by field."""
    from trainwright._collections import cast_floating, move_to_device

    batch = {"pair": Pair(torch.zeros(2, 3), torch.ones(2, dtype=torch.long))}
    moved = move_to_device(batch, torch.device("meta"))  # a device without data: every tensor must go there
    assert isinstance(moved["pair"], Pair)
    assert moved["pair"].inputs.device.type == "meta"
    assert moved["pair"].labels.device.type == "meta"
    assert moved["pair"].name == "pair"
    assert batch["pair"].inputs.device.type == "cpu"  # the original is left alone
    cast = cast_floating(batch, torch.float64)
    assert cast["pair"].inputs.dtype == torch.float64
    assert cast["pair"].labels.dtype == torch.long


class EpochStream(torch.utils.data.IterableDataset):
    """A stream that shuffles itself by epoch, as streaming data sets do."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(6, generator=torch.Generator().manual_seed(self.epoch)).tolist()
        return iter(torch.tensor(order).float().unsqueeze(1))


def test_set_epoch_reaches_an_iterable_data_set(fabric):
    """loader.set_epoch(e) reaches a stream's own set_epoch, so it shuffles per epoch and a resume sees the same."""
    loader = fabric.setup_dataloaders(torch.utils.data.DataLoader(EpochStream(), batch_size=6))
    loader.set_epoch(3)
    assert loader.dataset.epoch == 3
    first = next(iter(loader))
    loader.set_epoch(4)
    assert not torch.equal(next(iter(loader)), first)
    loader.set_epoch(3)
    assert torch.equal(next(iter(loader)), first)


class EpochCrops(torch.utils.data.Dataset):
    """A map-style set whose augmentation is drawn from (epoch, index): the docs' per-sample seeding recipe."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.epoch * 1_000_003 + index)
        return torch.rand(2, generator=generator)


@pytest.mark.parametrize("workers", [0, 2])
def test_set_epoch_reaches_a_map_style_data_set(fabric, workers):
    """loader.set_epoch(e) reaches a map-style set's set_epoch, in its workers too: a resumed epoch redraws alike."""
    loader = fabric.setup_dataloaders(torch.utils.data.DataLoader(EpochCrops(), batch_size=4, num_workers=workers))
    loader.set_epoch(3)
    assert loader.dataset.epoch == 3
    first = torch.cat(list(loader))
    loader.set_epoch(4)
    assert not torch.equal(torch.cat(list(loader)), first)
    loader.set_epoch(3)
    assert torch.equal(torch.cat(list(loader)), first)
    loader.set_epoch(3)
    loader.skip_batches(1)  # a mid-epoch resume: the second batch, drawn as in the whole epoch
    assert torch.equal(torch.cat(list(loader)), first[4:])


@pytest.fixture
def threads():
    """torch's thread count, put back after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 cores")
def test_compute_threads_and_loader_workers_that_overbook_the_cores_are_warned_of(fabric, threads):
    """All cores computing plus a loader worker: a warning saying how many threads to use; 1 thread: none."""
    cores = len(os.sched_getaffinity(0))
    loader = torch.utils.data.DataLoader(EpochCrops(), batch_size=4, num_workers=1)
    torch.set_num_threads(cores)
    with pytest.warns(UserWarning, match=rf"torch.set_num_threads\({cores - 1}\)"):
        fabric.setup_dataloaders(loader)
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fabric.setup_dataloaders(loader)
        fabric.setup_dataloaders(torch.utils.data.DataLoader(EpochCrops(), batch_size=4))  # no workers


def test_set_epoch_takes_a_data_set_that_is_a_plain_list(fabric):
    """A list of samples as the data set (unhashable, without set_epoch): set_epoch passes over it."""
    loader = fabric.setup_dataloaders(torch.utils.data.DataLoader([torch.ones(2)] * 4, batch_size=2))
    loader.set_epoch(1)
    assert len(list(loader)) == 2
