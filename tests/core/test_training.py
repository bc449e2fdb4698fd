"""Training through Fabric: it learns in every precision, and in 32-true adds nothing to the numbers."""

import pytest
import torch

from tests.core.helpers import loader, regression_data, tiny_model
from trainwright import Fabric


def evaluate(model, dataset) -> float:
    with torch.no_grad():
        x, y = dataset.tensors
        return torch.nn.functional.mse_loss(model(x).float(), y).item()


def train(fabric: Fabric, epochs: int = 4, lr: float = 0.05):
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model, optimizer = fabric.setup(model, optimizer)
    data = fabric.setup_dataloaders(loader())
    for _ in range(epochs):
        for x, y in data:
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    return model


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true"])
def test_tiny_model_learns(precision):
    """A tiny regression model trained through Fabric on CPU ends with a much lower loss."""
    dataset = regression_data()
    torch.manual_seed(0)
    before = evaluate(tiny_model(), dataset)
    model = train(Fabric(accelerator="cpu", precision=precision))
    after = evaluate(model, dataset)
    assert after < 0.25 * before, (precision, before, after)


def test_32_true_matches_a_raw_pytorch_loop_exactly():
    """In 32-true, Fabric changes no number: weights equal those of the same raw loop, bit for bit."""
    fabric_model = train(Fabric(accelerator="cpu"))
    torch.manual_seed(0)
    raw = tiny_model()
    optimizer = torch.optim.SGD(raw.parameters(), lr=0.05)
    for _ in range(4):
        for x, y in loader():
            loss = torch.nn.functional.mse_loss(raw(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(fabric_model.state_dict().items(), raw.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bf16_mixed_runs_the_forward_in_bfloat16_and_returns_float32():
    """Under bf16-mixed the linear layers compute in bfloat16, and the output comes back as float32."""
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    seen = []
    model = torch.nn.Linear(4, 2)
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model = fabric.setup(model)
    out = model(torch.randn(3, 4))
    assert seen == [torch.bfloat16]
    assert out.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32  # the weights stay in float32
    with fabric.autocast():
        assert (torch.randn(2, 4) @ torch.randn(4, 2)).dtype == torch.bfloat16


def test_64_true_converts_the_model_and_its_inputs():
    """64-true stores parameters in float64 and casts float inputs to float64, leaving integers alone."""
    fabric = Fabric(accelerator="cpu", precision="64-true")

    class TakesIndices(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x, index):
            assert index.dtype == torch.long
            return self.linear(x)

    model = fabric.setup(TakesIndices())
    assert model.linear.weight.dtype == torch.float64
    assert model(torch.randn(2, 4), torch.tensor([0, 1])).dtype == torch.float64


def test_bf16_true_stores_bfloat16_weights_and_returns_float32():
    """bf16-true stores parameters in bfloat16 and returns float32 outputs for the loss."""
    fabric = Fabric(accelerator="cpu", precision="bf16-true")
    model = fabric.setup(torch.nn.Linear(4, 1))
    assert model.weight.dtype == torch.bfloat16
    assert model(torch.randn(2, 4)).dtype == torch.float32


def test_16_mixed_scales_the_loss_and_unscales_before_clipping():
    """With 16-mixed, backward scales gradients by the scaler's factor and clipping sees true gradients."""
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    # Small enough that the scaled float16 gradients do not overflow on the first step.
    reference(x).float().pow(2).mean().mul(1e-4).backward()
    true_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in reference.parameters()]))

    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    loss = model(x).pow(2).mean().mul(1e-4)
    fabric.backward(loss)
    scale = fabric.precision.scaler.get_scale()
    assert scale > 1
    scaled_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert scaled_norm.item() == pytest.approx(true_norm.item() * scale, rel=1e-2)
    norm = fabric.clip_gradients(model, optimizer, max_norm=1e9)
    assert norm.item() == pytest.approx(true_norm.item(), rel=1e-2)
    fabric.clip_gradients(model, optimizer, max_norm=1e9)  # a second clip in one step is harmless
    optimizer.step()


def test_16_mixed_with_two_optimizers_updates_the_scale_once_per_iteration():
    """Two optimizers stepped in one 16-mixed iteration both step; the scale updates once, at the next backward."""
    fabric = Fabric(accelerator="cpu", precision="16-mixed")
    # A scaler that grows at every update, so that each update shows in the scale: twice per
    # iteration would quadruple it, none would leave it where it started.
    fabric.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    encoder, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model = fabric.setup(torch.nn.Sequential(encoder, head))
    opt_a, opt_b = torch.optim.SGD(encoder.parameters(), lr=0.1), torch.optim.SGD(head.parameters(), lr=0.1)
    _, opt_a, opt_b = fabric.setup(torch.nn.Identity(), opt_a, opt_b)
    scales = []
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        fabric.backward(model(torch.randn(8, 4)).pow(2).mean())
        scales.append(fabric.precision.scaler.get_scale())  # the scale this backward used
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scales == [2.0**10, 2.0**11, 2.0**12]
