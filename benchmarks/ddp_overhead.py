"""Two processes of DDP on the CPU (gloo): Fabric's step against a raw DDP loop, and scaling from one process.

``run()`` starts ``torchrun --standalone --nproc-per-node=2`` on this file, once per batch size.
In the workers, every variant runs the same forward, loss, backward (with the gradient
all-reduce), SGD step and zero_grad of a mid-size MLP (0.4 M parameters) on in-memory batches
of a fixed size per process, one thread per process. The rounds of the side-by-side harness
are shuffled with a fixed seed, so both processes run the same variant at the same time; every
timed call ends in a barrier.

The variants:

- raw DDP: ``DistributedDataParallel`` and ``loss.backward()``, written by hand.
- trainwright Fabric: ``Fabric(strategy="ddp")``, ``fabric.setup``, ``fabric.backward``.
- Lightning Fabric, when installed: the same loop through ``lightning.fabric``.
- one process: rank 0 alone trains a plain model on its batch while rank 1 waits; the
  baseline of the scaling efficiency, ``t(1 process) / t(2 processes)`` for the same work per
  process (so 1.0 means twice the throughput on two processes).

The small batch makes per-step overhead most visible (the Fabric comparison); the large one
shows how scaling improves when computation outweighs the all-reduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _harness import Result, compare, optional_lightning_fabric, table
from loop_overhead import fabric_steps, make_batches, make_model, raw_steps

FEATURES, HIDDEN = 256, 512
SMALL_BATCH, LARGE_BATCH = 64, 512


def ending_in_barrier(steps: Callable[[int], None], run_here: bool = True) -> Callable[[int], None]:
    import torch.distributed as dist

    def timed(n: int) -> None:
        if run_here:
            steps(n)
        dist.barrier()

    return timed


def raw_ddp(batches) -> Callable[[int], None]:
    return ending_in_barrier(
        raw_steps(batches, torch.nn.parallel.DistributedDataParallel(make_model(FEATURES, HIDDEN)))
    )


def fabric_ddp(fabric, batches) -> Callable[[int], None]:
    return ending_in_barrier(fabric_steps(fabric, batches, make_model(FEATURES, HIDDEN)))


def one_process(rank: int, batches) -> Callable[[int], None]:
    return ending_in_barrier(raw_steps(batches, make_model(FEATURES, HIDDEN)), run_here=rank == 0)


def worker(out: Path, batch: int, number: int, rounds: int) -> None:
    """One process of the torchrun job; rank 0 writes the results to ``out``."""
    from trainwright import Fabric

    torch.set_num_threads(1)
    fabric = Fabric(accelerator="cpu", strategy="ddp")  # joins the process group that raw DDP uses too
    batches = make_batches(8, batch, FEATURES, seed=fabric.global_rank)
    variants = {"raw DDP": raw_ddp(batches)}
    if batch == SMALL_BATCH:
        variants["raw DDP (control)"] = raw_ddp(batches)
        variants["trainwright Fabric"] = fabric_ddp(fabric, batches)
    lightning_cls = optional_lightning_fabric()
    if lightning_cls is not None and batch == SMALL_BATCH:
        lightning = lightning_cls(accelerator="cpu", devices=fabric.world_size, strategy="ddp")
        lightning.launch()  # under torchrun: joins the existing process group
        variants["Lightning Fabric"] = fabric_ddp(lightning, batches)
    variants["one process, no DDP"] = one_process(fabric.global_rank, batches)
    results = compare(variants, number, rounds)
    if fabric.global_rank == 0:
        out.write_text(json.dumps({name: [r.seconds, r.ratio] for name, r in results.items()}))
    fabric.teardown()


def torchrun(batch: int, number: int, rounds: int) -> dict[str, Result]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__]
        command += ["--worker", str(out), str(batch), str(number), str(rounds)]
        subprocess.run(command, check=True, env=env, timeout=1800, stdout=subprocess.DEVNULL)
        return {name: Result(*values) for name, values in json.loads(out.read_text()).items()}


def run(number: int = 10, rounds: int = 41) -> dict[int, dict[str, Result]]:
    """Results by batch size per process."""
    return {batch: torchrun(batch, number, rounds) for batch in (SMALL_BATCH, LARGE_BATCH)}


def report(results: dict[int, dict[str, Result]]) -> str:
    small = results[SMALL_BATCH]
    rows = [(name, f"{r.seconds * 1e3:.2f} ms", f"{r.ratio:.3f}×") for name, r in small.items()]
    lines = [
        f"Batch of {batch} per process: **{r['one process, no DDP'].ratio:.2f}** "
        f"(2 processes train {2 * r['one process, no DDP'].ratio:.2f}× the samples per second of one)"
        for batch, r in results.items()
    ]
    return (
        f"Batch of {SMALL_BATCH} per process:\n\n"
        + table(rows, ("variant (2 processes unless named)", "per step", "vs raw DDP"))
        + "\n\nScaling efficiency of 2 processes over 1, `t(1 process) / t(2 processes)`:\n\n"
        + "\n".join(f"- {line}" for line in lines)
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(Path(sys.argv[2]), *(int(arg) for arg in sys.argv[3:6]))
    else:
        print(report(run()))
