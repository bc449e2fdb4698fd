"""What a tracker costs the training loop: CSV alone against CSV with MLflow, and with W&B offline.

The tiny MLP of ``loop_overhead`` trains through ``Fabric`` on one CPU thread and logs the loss
(a tensor) and the learning rate every 10 steps, as the generated trainer does by default. Every
variant has its own ``Fabric`` and loggers, in a temporary folder: MLflow writes to its default
local SQLite store, W&B runs offline. Their runs are started before timing (as a trainer logs
its config at fit start), so what is timed is the steady state: the buffered ``log_metrics``
calls and the background threads' sends, every 5 seconds (the default), about 15 of each
tracker in a run. Many rounds, because a run on a shared machine lands a percent or two apart
between identical variants.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _harness import Result, compare, table
from loop_overhead import make_batches, make_model

from trainwright import CSVLogger, Fabric, Logger

LOG_EVERY = 10


def logged_steps(fabric: Fabric, batches: list) -> Callable[[int], None]:
    """The loop of ``loop_overhead.fabric_steps``, logging every ``LOG_EVERY`` steps."""
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1e-2))
    fabric.log_hyperparams({"lr": 1e-2, "batch_size": len(batches[0][0]), "log_every": LOG_EVERY})
    step = 0

    def steps(n: int) -> None:
        nonlocal step
        for _ in range(n):
            x, y = batches[step % len(batches)]
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            if step % LOG_EVERY == 0:
                fabric.log_dict({"loss": loss, "lr": 1e-2}, step=step)
            step += 1

    return steps


def run(number: int = 50, rounds: int = 301) -> dict[str, Result]:
    torch.set_num_threads(1)
    batches = make_batches()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def loggers(name: str, *trackers: Logger) -> list[Logger]:
            return [CSVLogger(root / name), *trackers]

        fabrics = {
            "CSV alone": Fabric(accelerator="cpu", loggers=loggers("csv")),
            # The same again: how far two identical variants land apart is the noise floor.
            "CSV alone (control)": Fabric(accelerator="cpu", loggers=loggers("control")),
            "no logger": Fabric(accelerator="cpu"),
        }
        if importlib.util.find_spec("mlflow") is not None:
            from trainwright import MLflowLogger

            tracker = MLflowLogger(root / "mlflow", experiment_name="bench")
            fabrics["CSV + MLflow"] = Fabric(accelerator="cpu", loggers=loggers("mlflow-csv", tracker))
        if importlib.util.find_spec("wandb") is not None:
            from trainwright import WandbLogger

            os.environ.setdefault("WANDB_SILENT", "true")
            tracker = WandbLogger(root / "wandb", project="bench", mode="offline")
            fabrics["CSV + W&B (offline)"] = Fabric(accelerator="cpu", loggers=loggers("wandb-csv", tracker))
        try:
            variants = {name: logged_steps(fabric, batches) for name, fabric in fabrics.items()}
            return compare(variants, number, rounds)
        finally:
            for fabric in fabrics.values():
                fabric.teardown()


def report(results: dict[str, Result]) -> str:
    rows = [(name, f"{r.seconds * 1e6:.1f} µs", f"{r.ratio:.3f}×") for name, r in results.items()]
    text = table(rows, ("variant", "per step", "vs CSV alone"))
    missing = [name for name in ("CSV + MLflow", "CSV + W&B (offline)") if name not in results]
    if missing:
        text += f"\n\nNot measured (package not installed): {', '.join(missing)}."
    return text


if __name__ == "__main__":
    print(report(run()))
