"""FSDP: two real processes over gloo, checked against DDP, and the same code path in one process.

The two-process tests start ``torchrun --standalone --nproc-per-node=2`` on ``fsdp_worker.py``
once for many checks (DDP and FSDP runs of the same steps, checkpoints both ways across world
sizes) and once for a crash. The one-process tests run FSDP in this process, over a process
group of one, which is the same code path: ``fully_shard`` on a mesh, ``DTensor`` parameters,
distributed checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.core import fsdp_worker
from tests.core.fsdp_worker import Block, Net, net
from tests.core.test_ddp import run_bounded
from trainwright import Fabric
from trainwright import _distributed_checkpoint as sharded
from trainwright.checkpoint import FORMAT_VERSION, RESERVED_KEY, CheckpointIO
from trainwright.strategies import DDPStrategy, FSDPStrategy
from trainwright.strategies.fsdp import _units

WORKER = Path(fsdp_worker.__file__)
TOLERANCE = 1e-5


def torchrun(*args: str | Path, timeout: float = 300) -> object:
    """Run ``fsdp_worker.py`` in two processes; the environment carries no launch variables in."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", WORKER, *args]
    return run_bounded([str(part) for part in command], timeout, env)


def fresh(fabric: Fabric, seed: int = 123) -> dict:
    """A newly set-up model and optimizer whose weights differ from any saved ones."""
    torch.manual_seed(seed)
    model = Net()
    model, optimizer = fabric.setup(model, fsdp_worker.optimizer_for(model))
    return {"model": model, "optimizer": optimizer, "step": 0}


def whole(state_dict: dict) -> dict:
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state_dict.items()}


def assert_same_state(loaded: dict, reference: dict) -> None:
    """A loaded model and optimizer (``state`` of fresh objects) equal a full checkpoint's, exactly."""
    weights = whole(loaded["model"].state_dict())
    assert list(weights) == list(reference["model"])
    for name, tensor in reference["model"].items():
        assert torch.equal(weights[name], tensor), name
    optimizer = loaded["optimizer"].state_dict()
    assert optimizer["param_groups"] == reference["optimizer"]["param_groups"]
    assert set(optimizer["state"]) == set(reference["optimizer"]["state"])
    for index, expected in reference["optimizer"]["state"].items():
        for key, value in expected.items():
            got = optimizer["state"][index][key]
            got = got.full_tensor() if hasattr(got, "full_tensor") else got
            assert torch.equal(got, value), (index, key)


def assert_close_lists(a: list[float], b: list[float], what: str) -> None:
    assert len(a) == len(b) > 0
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    assert worst <= TOLERANCE, f"{what} differ by {worst}"


# -- two processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process_checkpoints(tmp_path_factory):
    """Checkpoints of both formats written by FSDP on one process, for the two-process job to load."""
    folder = tmp_path_factory.mktemp("one")
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        trained = fsdp_worker.train(fabric, steps=3)
        state = {"model": trained["model"], "optimizer": trained["optimizer"], "step": 3, "note": "one",
                 "extra": fsdp_worker.EXTRA}  # fmt: skip
        fabric.save(folder / "one-sharded.ckpt", state)
        fabric.strategy.state_dict_type = "full"
        fabric.save(folder / "one-full.ckpt", state)
    return folder


@pytest.fixture(scope="module")
def two(tmp_path_factory, one_process_checkpoints):
    """Run the ``train`` scenario once in two processes; return the output folder and each rank's results."""
    out_dir = tmp_path_factory.mktemp("two")
    result = torchrun("train", out_dir, one_process_checkpoints)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    return out_dir, ranks


@pytest.mark.slow
def test_fsdp_losses_and_weights_equal_ddps(two):
    """Over 20 fp32 steps, FSDP's losses (per rank) and final weights equal DDP's within 1e-5."""
    _, ranks = two
    for r in ranks:
        assert_close_lists(r["fsdp"]["losses"], r["ddp"]["losses"], "losses")
        for name, expected in r["ddp"]["final"].items():
            torch.testing.assert_close(r["fsdp"]["final"][name], expected, atol=TOLERANCE, rtol=0)
        moved = [not torch.allclose(r["ddp"]["final"][k], r["ddp"]["initial"][k]) for k in r["ddp"]["final"]]
        assert all(moved)  # every tensor trained
    assert ranks[0]["fsdp"]["losses"] != ranks[1]["fsdp"]["losses"]  # each rank saw its own shard of the data


@pytest.mark.slow
def test_the_model_is_sharded(two):
    """Each process holds a DTensor shard of every parameter; together exactly the model's elements."""
    _, ranks = two
    total = sum(p.numel() for p in net().parameters())
    assert [r["fsdp_type"] for r in ranks] == ["FSDPNet", "FSDPNet"]
    assert [r["param_type"] for r in ranks] == ["DTensor", "DTensor"]
    assert sum(r["local_numel"] for r in ranks) == total
    assert all(r["local_numel"] <= 0.55 * total for r in ranks)


