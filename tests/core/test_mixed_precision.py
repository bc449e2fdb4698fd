"""16-mixed: every optimizer step applies gradients at their true scale, whatever steps were skipped before it.

The reference for a step is the plain SGD update ``-lr * grad / scale``: the gradients as the
scaled backward left them, divided by the scale that backward used (a power of two, so the
division is exact and a correct step matches the reference bit for bit). A step that applied scaled
gradients would be ``scale`` (65,536 at first) times too big.
"""

import pytest
import torch

from trainwright import Fabric

LR = 0.1
MAX_NORM = 1e9  # clipping unscales, but must not change the gradients being compared


def setup(optimizers: int = 1):
    """A 16-mixed Fabric on the CPU, a small model, and one SGD optimizer per layer (or one for all)."""
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)]
    model = torch.nn.Sequential(*layers)
    if optimizers == 1:
        groups = [list(model.parameters())]
    else:
        groups = [list(layer.parameters()) for layer in layers]
    model, *opts = fabric.setup(model, *(torch.optim.SGD(g, lr=LR) for g in groups))
    return fabric, model, opts


def batch(seed: int) -> torch.Tensor:
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))  # (8, 4)


def backward(fabric: Fabric, model, seed: int, spike: bool = False) -> None:
    # Small enough that the scaled float16 gradients do not overflow; a spike overflows them.
    loss = model(batch(seed)).pow(2).mean() * (1e30 if spike else 1e-4)
    fabric.backward(loss)


def true_gradients(fabric: Fabric, params) -> list[torch.Tensor]:
    """The gradients at their true scale, read while they still carry the loss scale."""
    scale = fabric.precision.scaler.get_scale()
    return [p.grad.detach() / scale for p in params]


def step_and_measure(fabric: Fabric, optimizer, expected_grads) -> float:
    """Step ``optimizer``; return the size of its update relative to ``-lr * expected_grads``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    before = [p.detach().clone() for p in params]
    optimizer.step()
    applied = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, params, strict=True)])
    # The update SGD makes from ``expected_grads``, rounded as SGD rounds it.
    expected = torch.cat([(b - b.add(g, alpha=-LR)).flatten() for b, g in zip(before, expected_grads, strict=True)])
    return (torch.linalg.vector_norm(applied) / torch.linalg.vector_norm(expected)).item()


def skip(optimizer) -> None:
    """What a loop does when it decides not to step: drop the window's gradients."""
    optimizer.zero_grad(set_to_none=True)


def params_of(optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def test_clip_skip_backward_clip_step_applies_the_true_update():
    """clip -> skip (zero_grad) -> backward -> clip -> step applies the unscaled update (ratio 1.000)."""
    fabric, model, (optimizer,) = setup()
    backward(fabric, model, seed=0)
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)  # unscales
    skip(optimizer)  # e.g. "skip on a gradient spike"
    backward(fabric, model, seed=1)
    expected = true_gradients(fabric, params_of(optimizer))
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6)


def test_the_update_after_a_skip_equals_the_update_without_it():
    """The step after a clipped-and-skipped iteration moves the weights exactly as the same step without the skip."""
    updates = []
    for skipped_first in (False, True):
        fabric, model, (optimizer,) = setup()
        if skipped_first:
            backward(fabric, model, seed=0)
            fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
            skip(optimizer)
        before = [p.detach().clone() for p in model.parameters()]
        backward(fabric, model, seed=1)
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        optimizer.step()
        updates.append([p.detach() - b for p, b in zip(model.parameters(), before, strict=True)])
    for without, with_skip in zip(*updates, strict=True):
        torch.testing.assert_close(with_skip, without, rtol=0, atol=0)


@pytest.mark.parametrize("clip", [False, True], ids=["no-clip", "clip"])
def test_a_skip_without_clipping_leaves_the_next_step_true(clip):
    """A skipped iteration that never unscaled does not disturb the next step, clipped or not."""
    fabric, model, (optimizer,) = setup()
    backward(fabric, model, seed=0)
    skip(optimizer)
    backward(fabric, model, seed=1)
    expected = true_gradients(fabric, params_of(optimizer))
    if clip:
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6)


