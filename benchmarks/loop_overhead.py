"""A training step through Fabric against the same raw PyTorch step, and against Lightning Fabric.

A tiny MLP with plain SGD on CPU with one thread: the case where per-step framework overhead is
most visible, because the step itself is cheap. Each variant runs the same forward, loss,
backward, optimizer step and zero_grad on the same in-memory batches, from the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from _harness import Result, compare, optional_lightning_fabric, table

from trainwright import Fabric

BATCH, FEATURES, HIDDEN = 32, 16, 32


def make_model(features: int = FEATURES, hidden: int = HIDDEN) -> torch.nn.Module:
    """An MLP with two hidden layers, the same weights every time."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(features, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )


def make_batches(
    count: int = 64, batch: int = BATCH, features: int = FEATURES, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` in-memory ``(inputs, targets)`` batches of random data."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, features, generator=generator), torch.randn(batch, 1, generator=generator))
        for _ in range(count)
    ]


def raw_steps(batches: list, model: torch.nn.Module | None = None) -> Callable[[int], None]:
    """Steps of the hand-written loop on ``model`` (by default ``make_model()``)."""
    model = make_model() if model is None else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)

    def steps(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return steps


def fabric_steps(fabric, batches: list, model: torch.nn.Module | None = None) -> Callable[[int], None]:
    """The same steps through ``fabric``, on ``model`` (by default ``make_model()``)."""
    model = make_model() if model is None else model
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1e-2))

    def steps(n: int) -> None:
        for i in range(n):
            x, y = batches[i % len(batches)]
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return steps


def run(number: int = 20, rounds: int = 101) -> dict[str, Result]:
    torch.set_num_threads(1)
    batches = make_batches()
    variants = {
        "raw PyTorch": raw_steps(batches),
        # The same raw loop again: how far apart two identical variants land is the noise floor.
        "raw PyTorch (control)": raw_steps(batches),
        "trainwright Fabric": fabric_steps(Fabric(accelerator="cpu"), batches),
    }
    lightning_cls = optional_lightning_fabric()
    if lightning_cls is not None:
        variants["Lightning Fabric"] = fabric_steps(lightning_cls(accelerator="cpu", devices=1), batches)
    return compare(variants, number, rounds)


def report(results: dict[str, Result]) -> str:
    rows = [(name, f"{r.seconds * 1e6:.1f} µs", f"{r.ratio:.3f}×") for name, r in results.items()]
    return table(rows, ("variant", "per step", "vs raw PyTorch"))


if __name__ == "__main__":
    print(report(run()))