@pytest.mark.slow
def test_clip_norm_is_the_norm_of_the_unsharded_gradient(two):
    """clip_gradients returns the global norm of the sharded gradients: DDP's unsharded one, within 1e-5."""
    _, ranks = two
    for r in ranks:
        assert_close_lists(r["fsdp"]["norms"], r["ddp"]["norms"], "gradient norms")
        assert max(r["fsdp"]["norms"]) > 0.5  # the clipping at 0.5 really clipped
    assert ranks[0]["fsdp"]["norms"] == ranks[1]["fsdp"]["norms"]  # one norm for the whole job


@pytest.mark.slow
def test_clip_norm_of_order_infinity_and_under_16_mixed_equals_ddps(two):
    """The infinity norm (largest entry) and the norm of unscaled 16-mixed gradients are DDP's, and clip alike."""
    _, ranks = two
    for r in ranks:
        assert_close_lists(r["inf-norm, fsdp"]["norms"], r["inf-norm, ddp"]["norms"], "infinity norms")
        assert max(r["inf-norm, fsdp"]["norms"]) > 0  # a norm was measured
        # The scaler's first steps overflow (an infinite norm, a skipped step) alike under both strategies.
        fsdp, ddp = r["16-mixed, fsdp"]["norms"], r["16-mixed, ddp"]["norms"]
        assert [math.isfinite(n) for n in fsdp] == [math.isfinite(n) for n in ddp]
        finite = [(a, b) for a, b in zip(fsdp, ddp, strict=True) if math.isfinite(b)]
        assert len(finite) >= 5
        assert_close_lists([a for a, _ in finite], [b for _, b in finite], "16-mixed norms")
        for name, expected in r["inf-norm, ddp"]["final"].items():
            torch.testing.assert_close(r["inf-norm, fsdp"]["final"][name], expected, atol=TOLERANCE, rtol=0)
    # The scaler's factor is gone from the finite norms: fp32's order of magnitude, not 2**16 times it.
    finite = [n for n in ranks[0]["16-mixed, fsdp"]["norms"] if math.isfinite(n)]
    assert max(finite) < 100 * max(ranks[0]["fsdp"]["norms"])


@pytest.mark.slow
def test_no_backward_sync_accumulation_equals_one_big_batch(two):
    """Two micro-batches with no_backward_sync on the first end with the weights of one full batch."""
    _, ranks = two
    for r in ranks:
        for name, expected in r["fsdp"]["final"].items():
            torch.testing.assert_close(r["accumulated"]["final"][name], expected, atol=TOLERANCE, rtol=0)
        assert r["accumulated"]["unsynced_grads"] == 0  # the first micro-batch was not reduce-scattered