def test_skips_and_steps_in_any_order_keep_every_step_true():
    """Over a run of clipped iterations, some skipped and some stepped, every step applies the true update."""
    fabric, model, (optimizer,) = setup()
    pattern = ["skip", "skip", "step", "skip", "step", "step", "skip", "step"]
    for seed, action in enumerate(pattern):
        backward(fabric, model, seed=seed)
        expected = true_gradients(fabric, params_of(optimizer))
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        if action == "skip":
            skip(optimizer)
        else:
            assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6), seed


def test_several_optimizers_each_step_true_after_skips():
    """With two optimizers, skipping one or both after clipping leaves every later step at the true scale."""
    fabric, model, (first, second) = setup(optimizers=2)
    # Iteration 0: both clipped, both skipped. Iteration 1: both clipped, only the first steps.
    backward(fabric, model, seed=0)
    for optimizer in (first, second):
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    skip(first)
    skip(second)
    backward(fabric, model, seed=1)
    expected = true_gradients(fabric, params_of(first))
    for optimizer in (first, second):
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    assert step_and_measure(fabric, first, expected) == pytest.approx(1.0, abs=1e-6)
    skip(first)
    skip(second)
    # Iteration 2: both step.
    backward(fabric, model, seed=2)
    expected = [true_gradients(fabric, params_of(o)) for o in (first, second)]
    for optimizer in (first, second):
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    for optimizer, grads in zip((first, second), expected, strict=True):
        assert step_and_measure(fabric, optimizer, grads) == pytest.approx(1.0, abs=1e-6)


def test_gradient_accumulation_after_a_skipped_window_steps_true():
    """A skipped accumulation window (3 backwards, clip, skip) is followed by a window that steps at the true scale."""
    fabric, model, (optimizer,) = setup()
    for window in range(2):
        for micro in range(3):
            with fabric.no_backward_sync(model, enabled=micro < 2):
                backward(fabric, model, seed=10 * window + micro)
        expected = true_gradients(fabric, params_of(optimizer))
        fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
        if window == 0:
            skip(optimizer)
        else:
            assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6)


def test_a_skipped_spike_backs_the_scale_off_and_the_next_step_applies():
    """A spike skipped by hand (non-finite clip norm) lowers the scale, as an overflow does; the next step applies."""
    fabric, model, (optimizer,) = setup()
    initial_scale = fabric.precision.scaler.get_scale()
    backward(fabric, model, seed=0, spike=True)
    norm = fabric.clip_gradients(model, optimizer, max_norm=1.0)
    assert not torch.isfinite(norm)
    skip(optimizer)
    backward(fabric, model, seed=1)
    assert fabric.precision.scaler.get_scale() == initial_scale / 2
    expected = true_gradients(fabric, params_of(optimizer))
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6)


def test_a_checkpoint_after_a_skip_holds_the_scale_the_next_iteration_uses(tmp_path):
    """Saved after a skipped spike, the checkpoint holds the scale that the uninterrupted run trains on next."""
    fabric, model, (optimizer,) = setup()
    backward(fabric, model, seed=0, spike=True)
    fabric.clip_gradients(model, optimizer, max_norm=1.0)
    skip(optimizer)
    fabric.save(tmp_path / "skipped.ckpt", {"model": model})
    backward(fabric, model, seed=1)
    uninterrupted = fabric.precision.scaler.get_scale()

    resumed = Fabric(accelerator="cpu", precision="16-mixed")
    resumed.load(tmp_path / "skipped.ckpt", {"model": model})  # a resume: state to fill, the scaler included
    assert resumed.precision.scaler.get_scale() == uninterrupted


def test_saving_between_clip_and_step_leaves_the_step_true(tmp_path):
    """A save between clip_gradients and step does not make the step unscale the gradients a second time."""
    fabric, model, (optimizer,) = setup()
    backward(fabric, model, seed=0)
    expected = true_gradients(fabric, params_of(optimizer))
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    fabric.save(tmp_path / "between.ckpt", {"model": model})
    fabric.clip_gradients(model, optimizer, max_norm=MAX_NORM)
    assert step_and_measure(fabric, optimizer, expected) == pytest.approx(1.0, abs=1e-6)
