"""A training step through the generated project's ``Trainer``, with its default callbacks, against raw PyTorch.

The template is rendered with the default answers into a temporary folder, and five fresh
processes in turn import its package from there and measure: the ratios move between processes
far more than within one, so the report gives their median over the processes, and the range.
Each variant trains the tiny MLP of ``loop_overhead`` on the same in-memory batches, with SGD.
The trainer gets a small task (``MLPTask`` below: that model, that optimizer, the mean squared
error), is set up as ``fit`` sets it up, and then runs its per-batch path (``_train_batch``,
what ``fit`` calls for every batch) with the default callbacks (timing, LR monitor, profiler,
checkpoint, progress bar) and the CSV logger, at the default cadence: the values computed on the
hot path are read and logged every ``log_every_n_steps`` (10) steps. Gradient clipping and the
LR schedule are off on both sides, so that both do the same arithmetic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _harness import Result, compare, table
from _project import project_module, render_project
from loop_overhead import make_batches, make_model, raw_steps

PACKAGE = "bench_trainer_step"


class MLPTask:
    """The tiny MLP of ``loop_overhead`` on its in-memory batches, as a task of the generated project."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def build_dataloaders(self) -> tuple[torch.utils.data.DataLoader, None]:
        # _setup sizes the schedule by this loader; the steps below hand the trainer the batches themselves.
        return torch.utils.data.DataLoader(self.batches, batch_size=None), None

    def build_model(self) -> torch.nn.Module:
        return make_model()

    def configure_optimizers(self, model: torch.nn.Module, num_steps: int) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.SGD(model.parameters(), lr=1e-2), None

    def training_step(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.mse_loss(model(inputs), targets)


def trainer_steps(
    run_dir: Path, batches: list, cleanup: contextlib.ExitStack, callbacks: bool, mlflow: bool = False
) -> Callable[[int], None]:
    """Steps of the generated trainer's per-batch path, set up as ``Trainer.fit`` sets it up.

    With ``mlflow``, an MLflow logger (a local SQLite store) runs beside the CSV logger. The
    trainer's loggers are finalized when ``cleanup`` closes, before their directory goes.
    """
    config_module = project_module(PACKAGE, "config")
    trackers = {}
    if mlflow:
        store = project_module(PACKAGE, "loggers").MLflowConfig(experiment="benchmark", save_dir=run_dir / "mlruns")
        trackers = {"loggers": ["csv", "mlflow"], "mlflow": store}
    config = config_module.Config(
        run_dir=run_dir,
        accelerator="cpu",
        precision="32-true",
        grad_clip_norm=None,
        scheduler="constant",
        **{"loggers": ["csv"], **trackers},
    )
    trainer = project_module(PACKAGE, "trainer").Trainer(
        config,
        MLPTask(batches),
        callbacks=project_module(PACKAGE, "callbacks").build_callbacks(config) if callbacks else [],
        loggers=project_module(PACKAGE, "loggers").build_loggers(config),
    )
    cleanup.callback(trainer.fabric.teardown)  # stops the MLflow logger's sending thread
    # What fit() does before its first batch (less the run directory's config.toml and metadata).
    trainer._setup()  # the model and optimizer; the steps below bring their own batches
    trainer._call("on_fit_start", model=trainer.model, optimizer=trainer.optimizer)
    trainer.num_train_batches = None  # an epoch longer than the benchmark
    trainer.model.train()
    trainer._call("on_train_epoch_start", epoch=0)
    trainer._batch_hooks = project_module(PACKAGE, "hooks").implemented(trainer.fabric.callbacks)
    position = 0

    def steps(n: int) -> None:
        nonlocal position
        for _ in range(n):
            trainer._train_batch(batches[position % len(batches)], position, is_last=False)
            position += 1

    # Past the profiler callback's window (batches 3 to 5) at once: torch allows one profiler
    # per process, and the next trainer's callback starts one when it is set up.
    steps(10)
    return steps


def measure(project: Path, number: int, rounds: int) -> dict[str, Result]:
    """One process's measurement, on the project rendered at ``project`` (its runs write beside it)."""
    torch.set_num_threads(1)
    batches = make_batches()
    sys.path.insert(0, str(project / "src"))
    with tempfile.TemporaryDirectory(dir=project.parent) as runs, contextlib.ExitStack() as cleanup:
        variants = {
            "raw PyTorch": raw_steps(batches),
            "raw PyTorch (control)": raw_steps(batches),
            "generated Trainer, no callbacks": trainer_steps(Path(runs) / "bare", batches, cleanup, callbacks=False),
            "generated Trainer, default callbacks": trainer_steps(Path(runs) / "run", batches, cleanup, callbacks=True),
            "generated Trainer, default callbacks, CSV + MLflow": trainer_steps(
                Path(runs) / "mlflow", batches, cleanup, callbacks=True, mlflow=True
            ),
        }
        return compare(variants, number, rounds)


def run(number: int = 20, rounds: int = 101, processes: int = 5) -> dict[str, list[Result]]:
    """Each variant's results in ``processes`` fresh processes, one after the other.

    Within a process the variants are interleaved (``_harness.compare``), but the ratios still
    move by a point or more from one process to the next (where the allocator and the loader put
    things), far more than within a process; so the report gives the median over processes and
    their range, and a single process proves little.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # With the MLflow logger generated too, so that a variant can turn it on (issue 15: within 2 % of CSV alone).
        project = render_project(Path(tmp) / "project", PACKAGE, loggers=["csv", "mlflow"])
        sys.path.remove(str(project / "src"))  # measured in the child processes only
        each = []
        for i in range(processes):
            print(f"  trainer_overhead: process {i + 1} of {processes}", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--measure", str(project), str(number), str(rounds)]
            child = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
            if child.returncode != 0:
                raise RuntimeError(f"a measuring process failed:\n{child.stderr[-4000:]}")
            each.append(json.loads(child.stdout.splitlines()[-1]))
    return {name: [Result(**results[name]) for results in each] for name in each[0]}


def report(results: dict[str, list[Result]]) -> str:
    """The median per step and ratio over the processes, and the ratios' range."""
    rows = []
    for name, each in results.items():
        ratios = sorted(r.ratio for r in each)
        seconds = statistics.median(r.seconds for r in each)
        spread = f"{ratios[0]:.3f}× to {ratios[-1]:.3f}×"
        rows.append((name, f"{seconds * 1e6:.1f} µs", f"{statistics.median(ratios):.3f}×", spread))
    count = len(next(iter(results.values())))
    return table(rows, ("variant", "per step", f"vs raw PyTorch (median of {count} processes)", "range"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        project, number, rounds = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps({name: dataclasses.asdict(r) for name, r in measure(project, number, rounds).items()}))
    else:
        print(report(run()))