@pytest.mark.slow
def test_a_dropped_window_leaves_no_gradient_behind_on_two_processes(two):
    """zero_grad after backwards under no_backward_sync: the next window's gradients equal DDP's (2 processes)."""
    _, ranks = two
    for r in ranks:
        expected, got = r["skipped window, ddp"], r["skipped window, fsdp"]
        assert list(got) == list(expected)
        for name, gradient in expected.items():
            torch.testing.assert_close(got[name], gradient, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.slow
def test_initial_weights_do_not_depend_on_strategy_or_meta_init(two):
    """For the same seed, eager, DDP, FSDP and meta-device builds (DDP and FSDP) start from identical weights."""
    _, ranks = two
    eager = net().state_dict()
    for r in ranks:
        for initial in (r["ddp"]["initial"], r["ddp_meta_initial"], r["fsdp"]["initial"], r["fsdp_meta"]["initial"]):
            assert list(initial) == list(eager)
            assert all(torch.equal(initial[k], eager[k]) for k in eager)
        assert_close_lists(r["fsdp_meta"]["losses"], r["ddp"]["losses"], "losses after a meta-device build")


@pytest.mark.slow
def test_every_process_starts_from_rank_zeros_weights(two):
    """Processes seeded differently (eager or meta-device build) all start from rank 0's weights, as under DDP."""
    _, ranks = two
    torch.manual_seed(0)
    rank_zero = Net().state_dict()
    for r in ranks:
        for empty_init in (False, True):
            initial = r[f"rank-seeded initial, empty_init={empty_init}"]
            assert all(torch.equal(initial[k], rank_zero[k]) for k in rank_zero)


@pytest.mark.slow
def test_collectives_work_under_fsdp(two):
    """all_reduce and all_gather behave as under DDP."""
    _, ranks = two
    for r in ranks:
        assert r["sum"] == 3.0
        assert r["gathered"] == [[0, 0], [1, 10]]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_as_under_ddp(two, precision):
    """bf16-mixed and 16-mixed (scaler on the CPU) under FSDP: 10 steps end within 1e-5 of DDP's (measured: 2e-7)."""
    _, ranks = two
    for r in ranks:
        ddp, fsdp = r[f"{precision}, ddp"], r[f"{precision}, fsdp"]
        assert_close_lists(fsdp["losses"], ddp["losses"], "losses")
        for name, expected in ddp["final"].items():
            torch.testing.assert_close(fsdp["final"][name], expected, atol=TOLERANCE, rtol=0, msg=name)


@pytest.mark.slow
def test_16_bit_parameters_train_apart_from_ddp_mixed_precision(two):
    """param_dtype=bfloat16 is another format: its weights end over 1e-4 from DDP's bf16-mixed (measured: 2e-3)."""
    _, ranks = two
    for r in ranks:
        ddp, sixteen = r["bf16-mixed, ddp"]["final"], r["param_dtype=bfloat16"]["final"]
        assert max((sixteen[k] - v).abs().max().item() for k, v in ddp.items()) > 10 * TOLERANCE


@pytest.mark.slow
def test_16_mixed_skips_a_step_that_overflowed_on_one_rank_on_every_rank(two):
    """Under 16-mixed, an overflow in rank 0's gradients skips the step and halves the scale on both ranks."""
    _, ranks = two
    expected = {"scale": 2.0**16 / 2, "skipped": True, "stored": "torch.float32"}  # from GradScaler's initial 2**16
    assert [r["16-mixed"] for r in ranks] == [expected, expected]


@pytest.mark.slow
def test_strategy_instance_options_reach_ddp(two):
    """DDPStrategy(find_unused_parameters=True) trains a model with an unused parameter on two processes."""
    _, ranks = two
    for r in ranks:
        losses = r["unused_losses"]
        assert len(losses) == 3
        assert losses[-1] < losses[0]


@pytest.mark.slow
def test_compiled_model_trains_as_eager_under_fsdp(two):
    """model.compile() before setup: FSDP's losses equal the eager run's."""
    _, ranks = two
    for r in ranks:
        assert_close_lists(r["compiled_losses"], r["fsdp"]["losses"][:5], "compiled losses")


#: What ``what_load_left`` finds: the extra tensor came back, and still in the checkpoint file's
#: mapped pages: ``load`` mapped the file (each process of a node then shares its pages in the
#: page cache and reads only those it uses) rather than reading a private copy of it whole.
READ_MAPPED = {"extra": True, "mapped": True}


@pytest.mark.slow
def test_checkpoints_of_two_processes_load_on_one(two):
    """A sharded directory and a full file written by 2 processes load on 1, mapped: model and optimizer exact."""
    out_dir, _ = two
    reference = CheckpointIO().load(out_dir / "two-full.ckpt")
    assert reference["step"] == fsdp_worker.STEPS
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        for name in ("two-sharded.ckpt", "two-full.ckpt"):
            state = fresh(fabric)
            remainder = fabric.load(out_dir / name, state)
            left = fsdp_worker.what_load_left(out_dir / name, remainder)
            assert (state["step"], left) == (fsdp_worker.STEPS, {"remainder": {"note": "2 processes"}, **READ_MAPPED})
            assert_same_state(state, reference)
    with Fabric(accelerator="cpu") as fabric:  # the full file is today's format: no FSDP needed
        state = fresh(fabric)
        fabric.load(out_dir / "two-full.ckpt", state)
        assert_same_state(state, reference)


@pytest.mark.slow
def test_checkpoints_of_one_process_load_on_two(two, one_process_checkpoints):
    """Both formats written by 1 process load on 2, mapped on each: written back in full, they equal the original."""
    out_dir, ranks = two
    original = CheckpointIO().load(one_process_checkpoints / "one-full.ckpt")
    for name in ("one-sharded.ckpt", "one-full.ckpt"):
        assert [r[f"loaded {name}"] for r in ranks] == [{"step": 3, "remainder": {"note": "one"}, **READ_MAPPED}] * 2
        written = CheckpointIO().load(out_dir / f"reloaded-{name}")
        assert list(written["model"]) == list(original["model"])
        assert all(torch.equal(written["model"][k], v) for k, v in original["model"].items())
        assert written["optimizer"]["param_groups"] == original["optimizer"]["param_groups"]
        for index, state in original["optimizer"]["state"].items():
            assert all(torch.equal(written["optimizer"]["state"][index][k], v) for k, v in state.items())


@pytest.mark.slow
def test_checkpoint_layouts(two):
    """A sharded checkpoint is a directory of DCP shards plus a plain state.pt; a full one is today's file."""
    out_dir, _ = two
    directory = out_dir / "two-sharded.ckpt"
    assert sorted(os.listdir(directory)) == [".metadata", "__0_0.distcp", "__1_0.distcp", "state.pt"]
    plain = torch.load(directory / "state.pt", weights_only=True)
    assert plain[RESERVED_KEY]["format_version"] == FORMAT_VERSION
    assert set(plain["model"]) == set(net().state_dict())
    assert set(plain["model"].values()) == {None}  # each tensor is a shard, in the DCP files
    full = torch.load(out_dir / "two-full.ckpt", weights_only=True)
    assert list(full["model"]) == list(net().state_dict())
    assert sorted(full["optimizer"]["state"]) == list(range(len(list(net().parameters()))))
    assert not [p for p in os.listdir(out_dir) if p.startswith(".")]  # no staging left behind


def streams_after_meta_setup(tmp_path: Path, accelerator: str) -> list[dict]:
    """Run the ``streams`` scenario on two processes; return each rank's draws."""
    result = torchrun("streams", tmp_path, accelerator)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_each_rank_keeps_its_random_streams_through_a_meta_device_setup(tmp_path):
    """After a meta-device build and setup the ranks draw different numbers, and without a model-level
    init_weights() FSDP leaves each rank's streams exactly where DDP does."""
    ranks = streams_after_meta_setup(tmp_path, "cpu")
    for r in ranks:
        assert all(torch.equal(r["fsdp, Net"][k], r["ddp, Net"][k]) for k in ("host", "device"))
    for key in ("ddp, Net", "fsdp, Net", "ddp, Drawn", "fsdp, Drawn"):
        for generator in ("host", "device"):
            assert not torch.equal(ranks[0][key][generator], ranks[1][key][generator]), (key, generator)


@pytest.mark.slow
def test_a_crash_mid_save_keeps_the_previous_checkpoint_and_ends_the_job(tmp_path):
    """Rank 1 dies while writing a checkpoint: the job exits non-zero quickly and the old checkpoint loads."""
    start = time.monotonic()
    result = torchrun("crash", tmp_path, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 90, f"the job took {elapsed:.0f} s to end after a rank died"
    assert [p.name for p in tmp_path.glob(".c.ckpt.saving-*")]  # the interrupted save's staging
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        state = fresh(fabric)
        fabric.load(tmp_path / "c.ckpt", state)
        assert state["step"] == 1
        fabric.save(tmp_path / "c.ckpt", {**state, "step": 3})  # the next save clears the leftovers
    assert sorted(os.listdir(tmp_path)) == ["c.ckpt"]


# -- one process: options and setup ----------------------------------------------------------------


def test_strategy_options_are_checked():
    """Bad FSDPStrategy and DDPStrategy options raise errors naming the option and what is allowed."""
    with pytest.raises(ValueError, match=r"state_dict_type='torn' is not one of 'sharded', 'full'"):
        FSDPStrategy(state_dict_type="torn")
    with pytest.raises(TypeError, match=r"wrap_policy='Block' is not None, nn.Module classes"):
        FSDPStrategy(wrap_policy="Block")
    with pytest.raises(TypeError, match=r"wrap_policy=\[<class 'int'>\] is not None"):
        FSDPStrategy(wrap_policy=[int])
    with pytest.raises(TypeError, match="DistributedDataParallel takes no argument 'find_unused'; it takes"):
        DDPStrategy(find_unused=True)
    with pytest.raises(TypeError, match="device_ids is set by the strategy"):
        DDPStrategy(device_ids=[0])
    with pytest.raises(TypeError, match=r"timeout=30 must be a datetime.timedelta"):
        DDPStrategy(timeout=30)
    with pytest.raises(ValueError, match=r"cpu_offload=True\) needs accelerator='cuda', not 'cpu'"):
        Fabric(accelerator="cpu", strategy=FSDPStrategy(cpu_offload=True))
    with pytest.raises(ValueError, match=r"param_dtype=torch.float32 is not None, torch.bfloat16 or torch.float16"):
        FSDPStrategy(param_dtype=torch.float32)
    with pytest.raises(ValueError, match=r"param_dtype='fp16' is not None, .* \(or their names 'bfloat16', 'float16'"):
        FSDPStrategy(param_dtype="fp16")
    with pytest.raises(ValueError, match=r"param_dtype=torch.bfloat16\) gathers .* precision='bf16-true' stores"):
        Fabric(accelerator="cpu", strategy=FSDPStrategy(param_dtype=torch.bfloat16), precision="bf16-true")


def test_a_strategy_instance_serves_one_fabric():
    """A strategy instance is connected to one Fabric; giving it to a second is an error, not a silent share."""
    strategy = DDPStrategy(find_unused_parameters=True)
    assert repr(strategy) == "DDPStrategy()"
    with Fabric(accelerator="cpu", strategy=strategy) as fabric:
        assert fabric.strategy is strategy
        assert fabric.flags.strategy == "ddp"
        model = fabric.setup(torch.nn.Linear(2, 1))
        assert model._forward_module.find_unused_parameters
        with pytest.raises(RuntimeError, match="already belongs to a Fabric; create a new one"):
            Fabric(accelerator="cpu", strategy=strategy)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_collective_waiting_on_a_hung_peer_fails_after_the_strategys_timeout(strategy, tmp_path):
    """With timeout=2 s, an all_reduce that the other process never joins raises after about 2 s, not the
    default 30 minutes: the strategy's timeout is the process group's."""
    worker = Path(__file__).with_name("timeout_worker.py")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = run_bounded([*command, str(worker), strategy, "2", str(tmp_path)], 180, env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "rank0.json").read_text(encoding="utf-8"))
    assert report["error"] is not None, "the all_reduce returned although rank 1 never joined it"
    assert "timed out" in report["error"].lower() or "timeout" in report["error"].lower(), report["error"]
    assert 1.9 <= report["seconds"] < 15, report


def test_wrap_policies_choose_the_units():
    """The default makes each block of the outermost ModuleLists a unit; classes and functions choose otherwise."""

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(2))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(2, 2)
            self.blocks = torch.nn.ModuleList([Inner(), Inner(), torch.nn.Dropout()])  # Dropout: no parameters

    model = Model()
    assert _units(model, None) == [model.blocks[0], model.blocks[1]]
    assert _units(model, (Inner,)) == [model.blocks[0], model.blocks[1]]
    assert _units(model, (torch.nn.Linear,)) == [model.embed, *model.blocks[0].heads, *model.blocks[1].heads]
    assert _units(model, lambda m: m is model.embed) == [model.embed]
    assert FSDPStrategy(wrap_policy=Inner).wrap_policy == (Inner,)


