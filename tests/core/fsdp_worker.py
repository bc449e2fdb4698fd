"""One worker of the multi-process FSDP tests; ``torchrun`` starts several copies of it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 fsdp_worker.py SCENARIO OUT_DIR [IN_DIR]

The worker joins one process group itself, before any ``Fabric``: every ``Fabric`` of the job
then uses it and leaves it alone, so that several runs (DDP, FSDP, ...) share one launch.
(Destroying a group and creating a new one under the same torchrun job can hang: the new one
finds the old one's keys in torchrun's store.)

Scenarios:
    train   DDP and FSDP runs of the same 20 steps, FSDP with accumulation, built on the meta
            device, compiled, and in bf16; checkpoints saved in both formats; the checkpoints in
            IN_DIR (written by one process) loaded and written again in full; bf16-mixed and
            16-mixed under DDP and FSDP; a 16-mixed overflow on one rank. Each rank writes
            what it saw to OUT_DIR/rank<r>.pt.
    crash   saves a sharded checkpoint, then rank 1 dies in the middle of saving the next one
            (this scenario's one Fabric makes the process group itself).
    streams each rank's random draws after a meta-device build and setup (IN_DIR is the
            accelerator instead: cpu or cuda).
"""

from __future__ import annotations

import math
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from trainwright import Fabric
from trainwright.strategies import DDPStrategy, FSDPStrategy

PER_RANK_BATCH = 8
STEPS = 20
FEATURES, HIDDEN = 6, 33  # 33: the sharded dimension does not divide by 2, so FSDP pads


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(HIDDEN)
        self.linear = torch.nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(self.norm(x)))


class Net(torch.nn.Module):
    """A transformer-shaped MLP: an input layer, a ModuleList of blocks, a head."""

    def __init__(self, blocks: int = 3) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(FEATURES, HIDDEN)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(blocks))
        self.head = torch.nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def net() -> Net:
    torch.manual_seed(0)
    return Net()


def data(world_size: int = 2) -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS * world_size * PER_RANK_BATCH, FEATURES, generator=generator)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).sin())


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole tensors on every rank (gathered from the shards under FSDP)."""
    return {
        name: (value.full_tensor() if hasattr(value, "full_tensor") else value).detach().clone()
        for name, value in model.state_dict().items()
    }


def train(
    fabric: Fabric,
    *,
    empty_init: bool = False,
    accumulate: int = 1,
    steps: int = STEPS,
    compile_model: bool = False,
    norm_type: float = 2.0,
) -> dict:
    """``steps`` AdamW steps with clipping; returns per-step losses and norms and the weights before and after."""
    if empty_init:
        torch.manual_seed(0)
        with fabric.init_module(empty_init=True):
            model = Net()
    else:
        model = net()
    optimizer = optimizer_for(model)  # before setup: setup points it at the sharded parameters
    if compile_model:
        model.compile(backend="aot_eager")
    model, optimizer = fabric.setup(model, optimizer)
    initial = full_weights(model)
    loader = fabric.setup_dataloaders(DataLoader(data(), batch_size=PER_RANK_BATCH))
    losses, norms, unsynced_grads = [], [], None
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        for i, (xs, ys) in enumerate(zip(x.chunk(accumulate), y.chunk(accumulate), strict=True)):
            with fabric.no_backward_sync(model, enabled=i < accumulate - 1):  # sync on the last micro-batch only
                loss = torch.nn.functional.mse_loss(model(xs), ys)
                fabric.backward(loss / accumulate)
            if step == 0 and i == 0:  # unsynced, FSDP keeps the gradient unsharded, off the parameters
                unsynced_grads = sum(p.grad is not None for p in model.parameters())
        norms.append(fabric.clip_gradients(model, optimizer, max_norm=0.5, norm_type=norm_type).item())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"model": model, "optimizer": optimizer, "initial": initial, "final": full_weights(model),
            "losses": losses, "norms": norms, "unsynced_grads": unsynced_grads}  # fmt: skip


def gradients_after_a_skipped_window(fabric: Fabric, set_to_none: bool = True) -> dict[str, torch.Tensor]:
    """Two backward passes under no_backward_sync whose window is dropped (zero_grad, no step), then a
    window of two: the whole gradients that window's step would apply."""
    model = net()
    model, optimizer = fabric.setup(model, optimizer_for(model))
    generator = torch.Generator().manual_seed(7 + fabric.global_rank)
    batches = [10 * torch.randn(4, FEATURES, generator=generator) for _ in range(4)]
    for x in batches[:2]:  # the dropped window never reaches its synchronising backward
        with fabric.no_backward_sync(model):
            fabric.backward(model(x).pow(2).mean())
    optimizer.zero_grad(set_to_none=set_to_none)
    for i, x in enumerate(batches[2:]):
        with fabric.no_backward_sync(model, enabled=i == 0):
            fabric.backward(model(x).pow(2).mean())
    return {
        name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
        for name, p in model.module.named_parameters()
    }


