"""CUDA paths: device selection and the mixed and reduced precisions against float32.

These run only where a CUDA GPU is present; elsewhere they are skipped (see conftest.py).
"""

import pytest
import torch

from tests.core.helpers import regression_data
from trainwright import Fabric, capture_rng_state, restore_rng_state

pytestmark = pytest.mark.cuda


def train(precision: str, steps: int = 200):
    fabric = Fabric(accelerator="cuda", devices=1, precision=precision)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = fabric.setup(model, optimizer)
    x, y = (fabric.to_device(t) for t in regression_data(n=512).tensors)
    losses = []
    for step in range(steps):
        i = (step * 64) % 512
        loss = torch.nn.functional.mse_loss(model(x[i : i + 64]), y[i : i + 64])
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return fabric, model, losses


def test_cuda_device_selection():
    """accelerator='auto' picks CUDA, and devices=[i] selects cuda:i for the model and the batches."""
    assert Fabric().device.type == "cuda"
    last = torch.cuda.device_count() - 1
    fabric = Fabric(accelerator="cuda", devices=[last])
    assert fabric.device == torch.device("cuda", last)
    model = fabric.setup(torch.nn.Linear(4, 1))
    assert next(model.parameters()).device == torch.device("cuda", last)
    loader = fabric.setup_dataloaders(torch.utils.data.DataLoader(regression_data(n=8), batch_size=4))
    assert all(x.device == fabric.device for x, _ in loader)


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16-mixed", 0.05), ("16-mixed", 0.02), ("bf16-true", 0.15)])
def test_reduced_precision_matches_float32(precision, tolerance):
    """Training in a reduced precision ends within a stated tolerance of float32's final loss."""
    _, _, reference = train("32-true")
    fabric, model, losses = train(precision)
    final, expected = sum(losses[-20:]) / 20, sum(reference[-20:]) / 20
    assert final < 0.2 * losses[0]
    assert abs(final - expected) <= tolerance + 0.1 * expected, (precision, final, expected)
    if precision == "16-mixed":
        assert fabric.precision.scaler.is_enabled()
        assert fabric.precision.scaler.get_scale() > 1
    if precision == "bf16-true":
        assert next(model.parameters()).dtype == torch.bfloat16


def test_ddp_on_one_gpu_uses_nccl_and_trains():
    """strategy='ddp' on CUDA: an nccl group of one, a DDP model on the GPU, and a step that trains."""
    with Fabric(accelerator="cuda", devices=1, strategy="ddp", precision="bf16-mixed") as fabric:
        assert fabric.strategy.backend == "nccl"
        model = fabric.setup(torch.nn.Linear(4, 1))
        assert isinstance(model._forward_module, torch.nn.parallel.DistributedDataParallel)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = (fabric.to_device(t) for t in regression_data(n=64).tensors)
        before = torch.nn.functional.mse_loss(model(x).float(), y).item()
        for _ in range(20):
            fabric.backward(torch.nn.functional.mse_loss(model(x).float(), y))
            optimizer.step()
            optimizer.zero_grad()
        assert torch.nn.functional.mse_loss(model(x).float(), y).item() < before
        assert fabric.all_reduce(torch.ones(1, device=fabric.device), op="sum").item() == 1.0


@pytest.mark.parametrize("cpu_offload", [False, True])
def test_fsdp_on_one_gpu_shards_over_a_cuda_mesh_and_trains(cpu_offload, tmp_path):
    """strategy='fsdp' on CUDA: a CUDA mesh over nccl, bf16 compute, training, and a sharded checkpoint round trip."""
    from trainwright.strategies import FSDPStrategy

    strategy = FSDPStrategy(cpu_offload=cpu_offload)
    with Fabric(accelerator="cuda", devices=1, strategy=strategy, precision="bf16-mixed") as fabric:
        assert (fabric.strategy.backend, fabric.strategy.mesh.device_type) == ("nccl", "cuda")
        torch.manual_seed(0)
        with fabric.init_module(empty_init=True):
            model = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
        model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=1e-2))
        shard = next(model.parameters()).to_local()
        assert shard.device.type == ("cpu" if cpu_offload else "cuda")
        x, y = (fabric.to_device(t) for t in regression_data(n=64).tensors)
        losses = []
        for _ in range(20):
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            fabric.clip_gradients(model, optimizer, max_norm=10.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
        weights = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
        fabric.save(tmp_path / "ckpt", {"model": model, "optimizer": optimizer})
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # so that a load that restores nothing cannot pass
        fabric.load(tmp_path / "ckpt", {"model": model, "optimizer": optimizer})
        assert all(torch.equal(v.full_tensor(), weights[k]) for k, v in model.state_dict().items())


def test_fsdp_meta_init_keeps_each_ranks_cuda_random_stream(tmp_path):
    """Two processes on one GPU: after a meta-device build whose init_weights() draws into the shards,
    the ranks' CUDA generators still differ (torch's DTensor tracker would give all of them rank 0's)."""
    from tests.core.test_fsdp import streams_after_meta_setup

    ranks = streams_after_meta_setup(tmp_path, "cuda")
    for key in ("fsdp, Net", "fsdp, Drawn"):
        assert not torch.equal(ranks[0][key]["device"], ranks[1][key]["device"]), key


def test_rng_state_is_the_current_devices_and_restores_where_fewer_devices_are_visible():
    """capture_rng_state holds the current device's CUDA state; a 0.5 state with more devices than visible restores."""
    fabric = Fabric(accelerator="cuda", devices=1)
    torch.rand(1, device=fabric.device)  # initialises CUDA, whose state is then captured
    state = capture_rng_state()
    assert isinstance(state["cuda"], torch.Tensor)
    expected = torch.rand(3, device=fabric.device)
    restore_rng_state(state)
    assert torch.equal(torch.rand(3, device=fabric.device), expected)

    # trainwright 0.5 saved one state per visible device: here, one more device than this machine has
    count = torch.cuda.device_count()
    old = {"cuda": [torch.cuda.get_rng_state(i) for i in range(count)] + [torch.cuda.get_rng_state(0)]}
    expected = torch.rand(3, device="cuda:0")
    restore_rng_state(old)
    assert torch.equal(torch.rand(3, device="cuda:0"), expected)
