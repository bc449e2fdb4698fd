"""One run of the scenario matrix: a generated project's own command line, with a scenario's data,
schedule and fault put in place around its unchanged trainer.

    python scenario_driver.py PACKAGE SPEC_JSON fit [--field=value ...]

``SPEC_JSON`` may hold:
    data: "map" (the project's own loaders) or "iterable" (the same samples as a stream that
        shards itself by process and loader worker, as a user's stream would);
    schedule: "cosine" (the project's) or "onecycle" (SGD whose momentum OneCycleLR drives);
    fault: {"kind": "SIGTERM" | "SIGUSR1" | "SIGKILL", "at": [epoch, batches]} sends the signal
        to every process of the run (as SLURM does: torchrun, every rank and loader worker)
        after that many batches of that epoch, or in that epoch's validation with
        "at": [epoch, "val"]; {"kind": "nan", "at": [epoch, batch_idx], "rank": r} turns that
        batch's loss into NaN on rank r.
A fault fires once, from rank 0 (a signal) or the rank it names (a NaN).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

package, spec = sys.argv[1], json.loads(sys.argv[2])
fit_module = importlib.import_module(f"{package}.fit")
main = importlib.import_module(f"{package}.__main__").main
Task = fit_module.Task
RANK = int(os.environ.get("RANK", "0"))
fault = spec.get("fault") or {}
position = [0, 0]  # the epoch and the batch index being trained


class Stream(IterableDataset):
    """A map-style data set as a stream: shuffled per epoch from the seed, padded by repetition to
    equal length per process, then dealt to this process and to its loader workers."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.tolist()
        per_process = -(-len(order) // world)
        order = (order * 2)[: per_process * world][RANK::world]
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            order = order[worker.id :: worker.num_workers]
        return (self.dataset[i] for i in order)


build_dataloaders = Task.build_dataloaders


def building(task):
    if fault.get("at") == "setup":
        send(fault["kind"])
    train, val = build_dataloaders(task)
    if spec.get("data") == "iterable":
        train = DataLoader(
            Stream(train.dataset, task.config.seed),
            batch_size=train.batch_size,
            num_workers=train.num_workers,
            collate_fn=train.collate_fn,
        )
    return train, val


def one_cycle(task, model, num_steps):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=max(2, num_steps))


training_step = Task.training_step


def poisoned(task, model, batch):
    outputs = training_step(task, model, batch)
    if fault.get("kind") == "nan" and position == fault["at"] and fault.get("rank", 0) == RANK:
        if isinstance(outputs, dict):
            return {**outputs, "loss": outputs["loss"] * float("nan")}
        return outputs * float("nan")
    return outputs


def send(kind: str) -> None:
    """The signal to every process of this run: torchrun, every rank and every loader worker.

    Sent by another process, as a scheduler sends it: a loader worker tells its own trainer's
    signals (which stop it) from everyone else's (which it leaves to the trainer). The signal is
    pending here once the sender has exited, so it lands right at this point of the run.
    """
    root = os.getppid() if "LOCAL_WORLD_SIZE" in os.environ else os.getpid()  # torchrun, or this run
    number = int(getattr(signal, kind))
    tree = Path(__file__).with_name("process_tree.py")  # every process of the run, as SLURM signals a job step
    subprocess.run([sys.executable, str(tree), str(root), str(number)], check=False, timeout=60)


class Fault:
    def __init__(self) -> None:
        self.fired = False

    def on_train_batch_start(self, trainer, batch_idx: int) -> None:
        position[:] = [trainer.epoch, batch_idx]

    def on_train_batch_end(self, trainer) -> None:
        self._maybe_send([trainer.epoch, trainer.batch_idx])

    def on_validation_batch_end(self, trainer, batch_idx: int) -> None:
        if batch_idx == 0:
            self._maybe_send([trainer.epoch, "val"])

    def _maybe_send(self, where: list) -> None:
        if fault.get("kind", "nan") != "nan" and where == fault.get("at") and RANK == 0 and not self.fired:
            self.fired = True
            send(fault["kind"])


Task.build_dataloaders = building
Task.training_step = poisoned
if spec.get("schedule") == "onecycle":
    Task.configure_optimizers = one_cycle
standard = fit_module.build_callbacks
fit_module.build_callbacks = lambda config: [*standard(config), Fault()]
sys.exit(main(sys.argv[3:]))