VOCAB = 11


class Tokens(torch.nn.Module):
    """A language-model shape: an embedding, residual blocks (one FSDP unit each), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(2))
        self.head = torch.nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def activation_dtypes(fabric: Fabric) -> dict:
    """The dtypes of one training step: the embedding's output, the residual stream after each block,
    a block's linear layer (an autocast region) and its weight as its forward pass sees it, the
    stored shards, the loss."""
    torch.manual_seed(0)
    model = Tokens()
    model, optimizer = fabric.setup(model, optimizer_for(model))
    seen: dict = {}

    def record(name: str):
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:  # None: output unchanged
            seen.setdefault(name, str(output.dtype))

        return hook

    inner = model.module
    inner.embed.register_forward_hook(record("embedding"))
    for index, block in enumerate(inner.blocks):
        block.register_forward_hook(record(f"residual {index}"))
    linear = inner.blocks[0].linear
    linear.register_forward_hook(record("linear"))
    # Inside a unit's forward its gathered parameters are registered, in the type FSDP gathered them in.
    linear.register_forward_pre_hook(lambda module, args: seen.setdefault("weight", str(module.weight.dtype)) and None)
    tokens = torch.randint(0, VOCAB, (20,))
    loss = torch.nn.functional.cross_entropy(model(tokens), tokens)
    fabric.backward(loss)
    optimizer.step()
    stored = next(model.parameters()).dtype
    return {**seen, "stored": str(stored), "loss": str(loss.dtype), "finite": bool(torch.isfinite(loss))}


def overflow_on_rank_zero(fabric: Fabric) -> dict:
    """A 16-mixed step whose gradients overflow on rank 0 only: every rank must skip it and lower the scale."""
    model = net()
    model, optimizer = fabric.setup(model, optimizer_for(model))
    before = full_weights(model)
    x = torch.randn(8, FEATURES)
    if fabric.global_rank == 0:
        x[0, 0] = float("inf")
    fabric.backward(model(x).pow(2).mean())
    optimizer.step()
    optimizer.zero_grad()
    fabric.backward(model(torch.randn(8, FEATURES)).pow(2).mean())  # the scale is updated at the next backward
    after = full_weights(model)
    return {
        "scale": fabric.precision.scaler.get_scale(),
        "skipped": all(torch.equal(before[k], after[k]) for k in before),
        "stored": str(model.inp.weight.dtype),
    }


class Unused(torch.nn.Module):
    """A model with a parameter that the forward pass never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(4, 1)
        self.unused = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def unused_parameters(fabric: Fabric) -> list[float]:
    torch.manual_seed(0)
    model = Unused()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    losses = []
    for _ in range(3):
        loss = model(torch.ones(2, 4)).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


#: A tensor that checkpoints carry besides the model: it comes back in what ``load`` leaves over.
EXTRA = torch.arange(4096.0)


def checkpoint_state(trained: dict) -> dict:
    model, optimizer = trained["model"], trained["optimizer"]
    note = f"{dist.get_world_size()} processes"
    return {"model": model, "optimizer": optimizer, "step": STEPS, "note": note, "extra": EXTRA}


def mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether ``tensor``'s memory lies in a memory map of the file at ``path`` (from Linux's /proc/self/maps)."""
    name = str(path.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == name:
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            if start <= tensor.data_ptr() < end:
                return True
    return False


def what_load_left(path: Path, remainder: dict) -> dict:
    """``load``'s remainder, with its tensor checked and whether it is still the file's mapped pages."""
    file = path / "state.pt" if path.is_dir() else path  # a sharded checkpoint's plain part is its state.pt
    extra = remainder.pop("extra")
    return {"remainder": remainder, "extra": torch.equal(extra, EXTRA), "mapped": mapped_from(extra, file)}


def fresh_state(fabric: Fabric) -> dict:
    torch.manual_seed(123)  # other weights than the saved ones, so that a load that does nothing shows
    model = Net()
    model, optimizer = fabric.setup(model, optimizer_for(model))
    return {"model": model, "optimizer": optimizer, "step": 0}


def scenario_train(out_dir: Path, in_dir: Path) -> dict:
    rank = dist.get_rank()
    result: dict = {}
    with Fabric(accelerator="cpu", strategy="ddp") as fabric:
        ddp = train(fabric)
        result["ddp"] = {k: ddp[k] for k in ("initial", "final", "losses", "norms")}
        result["ddp_meta_initial"] = train(fabric, empty_init=True, steps=0)["initial"]
        result["skipped window, ddp"] = gradients_after_a_skipped_window(fabric)
    with Fabric(accelerator="cpu", strategy=DDPStrategy(find_unused_parameters=True)) as fabric:
        result["unused_losses"] = unused_parameters(fabric)
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        fsdp = train(fabric)
        result["fsdp"] = {k: fsdp[k] for k in ("initial", "final", "losses", "norms")}
        result["fsdp_type"] = type(fsdp["model"].module).__name__
        result["param_type"] = type(next(fsdp["model"].parameters())).__name__
        result["local_numel"] = sum(p.to_local().numel() for p in fsdp["model"].parameters())
        result["sum"] = fabric.all_reduce(torch.tensor([rank + 1.0]), op="sum").item()
        result["gathered"] = fabric.all_gather(torch.tensor([rank, 10 * rank])).tolist()
        result["skipped window, fsdp"] = gradients_after_a_skipped_window(fabric)
        fabric.save(out_dir / "two-sharded.ckpt", checkpoint_state(fsdp))
        # The same strategy object writes the other format too.
        fabric.strategy.state_dict_type = "full"
        fabric.save(out_dir / "two-full.ckpt", checkpoint_state(fsdp))
        fabric.strategy.state_dict_type = "sharded"
        for name in ("one-sharded.ckpt", "one-full.ckpt"):  # written by one process
            state = fresh_state(fabric)
            remainder = fabric.load(in_dir / name, state)
            result[f"loaded {name}"] = {"step": state["step"], **what_load_left(in_dir / name, remainder)}
            fabric.strategy.state_dict_type = "full"
            fabric.save(out_dir / f"reloaded-{name}", state)
            fabric.strategy.state_dict_type = "sharded"
    policy = FSDPStrategy(wrap_policy={Block}, reshard_after_forward=False)
    with Fabric(accelerator="cpu", strategy=policy) as fabric:
        accumulated = train(fabric, accumulate=2)
        result["accumulated"] = {k: accumulated[k] for k in ("final", "losses", "unsynced_grads")}
    with Fabric(accelerator="cpu", strategy="fsdp") as fabric:
        # Seeded differently on each rank: the shards must still come from rank 0's weights.
        for empty_init in (False, True):
            torch.manual_seed(rank)
            with fabric.init_module(empty_init=empty_init):
                model = Net()
            result[f"rank-seeded initial, empty_init={empty_init}"] = full_weights(fabric.setup(model))
        meta = train(fabric, empty_init=True)
        result["fsdp_meta"] = {k: meta[k] for k in ("initial", "final", "losses")}
        result["compiled_losses"] = train(fabric, compile_model=True, steps=5)["losses"]
    for precision in ("bf16-mixed", "16-mixed"):  # the same autocast numerics under both strategies
        for strategy in ("ddp", "fsdp"):
            with Fabric(accelerator="cpu", strategy=strategy, precision=precision) as fabric:
                trained = train(fabric, steps=10)
                result[f"{precision}, {strategy}"] = {k: trained[k] for k in ("final", "losses", "norms")}
    for strategy in ("ddp", "fsdp"):  # the largest gradient entry over every process's shards
        with Fabric(accelerator="cpu", strategy=strategy) as fabric:
            trained = train(fabric, steps=5, norm_type=math.inf)
            result[f"inf-norm, {strategy}"] = {k: trained[k] for k in ("final", "norms")}
    with Fabric(accelerator="cpu", strategy=FSDPStrategy(param_dtype=torch.bfloat16)) as fabric:
        trained = train(fabric, steps=10)
        result["param_dtype=bfloat16"] = {k: trained[k] for k in ("final", "losses")}
    with Fabric(accelerator="cpu", strategy="fsdp", precision="16-mixed") as fabric:
        result["16-mixed"] = overflow_on_rank_zero(fabric)
    return result


def scenario_crash(out_dir: Path) -> None:
    """Save once, then lose rank 1 while the next save is being written.

    The job's only Fabric makes the process group, with the strategy's timeout: should
    torchrun fail to stop rank 0, its wait for rank 1 ends within a minute anyway.
    """
    import torch.distributed.checkpoint as dcp

    with Fabric(accelerator="cpu", strategy=FSDPStrategy(timeout=timedelta(seconds=60))) as fabric:
        model = net()
        model, optimizer = fabric.setup(model, optimizer_for(model))
        fabric.save(out_dir / "c.ckpt", {"model": model, "optimizer": optimizer, "step": 1})
        if fabric.global_rank == 1:

            def die(*args, **kwargs):
                os._exit(3)  # a hard crash: no exception, no cleanup

            dcp.FileSystemWriter.write_data = die
        fabric.save(out_dir / "c.ckpt", {"model": model, "optimizer": optimizer, "step": 2})


class Drawn(Net):
    """Net with a model-level init_weights(), which under FSDP draws into the sharded parameters."""

    def init_weights(self) -> None:
        for parameter in self.parameters():
            torch.nn.init.normal_(parameter, std=0.02)


def draws_after_a_meta_device_setup(fabric: Fabric, model_cls: type[torch.nn.Module]) -> dict:
    """Seed each rank, build on the meta device and set up; then draw from the host and the device generator."""
    fabric.seed_everything(5)
    with fabric.init_module(empty_init=True):
        model = model_cls()
    fabric.setup(model)
    return {"host": torch.rand(4), "device": torch.rand(4, device=fabric.device).cpu()}


def scenario_streams(accelerator: str) -> dict:
    """Each rank's random draws after a meta-device build and setup, under DDP and FSDP on the CPU,
    under FSDP on CUDA (both processes on GPU 0, over gloo: nccl refuses two ranks on one GPU)."""
    strategies = ("ddp", "fsdp") if accelerator == "cpu" else ("fsdp",)
    result = {}
    for strategy in strategies:
        with Fabric(accelerator=accelerator, devices=1, strategy=strategy) as fabric:
            for model_cls in (Net, Drawn):
                result[f"{strategy}, {model_cls.__name__}"] = draws_after_a_meta_device_setup(fabric, model_cls)
    return result


def main(scenario: str, out_dir: Path, argument: str | None) -> None:
    if scenario == "crash":
        scenario_crash(out_dir)
        return
    if argument == "cuda":
        os.environ.update(LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")  # every process on GPU 0 (see scenario_streams)
    dist.init_process_group("gloo")
    try:
        result = scenario_streams(argument) if scenario == "streams" else scenario_train(out_dir, Path(argument))
        torch.save(result, out_dir / f"rank{dist.get_rank()}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
