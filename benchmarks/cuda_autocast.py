"""bf16-mixed on one CUDA GPU: a step through Fabric against the same raw PyTorch autocast loop.

A mid-size MLP (about 50 M parameters) with AdamW, on in-memory batches already on the GPU.
The raw loop wraps the forward pass in ``torch.autocast("cuda", dtype=torch.bfloat16)`` itself;
the Fabric loop uses ``Fabric(precision="bf16-mixed")``. Each timed call ends in
``torch.cuda.synchronize()``, so a variant is charged for the GPU work it queued. The target is
a throughput of at least 0.97x the raw loop's, i.e. a time ratio of at most 1/0.97 = 1.031.

Without a CUDA device, ``run`` returns nothing and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from _harness import Result, compare, table

BATCH, WIDTH, DEPTH = 256, 2048, 12


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.GELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(WIDTH, 1))


def make_batches(device: torch.device, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH, WIDTH, generator=generator).to(device),
            torch.randn(BATCH, 1, generator=generator).to(device),
        )
        for _ in range(count)
    ]


def raw_steps(batches: list, device: torch.device) -> Callable[[int], None]:
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def steps(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        torch.cuda.synchronize(device)

    return steps


def fabric_steps(batches: list) -> Callable[[int], None]:
    from trainwright import Fabric

    fabric = Fabric(accelerator="cuda", devices=1, precision="bf16-mixed")
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=1e-4))

    def steps(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        torch.cuda.synchronize(fabric.device)

    return steps


def run(number: int = 10, rounds: int = 31) -> dict[str, Result]:
    if not torch.cuda.is_available():
        return {}
    device = torch.device("cuda", 0)
    batches = make_batches(device)
    variants = {
        "raw PyTorch autocast": raw_steps(batches, device),
        "raw PyTorch autocast (control)": raw_steps(batches, device),
        "trainwright Fabric bf16-mixed": fabric_steps(batches),
    }
    return compare(variants, number, rounds)


def report(results: dict[str, Result]) -> str:
    if not results:
        return "Not measured: no CUDA device was available when this report was made."
    rows = [
        (name, f"{r.seconds * 1e3:.2f} ms", f"{r.ratio:.3f}×", f"{1 / r.ratio:.3f}×") for name, r in results.items()
    ]
    device = torch.cuda.get_device_name(0)
    return f"On {device}:\n\n" + table(rows, ("variant", "per step", "time vs raw", "throughput vs raw"))


if __name__ == "__main__":
    print(report(run()))