def test_the_optimizer_built_before_setup_steps_the_shards():
    """An optimizer made from the unsharded model is pointed at the DTensor shards by setup."""
    from torch.distributed.tensor import DTensor

    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        model = net()
        optimizer = torch.optim.SGD([{"params": model.inp.parameters()}, {"params": model.head.parameters()}], lr=0.1)
        model, optimizer = fabric.setup(model, optimizer)
        held = [p for group in optimizer.param_groups for p in group["params"]]
        assert all(isinstance(p, DTensor) for p in held)
        assert [id(p) for p in held] == [id(p) for p in [*model.inp.parameters(), *model.head.parameters()]]
        before = model.head.weight.full_tensor().clone()
        fabric.backward(model(torch.randn(2, fsdp_worker.FEATURES)).sum())
        optimizer.step()
        assert not torch.equal(model.head.weight.full_tensor(), before)
        assert torch.equal(model.blocks[0].linear.weight.full_tensor(), net().blocks[0].linear.weight)  # not in it


def test_an_optimizer_that_already_stepped_is_refused():
    """An optimizer with state for parameters that sharding replaces raises, naming the rule."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        model = net()
        optimizer = torch.optim.Adam(model.parameters())
        model(torch.randn(2, fsdp_worker.FEATURES)).sum().backward()
        optimizer.step()
        with pytest.raises(ValueError, match=r"optimizer 0 has state for parameter 'inp.weight', which setup\(\) "):
            fabric.setup(model, optimizer)


def test_setup_optimizers_wraps_an_optimizer_made_after_setup(tmp_path):
    """An optimizer built from the set-up model's parameters goes through setup_optimizers and checkpoints."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        model = fabric.setup(net())
        optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=0.01))
        fabric.backward(model(torch.randn(2, fsdp_worker.FEATURES)).sum())
        optimizer.step()
        fabric.save(tmp_path / "a.ckpt", {"model": model, "optimizer": optimizer})
        state = fresh(fabric)
        fabric.load(tmp_path / "a.ckpt", state, strict=False)
        assert torch.equal(state["optimizer"].state_dict()["state"][0]["step"], torch.tensor(1.0))
        with pytest.raises(TypeError, match="setup_optimizers\\(\\): optimizer 0 was already set up"):
            fabric.setup_optimizers(optimizer)
        with pytest.raises(TypeError, match="needs at least one optimizer"):
            fabric.setup_optimizers()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_dropped_window_leaves_no_gradient_behind(set_to_none):
    """zero_grad after backwards under no_backward_sync: the next window's gradients equal those without FSDP."""
    gradients = {}
    for strategy in ("single", "fsdp"):
        with Fabric(accelerator="cpu", strategy=strategy) as fabric:
            gradients[strategy] = fsdp_worker.gradients_after_a_skipped_window(fabric, set_to_none)
    assert list(gradients["fsdp"]) == list(gradients["single"])
    for name, expected in gradients["single"].items():
        torch.testing.assert_close(gradients["fsdp"][name], expected, rtol=1e-5, atol=1e-5, msg=name)


