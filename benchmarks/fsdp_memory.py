"""FSDP against DDP on two processes: the training state each process holds, and the step time.

``run()`` starts ``torchrun --standalone --nproc-per-node=2`` on this file. The workers join one
process group, then build the same transformer-shaped MLP (an input layer, a ``ModuleList`` of
residual blocks, a head; AdamW) twice, once through ``Fabric(strategy="ddp")`` and once through
``Fabric(strategy="fsdp")`` (the default policy: one unit per block, then the root).

Memory: after a forward, backward and optimizer step, each process adds up the bytes of its
parameters, gradients and optimizer state, counting a ``DTensor`` by its local shard. This is
the state that lives from step to step; FSDP also holds one unit's gathered parameters (and
gradients) while that unit computes, which is transient and not counted here.

Time: the variants run the same forward, loss, backward (with DDP's all-reduce, or FSDP's
all-gathers and reduce-scatters), AdamW step and zero_grad, interleaved in shuffled rounds by
the side-by-side harness; both processes run the same variant at once, and every timed call
ends in a barrier. FSDP runs twice: with its default ``reshard_after_forward=True`` (each unit's
parameters are gathered again in backward) and with ``False`` (kept from forward to backward).
Two batch sizes per process: the small one makes communication dominate, the large one shows
the ratio once computation outweighs it.

On machines with two or more GPUs, ``python benchmarks/fsdp_memory.py --accelerator cuda`` runs
the same comparison over nccl, one GPU per process, and also reports the peak device memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _harness import Result, compare, table

WIDTH, DEPTH = 512, 8


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(WIDTH)
        self.up = torch.nn.Linear(WIDTH, 2 * WIDTH)
        self.down = torch.nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(WIDTH, WIDTH)
        self.blocks = torch.nn.ModuleList(Block() for _ in range(DEPTH))
        self.head = torch.nn.Linear(WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def local_bytes(tensors) -> int:
    """Bytes this process stores for ``tensors``; a ``DTensor`` counts its local shard."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    parameters = list(model.parameters())
    optimizer_state = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return {
        "parameters": local_bytes(parameters),
        "gradients": local_bytes(p.grad for p in parameters if p.grad is not None),
        "optimizer state": local_bytes(optimizer_state),
    }


def prepare(fabric, batches) -> tuple[Callable[[int], None], dict[str, int]]:
    """Set up a fresh model through ``fabric``; return its timed steps and its state bytes after one step."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = Model()
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=1e-4))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = torch.nn.functional.mse_loss(model(x), y)
        fabric.backward(loss)
        optimizer.step()

    x, y = batches[0]
    step(x, y)
    memory = state_bytes(model, optimizer)
    optimizer.zero_grad()

    def steps(n: int) -> None:
        for i in range(n):
            step(*batches[i % len(batches)])
            optimizer.zero_grad()
        fabric.accelerator.synchronize()
        dist.barrier()

    return steps, memory


#: name -> (strategy, its options); the first is the baseline.
VARIANTS = {
    "DDP": ("ddp", {}),
    "FSDP": ("fsdp", {}),
    "FSDP, reshard_after_forward=False": ("fsdp", {"reshard_after_forward": False}),
}
SMALL_BATCH, LARGE_BATCH = 64, 512


def worker(out: Path, accelerator: str, number: int, rounds: int) -> None:
    """One process of the torchrun job; rank 0 writes the results to ``out``."""
    import torch.distributed as dist

    from trainwright import Fabric
    from trainwright.strategies import DDPStrategy, FSDPStrategy

    torch.set_num_threads(1)
    cuda = accelerator == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    # One group for every Fabric of the job: each uses it and leaves it alone.
    dist.init_process_group("nccl" if cuda else "gloo")
    classes = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}
    payload: dict = {"time": {}, "memory": {}, "peak": {}, "parameters": sum(p.numel() for p in Model().parameters())}
    # The large batch's steps take about 8 times longer: fewer of them per round, and fewer rounds.
    for batch, steps, repeats in (
        (SMALL_BATCH, number, rounds),
        (LARGE_BATCH, max(1, number // 4), max(5, rounds // 2)),
    ):
        variants = {}
        for name, (kind, options) in VARIANTS.items():
            fabric = Fabric(accelerator=accelerator, strategy=classes[kind](**options))
            generator = torch.Generator().manual_seed(fabric.global_rank)
            batches = [
                fabric.to_device(
                    (torch.randn(batch, WIDTH, generator=generator), torch.randn(batch, 1, generator=generator))
                )
                for _ in range(4)
            ]
            if cuda:  # the earlier variants' models are still allocated: count from here
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            variants[name], memory = prepare(fabric, batches)
            if batch == SMALL_BATCH:
                payload["memory"][name] = memory
                if cuda:
                    payload["peak"][name] = torch.cuda.max_memory_allocated() - before
        results = compare(variants, steps, repeats)
        payload["time"][batch] = {name: [r.seconds, r.ratio] for name, r in results.items()}
        del variants
    if dist.get_rank() == 0:
        out.write_text(json.dumps(payload))
    dist.destroy_process_group()


def torchrun(accelerator: str, number: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__]
        command += ["--worker", str(out), accelerator, str(number), str(rounds)]
        subprocess.run(command, check=True, env=env, timeout=1800, stdout=subprocess.DEVNULL)
        results = json.loads(out.read_text())
    results["time"] = {
        int(batch): {name: Result(*values) for name, values in by_name.items()}
        for batch, by_name in results["time"].items()
    }
    return results


def run(number: int = 4, rounds: int = 15, accelerator: str = "cpu") -> dict:
    """Memory and timing of DDP and FSDP, measured in one two-process job."""
    return torchrun(accelerator, number, rounds)


def report(results: dict) -> str:
    memory, time = results["memory"], results["time"]
    kinds = ["parameters", "gradients", "optimizer state"]
    totals = {name: sum(memory[name].values()) for name in memory}

    def mib(n: int) -> str:
        return f"{n / 2**20:.2f} MiB"

    def ratio(fsdp: int, ddp: int) -> str:
        return f"{fsdp / ddp:.3f}×"

    ddp, fsdp = memory["DDP"], memory["FSDP"]
    rows = [(kind, mib(ddp[kind]), mib(fsdp[kind]), ratio(fsdp[kind], ddp[kind])) for kind in kinds]
    rows.append(("**total**", mib(totals["DDP"]), mib(totals["FSDP"]), f"**{ratio(totals['FSDP'], totals['DDP'])}**"))
    timing = [
        (f"{batch}", name, f"{r.seconds * 1e3:.1f} ms", f"{r.ratio:.2f}×")
        for batch, by_name in time.items()
        for name, r in by_name.items()
    ]
    lines = [
        f"Model of {results['parameters'] / 1e6:.2f} M parameters ({DEPTH} blocks of width {WIDTH}), AdamW. "
        "State per process after a step:",
        "",
        table(rows, ("state", "DDP", "FSDP", "FSDP / DDP")),
        "",
        "Step time, both processes training:",
        "",
        table(timing, ("batch per process", "variant", "per step", "vs DDP")),
    ]
    if results.get("peak"):
        peak = results["peak"]
        lines += ["", f"Peak device memory of setup and one step (batch {SMALL_BATCH}): DDP {mib(peak['DDP'])}, "
                  f"FSDP {mib(peak['FSDP'])} ({ratio(peak['FSDP'], peak['DDP'])})."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
        args = parser.parse_args()
        print(report(run(accelerator=args.accelerator)))
