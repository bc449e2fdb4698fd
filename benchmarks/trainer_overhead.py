"""A training step through the generated project's ``Trainer``, with its default callbacks, against raw PyTorch.

The template is rendered with the default answers into a temporary folder and its package is
imported from there. Each variant trains the tiny MLP of ``loop_overhead`` on the same in-memory
batches. The trainer runs its per-batch path (``_train_batch``, what ``fit`` calls for every
batch) with the default callbacks (timing, LR monitor, profiler, checkpoint, progress bar) and
the CSV logger, so every step logs the loss, the iteration time and the learning rate. Gradient
clipping and the LR schedule are off on both sides, so that both do the same arithmetic.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import copier
import torch
from _harness import Result, compare
from loop_overhead import make_batches, make_model, raw_steps, report  # the same table of per-step ratios

ROOT = Path(__file__).resolve().parents[1]


def render_default_project(dst: Path) -> str:
    """Render the template with the default answers into ``dst``; return its package name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(str(ROOT), dst, defaults=True, vcs_ref="HEAD", quiet=True)
    sys.path.insert(0, str(dst / "src"))
    return "my_trainer"


def trainer_steps(package: str, run_dir: Path, batches: list, callbacks: bool) -> Callable[[int], None]:
    config_module = importlib.import_module(f"{package}.config")
    fit_module = importlib.import_module(f"{package}.fit")
    trainer_module = importlib.import_module(f"{package}.trainer")
    callbacks_module = importlib.import_module(f"{package}.callbacks")
    config = config_module.Config(
        run_dir=run_dir, accelerator="cpu", precision="32-true", grad_clip_norm=None, scheduler="constant"
    )
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    trainer = trainer_module.Trainer(
        config,
        torch.nn.functional.mse_loss,
        callbacks=callbacks_module.build_callbacks(config) if callbacks else [],
        loggers=fit_module.build_loggers(config),
    )
    # What fit() does before its first batch.
    trainer.model, trainer.optimizer = trainer.fabric.setup(model, optimizer)
    trainer.scheduler = None
    trainer.num_train_batches = 10**9
    trainer._call("on_fit_start", model=trainer.model, optimizer=trainer.optimizer)
    trainer._call("on_train_epoch_start", epoch=0)
    position = 0

    def steps(n: int) -> None:
        nonlocal position
        for _ in range(n):
            trainer._train_batch(batches[position % len(batches)], position)
            position += 1

    return steps


def run(number: int = 20, rounds: int = 101) -> dict[str, Result]:
    torch.set_num_threads(1)
    batches = make_batches()
    with tempfile.TemporaryDirectory() as tmp:
        package = render_default_project(Path(tmp) / "project")
        variants = {
            "raw PyTorch": raw_steps(batches),
            "raw PyTorch (control)": raw_steps(batches),
            "generated Trainer, no callbacks": trainer_steps(package, Path(tmp) / "bare", batches, callbacks=False),
            "generated Trainer, default callbacks": trainer_steps(package, Path(tmp) / "run", batches, callbacks=True),
        }
        return compare(variants, number, rounds)


if __name__ == "__main__":
    print(report(run()))