F32, BF16, F16 = "torch.float32", "torch.bfloat16", "torch.float16"


@pytest.mark.parametrize(("precision", "autocast"), [("bf16-mixed", BF16), ("16-mixed", F16)])
def test_mixed_precision_keeps_float32_parameters_and_residual_stream(precision, autocast):
    """'-mixed' under FSDP: embedding and residual stream float32, autocast regions 16-bit, as without FSDP."""
    dtypes = {}
    for strategy in ("single", "fsdp"):
        with Fabric(accelerator="cpu", strategy=strategy, precision=precision) as fabric:
            dtypes[strategy] = fsdp_worker.activation_dtypes(fabric)
    expected = {"embedding": F32, "residual 0": F32, "residual 1": F32, "linear": autocast, "weight": F32,
                "stored": F32, "loss": F32, "finite": True}  # fmt: skip
    assert dtypes["fsdp"] == dtypes["single"] == expected


@pytest.mark.parametrize(
    ("precision", "param_dtype", "half"),
    [("32-true", torch.bfloat16, BF16), ("bf16-mixed", "bfloat16", BF16), ("16-mixed", torch.float16, F16)],
)
def test_param_dtype_gathers_float32_shards_in_16_bits(precision, param_dtype, half):
    """FSDPStrategy(param_dtype=...): units compute with 16-bit parameters over float32 shards; the loss is float32."""
    with Fabric(accelerator="cpu", strategy=FSDPStrategy(param_dtype=param_dtype), precision=precision) as fabric:
        dtypes = fsdp_worker.activation_dtypes(fabric)
    assert dtypes == {"embedding": half, "residual 0": half, "residual 1": half, "linear": half, "weight": half,
                      "stored": F32, "loss": F32, "finite": True}  # fmt: skip


