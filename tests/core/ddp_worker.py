"""One worker of the two-process DDP tests; ``torchrun`` starts two copies of it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 ddp_worker.py SCENARIO OUT_DIR

Scenarios:
    train   collectives, then a few steps of a hand-written loop over a sharded loader, with
            logging and a checkpoint; each rank writes what it saw to OUT_DIR/rank<r>.json.
    fail    rank 1 raises in its third step while rank 0 goes on into the next all-reduce.
    reliability
            two checks in one job, each rank writing OUT_DIR/<check>-rank<r>.json:
            rng: per-rank seeding (dropout masks, the shuffle), and every rank's random state
            saved in one checkpoint and restored;
            evaluate: one training step, then an odd-sized validation set through an
            evaluation loader and a DDP model with buffers, with sums and counts all-reduced
            once after the loop.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from trainwright import CSVLogger, Fabric, capture_rng_state, restore_rng_state, select_rng_state

PER_RANK_BATCH = 8
EVAL_SIZE = 9  # odd: 5 samples on rank 0, 4 on rank 1


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)  # (64, 4)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))  # (64, 1)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def collectives(fabric: Fabric) -> dict:
    rank = fabric.global_rank
    value = torch.tensor([float(rank + 1)])
    gathered = fabric.all_gather(torch.tensor([rank, 10 * rank]))
    return {
        "sum": fabric.all_reduce(value, op="sum").item(),
        "mean": fabric.all_reduce(value, op="mean").item(),
        "max": fabric.all_reduce(value, op="max").item(),
        "min": fabric.all_reduce(value, op="min").item(),
        "input_untouched": value.item() == rank + 1,
        "gathered": gathered.tolist(),
        "broadcast": fabric.broadcast({"from": rank}, src=1),
    }


def train(fabric: Fabric, out_dir: Path) -> dict:
    net = model()
    net, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    loader = fabric.setup_dataloaders(DataLoader(data(), batch_size=PER_RANK_BATCH, shuffle=False))
    seen = []
    for step, (x, y) in enumerate(loader):
        seen += x[:, 0].tolist()
        loss = torch.nn.functional.mse_loss(net(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        fabric.log("loss", loss, step=step)
    # Each rank names its own path, so that a write from rank 1 would show as a file of its own.
    fabric.save(
        out_dir / f"checkpoints-{fabric.global_rank}" / "final.ckpt", {"model": net, "rank": fabric.global_rank}
    )
    fabric.print(f"printed by rank {fabric.global_rank}")
    return {
        "first_features": seen,
        "weights": [p.detach().flatten().tolist() for p in net.module.parameters()],
        "batches": len(loader),
    }


def fail(fabric: Fabric) -> None:
    for step in range(10):
        if fabric.global_rank == 1 and step == 3:
            raise RuntimeError("rank 1 fails on purpose")
        fabric.all_reduce(torch.ones(1), op="sum")


def eval_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(EVAL_SIZE, 4, generator=generator)  # (9, 4)
    return TensorDataset(x, x.sum(dim=1, keepdim=True), torch.arange(EVAL_SIZE))


def eval_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # BatchNorm's buffers make DDP broadcast them in the first forward after a training step.
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))


def evaluate(fabric: Fabric) -> dict:
    net = eval_model()
    net, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))
    train_x = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    for (x,) in fabric.setup_dataloaders(DataLoader(TensorDataset(train_x), batch_size=4)):
        fabric.backward(net(x).pow(2).mean())
        optimizer.step()
        optimizer.zero_grad()
        break
    loader = fabric.setup_dataloaders(DataLoader(eval_data(), batch_size=2), evaluation=True)
    net.eval()
    seen, batches, padding = [], 0, 0
    loss_sum, index_sum, count = torch.zeros(()), torch.zeros(()), torch.zeros(())
    with torch.no_grad():
        for batch_idx, (x, y, index) in enumerate(loader):
            # A collective in every forward, as FSDP's all-gathers: a rank with a batch fewer would hang here.
            fabric.all_reduce(torch.ones(()), op="sum")
            prediction = net(x)
            batches += 1
            if loader.is_padding(batch_idx):
                padding += 1
                continue
            loss_sum += torch.nn.functional.mse_loss(prediction, y, reduction="sum")
            index_sum += index.sum()
            count += len(index)
            seen += index.tolist()
    total = fabric.all_reduce(count, op="sum")
    padded = fabric.setup_dataloaders(DataLoader(eval_data(), batch_size=2))
    padded_count = fabric.all_reduce(sum(len(index) for _, _, index in padded), op="sum")
    return {
        "seen": seen,
        "batches": batches,
        "padding": padding,
        "count": total.item(),
        "mean_index": (fabric.all_reduce(index_sum, op="sum") / total).item(),
        "mean_loss": (fabric.all_reduce(loss_sum, op="sum") / total).item(),
        "padded_count": padded_count.item(),
        "state": {k: v.tolist() for k, v in net.module.state_dict().items()},
    }


class RankStream(torch.utils.data.IterableDataset):
    """A stream that shards itself unevenly: rank r yields 3 - 2r samples (3 on rank 0, 1 on rank 1)."""

    def __iter__(self):
        rank = int(os.environ["RANK"])
        return iter([torch.tensor([float(10 * rank + i)]) for i in range(3 - 2 * rank)])


def uneven(fabric: Fabric) -> dict:
    """Counts from evaluation loaders whose shards differ: a stream, and a set of one sample (rank 1 has none)."""
    result = {}
    cases = {"stream": DataLoader(RankStream(), batch_size=1), "one": DataLoader(eval_data(), batch_size=4)}
    cases["one"].dataset.tensors = tuple(t[:1] for t in cases["one"].dataset.tensors)
    for name, plain in cases.items():
        loader = fabric.setup_dataloaders(plain, evaluation=True)
        real, padding = [], 0
        for batch_idx, batch in enumerate(loader):
            fabric.all_reduce(torch.ones(()), op="sum")  # a collective per batch, as an FSDP forward runs
            if loader.is_padding(batch_idx):
                padding += 1
            else:
                real += batch[0].flatten().tolist()
        result[name] = {"real": real, "padding": padding}
    return result


def draws(fabric: Fabric) -> dict:
    """A few numbers from every generator this process has, dropout included."""
    import numpy

    result = {
        "python": [random.random() for _ in range(3)],
        "numpy": numpy.random.rand(3).tolist(),
        "torch": torch.rand(3).tolist(),
        "dropout": (torch.nn.functional.dropout(torch.ones(64), p=0.5) == 0).tolist(),
    }
    if torch.cuda.is_available():  # every process draws on cuda:0; each has its own generators
        result["cuda"] = torch.rand(3, device="cuda").tolist()
    return result


def rng(fabric: Fabric, out_dir: Path) -> dict:
    seed = fabric.seed_everything(1234)
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # initialise CUDA, so that its generators are captured
    # A DDP model with dropout: the weights are rank 0's everywhere, so a mask differs only by the RNG.
    net = fabric.setup(torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Dropout(0.5)))
    dropped = (net(torch.ones(1, 8)) == 0).flatten().tolist()
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.arange(20)), batch_size=5, shuffle=True))
    loader.set_epoch(1)
    shard = [int(i) for (batch,) in loader for i in batch]

    states = fabric.all_gather_object(capture_rng_state())
    fabric.save(out_dir / "rng.ckpt", {"rng": states})
    before = draws(fabric)
    fabric.seed_everything(999)  # anything: the restore must undo it
    saved = fabric.load(out_dir / "rng.ckpt")["rng"]
    restore_rng_state(select_rng_state(saved, fabric.global_rank))
    return {
        "seed": seed,
        "initial_seed": torch.initial_seed(),
        "weights": [p.detach().flatten().tolist() for p in net.module.parameters()],
        "dropped": dropped,
        "sampler_seed": loader.sampler.seed,
        "shard": shard,
        "saved_states": len(saved),
        "before": before,
        "after": draws(fabric),
    }


def main(scenario: str, out_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    with Fabric(accelerator="cpu", loggers=CSVLogger(out_dir / f"logs-{rank}")) as fabric:
        if scenario == "fail":
            fail(fabric)
            return
        if scenario == "reliability":  # one job for both: starting torchrun is most of a test's time
            checks = (("rng", rng(fabric, out_dir)), ("evaluate", evaluate(fabric)), ("uneven", uneven(fabric)))
            for name, result in checks:
                (out_dir / f"{name}-rank{fabric.global_rank}.json").write_text(json.dumps(result))
            return
        result = {"rank": fabric.global_rank, "world_size": fabric.world_size, "strategy": fabric.flags.strategy}
        result.update(collectives(fabric), **train(fabric, out_dir))
        (out_dir / f"rank{fabric.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
