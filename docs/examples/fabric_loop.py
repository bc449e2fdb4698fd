"""A whole training loop written on ``Fabric``: what ``make demo`` runs.

It fits a small MLP to synthetic regression data (nothing is downloaded) and shows what the
core does: callbacks with different signatures receive the hooks they ask for, an iteration
timer prints per-iteration times, metrics go to a CSV file, and a checkpoint is written
atomically, then read back with ``weights_only=True`` into a fresh model.

    python docs/examples/fabric_loop.py --run-dir build/demo --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from trainwright import CSVLogger, Fabric, seed_everything

# Every hook this loop fires, for ``fabric.unused_hooks`` to check the callbacks against.
HOOKS = ("on_fit_start", "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end", "on_fit_end")


class HookTrace:
    """Prints each hook the first time it fires, with the keyword arguments it received."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def _trace(self, hook: str, kwargs: dict) -> None:
        if hook not in self.seen:
            self.seen.add(hook)
            print(f"  hook {hook:<22} received {', '.join(sorted(kwargs))}")

    def on_fit_start(self, **kwargs: object) -> None:
        self._trace("on_fit_start", kwargs)

    def on_train_batch_end(self, **kwargs: object) -> None:
        self._trace("on_train_batch_end", kwargs)

    def on_fit_end(self, **kwargs: object) -> None:
        self._trace("on_fit_end", kwargs)


class IterationTimer:
    """Times every training iteration; its totals survive a checkpoint round trip."""

    def __init__(self, print_every: int = 8) -> None:
        self.print_every = print_every
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, fabric: Fabric, global_step: int) -> None:
        fabric.accelerator.synchronize()  # queued GPU work counts; a no-op on CPU
        elapsed = time.perf_counter() - self._start
        self.times.append(elapsed)
        fabric.log("time/iteration_ms", elapsed * 1e3, step=global_step)
        if global_step % self.print_every == 0:
            fabric.print(f"  step {global_step:>3}: iteration took {elapsed * 1e3:.3f} ms")

    def on_fit_end(self, fabric: Fabric) -> None:
        fabric.print(f"  {len(self.times)} iterations, median {statistics.median(self.times) * 1e3:.3f} ms")

    def state_dict(self) -> dict:
        return {"times": self.times}

    def load_state_dict(self, state: dict) -> None:
        self.times = list(state["times"])


class EpochSummary:
    """Prints the mean loss of each epoch."""

    def on_train_epoch_end(self, fabric: Fabric, epoch: int, mean_loss: float) -> None:
        fabric.print(f"epoch {epoch}: mean loss {mean_loss:.4f}")


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def make_data(seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=generator)  # (N, 8)
    y = x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(512, 1, generator=generator)  # (N, 1)
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("build/demo"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    timer = IterationTimer()
    fabric = Fabric(
        accelerator="cpu",
        callbacks=[HookTrace(), timer, EpochSummary()],
        loggers=CSVLogger(args.run_dir),
    )
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer = fabric.setup(model, optimizer)
    loader = fabric.setup_dataloaders(DataLoader(make_data(args.seed), batch_size=32, shuffle=True))

    fabric.print(f"Training on {fabric.device} with {fabric.flags.precision} for {args.epochs} epochs")
    fabric.call("on_fit_start", fabric=fabric, model=model)
    global_step = 0
    for epoch in range(args.epochs):
        losses = []
        for batch_idx, (x, y) in enumerate(loader):
            fabric.call("on_train_batch_start", batch=(x, y), batch_idx=batch_idx)
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            fabric.log("loss", losses[-1], step=global_step)
            fabric.call("on_train_batch_end", fabric=fabric, loss=loss, batch_idx=batch_idx, global_step=global_step)
            global_step += 1
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, mean_loss=statistics.fmean(losses))
    fabric.call("on_fit_end", fabric=fabric, model=model)

    checkpoint = args.run_dir / "checkpoints" / "last.ckpt"
    fabric.save(checkpoint, {"model": model, "optimizer": optimizer, "timer": timer, "global_step": global_step})
    fabric.teardown()

    # Read the checkpoint back into fresh objects, as a resumed run would.
    restored, restored_timer = make_model(), IterationTimer()
    state = {"model": restored, "timer": restored_timer, "global_step": 0}
    Fabric(accelerator="cpu").load(checkpoint, state, strict=False)
    same = all(
        torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values(), strict=True)
    )
    print(
        f"Checkpoint reloaded: step {state['global_step']}, {len(restored_timer.times)} timings, weights equal: {same}"
    )
    for problem in fabric.unused_hooks(known=HOOKS):
        print(f"warning: {problem}")
    print(f"Metrics:    {args.run_dir / 'metrics.csv'}")
    print(f"Checkpoint: {checkpoint}")


if __name__ == "__main__":
    main()