def test_bf16_true_stores_bfloat16_shards():
    """bf16-true under FSDP: the shards themselves are bfloat16, as the parameters are without FSDP."""
    with Fabric(accelerator="cpu", strategy="fsdp", precision="bf16-true") as fabric:
        dtypes = fsdp_worker.activation_dtypes(fabric)
    assert {k: v for k, v in dtypes.items() if k != "loss"} == {
        "embedding": BF16, "residual 0": BF16, "residual 1": BF16, "linear": BF16, "weight": BF16,
        "stored": BF16, "finite": True}  # fmt: skip
    assert dtypes["loss"] == F32


# -- one process: building on the meta device --------------------------------------------------------


def test_init_module_builds_where_the_strategy_wants():
    """init_module builds on the device by default, on the meta device with empty_init=True (the FSDP default)."""
    with Fabric(accelerator="cpu") as fabric:
        with fabric.init_module():
            assert torch.nn.Linear(2, 2).weight.device.type == "cpu"
        with fabric.init_module(empty_init=True):
            assert torch.nn.Linear(2, 2).weight.is_meta
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        with fabric.init_module():
            assert torch.nn.Linear(2, 2).weight.is_meta
        with fabric.init_module(empty_init=False):
            assert not torch.nn.Linear(2, 2).weight.is_meta


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_a_meta_device_build_starts_from_the_eager_weights(strategy):
    """Built on the meta device and materialised by setup, the model has the eager build's weights."""
    eager = net().state_dict()
    with Fabric(accelerator="cpu", strategy=strategy) as fabric:
        torch.manual_seed(0)
        with fabric.init_module(empty_init=True):
            model = Net()
        optimizer = fsdp_worker.optimizer_for(model)
        model, optimizer = fabric.setup(model, optimizer)
        weights = whole(model.state_dict())
        assert all(torch.equal(weights[k], eager[k]) for k in eager)
        assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in model.parameters()]


class Tied(torch.nn.Module):
    """A language-model shape: the output layer shares the embedding's weight, and a buffer is derived."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.out = torch.nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("scale", torch.full((3,), 2.0))
        self.init_weights()

    def init_weights(self) -> None:
        torch.nn.init.normal_(self.embed.weight, std=0.02)
        self.scale.fill_(2.0)


def test_tied_weights_stay_tied_and_init_weights_runs_last():
    """Materialising keeps shared parameters shared, and the model's init_weights() runs after reset_parameters()."""
    torch.manual_seed(0)
    eager = Tied()
    with Fabric(accelerator="cpu") as fabric:
        torch.manual_seed(0)
        with fabric.init_module(empty_init=True):
            model = Tied()
        model = fabric.setup(model)
        assert model.out.weight is model.embed.weight
        assert torch.equal(model.embed.weight, eager.embed.weight)
        assert torch.equal(model.scale, eager.scale)


def test_a_module_that_cannot_be_initialised_is_named():
    """A meta-device module without reset_parameters(), in a model without init_weights(), is refused by name."""

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(3))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 3)
            self.scaled = Scaled()

    with Fabric(accelerator="cpu") as fabric:
        with fabric.init_module(empty_init=True):
            model = Model()
        with pytest.raises(TypeError, match=r"scaled \(.*Scaled\) holds parameters or buffers but has no reset_param"):
            fabric.setup(model)
        assert model.linear.weight.is_meta  # nothing was allocated


# -- one process: checkpoints -------------------------------------------------------------------------


def trained_state(fabric: Fabric) -> dict:
    trained = fsdp_worker.train(fabric, steps=2)
    return {"model": trained["model"], "optimizer": trained["optimizer"], "step": 2}


def test_sharded_checkpoint_round_trip_in_one_process(tmp_path):
    """A sharded save loads back exactly, and replaces a full file at the same path (and the other way)."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        state = trained_state(fabric)
        path = tmp_path / "last.ckpt"
        fabric.strategy.state_dict_type = "full"
        fabric.save(path, state)
        assert path.is_file()
        reference = CheckpointIO().load(path)
        fabric.strategy.state_dict_type = "sharded"
        fabric.save(path, state)
        assert path.is_dir()
        loaded = fresh(fabric)
        fabric.load(path, loaded)
        assert_same_state(loaded, reference)
        fabric.strategy.state_dict_type = "full"
        fabric.save(path, state)
        assert path.is_file()
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


def test_a_sharded_load_into_another_model_is_strict_unless_told(tmp_path):
    """Shards loaded into a model with more blocks: the missing keys are named, or with strict=False skipped."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        model = fabric.setup(net())
        fabric.save(tmp_path / "a.ckpt", {"model": model})
        torch.manual_seed(5)
        deeper = fabric.setup(Net(blocks=4))
        with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"blocks\.3\.norm\.weight\""):
            fabric.load(tmp_path / "a.ckpt", {"model": deeper})
        fabric.load(tmp_path / "a.ckpt", {"model": deeper}, strict=False)
        saved, loaded = whole(model.state_dict()), whole(deeper.state_dict())
        assert all(torch.equal(loaded[k], v) for k, v in saved.items())
        torch.manual_seed(5)
        assert torch.equal(loaded["blocks.3.linear.weight"], Net(blocks=4).blocks[3].linear.weight)  # kept


def test_a_crash_between_the_renames_loads_the_new_checkpoint(tmp_path, monkeypatch):
    """Killed after moving the old directory aside: load finds the new one, and the next save finishes the move."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        state = trained_state(fabric)
        path = tmp_path / "last.ckpt"
        fabric.save(path, {**state, "step": 1})
        real_replace = os.replace

        def crash_before_the_new_one_moves_in(src, dst):
            if Path(src).name.startswith(".last.ckpt.saving-") and Path(dst) == path:
                raise KeyboardInterrupt("killed between the renames")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", crash_before_the_new_one_moves_in)
        with pytest.raises(KeyboardInterrupt):
            fabric.save(path, {**state, "step": 2})
        monkeypatch.setattr(os, "replace", real_replace)
        assert [p.name.split("-")[0] for p in sorted(tmp_path.iterdir())] == [
            ".last.ckpt.replaced",
            ".last.ckpt.saving",
        ]
        assert not path.exists()
        loaded = fresh(fabric)
        fabric.load(path, loaded)
        assert loaded["step"] == 2
        fabric.save(path, {**state, "step": 3})
        assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]
        fabric.load(path, loaded)
        assert loaded["step"] == 3


@pytest.mark.parametrize(
    ("before", "after"), [("fsdp", "single"), ("single", "fsdp"), ("fsdp", "ddp"), ("ddp", "fsdp")]
)
def test_a_change_of_strategy_replaces_the_other_kind_of_checkpoint(tmp_path, before, after):
    """A one-file save replaces a sharded directory at the same path, and the other way; the new one loads."""
    path = tmp_path / "last.ckpt"
    with Fabric(accelerator="cpu", strategy=before) as fabric:
        fabric.save(path, {**trained_state(fabric), "step": 1})
    assert path.is_dir() == (before == "fsdp")
    with Fabric(accelerator="cpu", strategy=after) as fabric:
        state = trained_state(fabric)
        fabric.save(path, state)
        assert path.is_dir() == (after == "fsdp")
        loaded = fresh(fabric)
        fabric.load(path, loaded)
        assert loaded["step"] == 2
        saved, got = whole(state["model"].state_dict()), whole(loaded["model"].state_dict())
        assert all(torch.equal(got[k], v) for k, v in saved.items())
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


@pytest.mark.parametrize(("before", "after"), [("fsdp", "single"), ("single", "fsdp")])
def test_a_change_of_strategy_replaces_the_checkpoint_atomically(tmp_path, monkeypatch, before, after):
    """Killed before the new kind of checkpoint is whole, the old one loads; killed between the renames, the new one."""
    path = tmp_path / "last.ckpt"
    real_replace = os.replace

    def kill_at(condition):
        def replace(src, dst):
            if condition(Path(src), Path(dst)):
                raise KeyboardInterrupt("killed")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)

    with Fabric(accelerator="cpu", strategy=before) as fabric:
        fabric.save(path, {**trained_state(fabric), "step": 1})
    with Fabric(accelerator="cpu", strategy=after) as fabric:
        # The last piece of the new checkpoint: the staged file, or a directory's state.pt.
        kill_at(lambda src, dst: dst.name.startswith(".last.ckpt.saving-") or dst.name == sharded.STATE_FILE)
        with pytest.raises(KeyboardInterrupt):
            fabric.save(path, {**trained_state(fabric), "step": 2})
        monkeypatch.setattr(os, "replace", real_replace)
    with Fabric(accelerator="cpu", strategy=before) as fabric:
        loaded = fresh(fabric)
        fabric.load(path, loaded)
        assert loaded["step"] == 1
    with Fabric(accelerator="cpu", strategy=after) as fabric:
        state = trained_state(fabric)
        kill_at(lambda src, dst: src.name.startswith(".last.ckpt.saving-") and dst == path)
        with pytest.raises(KeyboardInterrupt):
            fabric.save(path, {**state, "step": 3})
        monkeypatch.setattr(os, "replace", real_replace)
        assert not path.exists()
        loaded = fresh(fabric)
        fabric.load(path, loaded)
        assert loaded["step"] == 3
        fabric.save(path, {**state, "step": 4})  # finishes the move and clears what the kills left
        assert path.is_dir() == (after == "fsdp")
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]


class Boom:
    """Pickles to a call that would create a file: the proof that unpickling ran code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_sharded_metadata_with_code_is_refused_unrun(tmp_path):
    """A checkpoint directory whose DCP metadata pickles a callable is refused, and the callable never runs."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        state = trained_state(fabric)
        path = tmp_path / "last.ckpt"
        fabric.save(path, state)
        ran = tmp_path / "ran"
        (path / ".metadata").write_bytes(pickle.dumps(Boom(ran)))
        with pytest.raises(ValueError, match=r"refusing to load .*\.metadata.*pathlib\.Path\.touch is not part of"):
            fabric.load(path, fresh(fabric))
        assert not ran.exists()


def test_a_directory_that_is_not_a_checkpoint_is_named(tmp_path):
    """Loading a directory without the checkpoint's files says what is missing."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        with pytest.raises(ValueError, match=r"is a directory but not a sharded checkpoint: it lacks state\.pt"):
            fabric.load(tmp_path, {})
        with pytest.raises(FileNotFoundError, match="does not exist"):
            fabric.load(tmp_path / "nothing.ckpt", {})


def test_a_sharded_checkpoint_without_fsdp_says_how_to_load_it(tmp_path):
    """Loading a checkpoint directory without FSDP is refused with the way to load it."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        fabric.save(tmp_path / "a.ckpt", {"step": 1})
    with pytest.raises(ValueError, match=r"is a directory, a sharded checkpoint written under FSDP; load it with "):
        Fabric(accelerator="cpu").load(tmp_path / "a.ckpt")


def test_a_sharded_checkpoint_of_another_format_version_is_refused_before_its_shards_are_read(tmp_path):
    """A directory whose state.pt has another format version is refused with both versions named."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        state = trained_state(fabric)
        fabric.save(tmp_path / "a.ckpt", state)
        plain = CheckpointIO().load(tmp_path / "a.ckpt" / "state.pt")
        plain[RESERVED_KEY]["format_version"] = FORMAT_VERSION + 1
        CheckpointIO().save(plain, tmp_path / "a.ckpt" / "state.pt")
        (tmp_path / "a.ckpt" / "__0_0.distcp").write_bytes(b"not read")
        with pytest.raises(ValueError, match=f"has checkpoint format version {FORMAT_VERSION + 1}, but trainwright"):
            fabric.load(tmp_path / "a.ckpt", fresh(fabric))


def test_split_and_insert_are_inverse():
    """DTensor leaves leave the plain part as None and come back at the same places, int and str keys apart."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        model = fabric.setup(net())
        shard = next(model.parameters())
        checkpoint = {"a": {0: shard, "0": 1, "x": [2, shard]}, "b": torch.ones(2)}
        skeleton, tensors = sharded.split_dtensors(checkpoint)
        assert skeleton == {"a": {0: None, "0": 1, "x": [2, None]}, "b": checkpoint["b"]}
        assert sorted(tensors) == ['["a", "x", 1]', '["a", 0]']
        assert sharded.insert_tensors(skeleton, tensors)["a"][0] is shard


# -- one process: torch.compile -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_a_compiled_model_sets_up_under_every_strategy(strategy, tmp_path):
    """torch.compile(model) and model.compile() both set up; checkpoint keys never carry _orig_mod, and a
    checkpoint loads back into the compiled model."""
    keys = list(net().state_dict())
    for in_place in (False, True):
        torch._dynamo.reset()
        with Fabric(accelerator="cpu", strategy=strategy) as fabric:
            model = net()
            if in_place:
                model.compile(backend="eager")
                compiled = model
            else:
                compiled = torch.compile(model, backend="eager")
            wrapped, optimizer = fabric.setup(compiled, fsdp_worker.optimizer_for(model))
            assert wrapped.module is model
            forward = wrapped._forward_module
            if in_place:
                assert type(forward).__name__ in {"Net", "FSDPNet", "DistributedDataParallel"}
            else:
                assert type(forward).__name__ == "OptimizedModule"
                inner = forward._orig_mod
                assert inner is model if strategy != "ddp" else type(inner).__name__ == "DistributedDataParallel"
            fabric.backward(wrapped(torch.randn(4, fsdp_worker.FEATURES)).pow(2).mean())
            optimizer.step()
            assert list(wrapped.state_dict()) == keys
            saved = {k: v.clone() for k, v in whole(wrapped.state_dict()).items()}
            fabric.save(tmp_path / f"{strategy}-{in_place}.ckpt", {"model": wrapped})
            with torch.no_grad():
                for parameter in wrapped.parameters():
                    parameter.add_(1.0)  # so that a load that restores nothing cannot pass
            fabric.load(tmp_path / f"{strategy}-{in_place}.ckpt", {"model": wrapped})
            loaded = whole(wrapped.state_dict())
            assert all(torch.equal(loaded[k], v) for k, v in saved.items()), (strategy, in_place)
    torch._dynamo.reset()


def test_fsdp_leaves_no_process_group_behind():
    """A Fabric with FSDP that made its own group of one tears it down."""
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        fabric.setup(Block())
        assert dist.is_initialized()
    assert not dist.is_initialized()
