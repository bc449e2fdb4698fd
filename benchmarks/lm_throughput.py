"""The language-model task: the generated ``Trainer`` against a raw, nanoGPT-style loop, in tokens per second.

The template is rendered with ``task=language_model`` into a temporary folder. Both sides train
the project's own ``GPT`` (model.py) from the same seed, on batches of the project's own
training loader (data.py, over the shipped corpus), with AdamW (betas 0.9, 0.95, weight decay
on the matrices only), gradient clipping at the config's norm, and the config's warmup and
cosine schedule:

- raw: the loop of nanoGPT's ``train.py``, in plain torch. It sets each step's learning rate
  from the project's ``warmup_cosine`` by hand, as nanoGPT's ``get_lr`` does, and reads the
  loss back (``loss.item()``) every ``log_every_n_steps`` steps, as nanoGPT does at its log
  interval.
- generated Trainer: the trainer as ``fit`` builds it, with the default callbacks (timing, LR
  monitor, profiler, checkpoint, progress bar) and the CSV logger, set up by ``Trainer._setup``
  and run batch by batch as ``Trainer._train_epoch`` runs them (``TrainBatches.epoch``, ``_train_batch``),
  epoch after epoch. It logs the loss, the gradient norm, the iteration time and the learning
  rate every ``log_every_n_steps`` steps.

Validation and checkpoints, which both sides would do every so often, are left out of both;
so is the short last batch of an epoch (``limit_train_batches`` keeps the full ones on both
sides), which would make ``torch.compile`` compile a second graph in the middle of a
measurement. Each variant first runs a few steps untimed, which compiles the model when
``compile`` is on (the raw model's compiled code serves the trainer's model too) and takes the
trainer past its profiler callback's window. Every timed call ends by waiting for the device.

The model on the CPU is small on purpose: 2 layers, 4 heads, width 64, a context of 64 and
batches of 8 (0.11 M parameters, 512 tokens a step), on one thread. A step is a real transformer
step of tens of milliseconds on our 2-core VM: a per-step cost of the trainer of a tenth of a
millisecond would show as a few tenths of a percent, not vanish, and not dominate either. The
project's default model (4 layers, width 128, batches of 32) takes about ten times as long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from _harness import Result, compare, table
from _project import project_module, render_project

PACKAGE = "bench_language_model"
WARMUP_STEPS = 8  # untimed: compilation, and the profiler callback's window (batches 3 to 5)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one device runs: the trainer's accelerator and precision, the model's shape, the batch."""

    accelerator: str
    precision: str
    model: dict[str, int]
    batch_size: int
    threads: int | None = None  # torch's intra-op threads on the CPU; None leaves torch's default


CPU = Setup(
    accelerator="cpu",
    precision="32-true",
    model={"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64},
    batch_size=8,
    threads=1,
)


def make_config(package: str, run_dir: Path, setup: Setup, compile: bool) -> Any:
    """The project's ``Config`` for ``setup``, keeping the full batches of each epoch only."""
    config_module, task_module = project_module(package, "config"), project_module(package, "task")
    config = config_module.Config(
        run_dir=run_dir,
        accelerator=setup.accelerator,
        devices=1,
        precision=setup.precision,
        compile=compile,
        batch_size=setup.batch_size,
        model=task_module.ModelConfig(**setup.model),
    )
    train_loader, _ = task_module.Task(config).build_dataloaders()
    return dataclasses.replace(config, limit_train_batches=len(train_loader.dataset) // setup.batch_size)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epochs(loader: torch.utils.data.DataLoader, batches_per_epoch: int) -> Iterator[Any]:
    """The loader's first ``batches_per_epoch`` batches of each epoch, reshuffled per epoch as the trainer's are."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from itertools.islice(loader, batches_per_epoch)


def raw_steps(package: str, config: Any) -> Callable[[int], None]:
    """Steps of a nanoGPT-style loop over the project's model and loader, with ``config``'s settings."""
    task = project_module(package, "task").Task(config)
    schedule = project_module(package, "schedule")
    loader, _ = task.build_dataloaders()
    device = torch.device(config.accelerator)
    if device.type == "cuda":
        torch.set_float32_matmul_precision(config.matmul_precision)  # as the trainer sets it
    torch.manual_seed(config.seed)
    model = project_module(package, "model").GPT(config.model, vocab_size=len(task.vocabulary)).to(device)
    if config.compile:
        model = torch.compile(model)  # as the trainer compiles it
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda" or None,
    )
    rate = functools.partial(
        schedule.warmup_cosine,
        warmup=config.warmup_steps,
        length=schedule.schedule_length(config, config.limit_train_batches),
        floor=config.min_lr / config.lr,
    )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    batches = _epochs(loader, config.limit_train_batches)
    step = 0

    def steps(n: int) -> None:
        nonlocal step
        for _ in range(n):
            lr = config.lr * rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = next(batches)  # (B, T) each
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with autocast:
                _, loss = model(inputs, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % config.log_every_n_steps == 0:
                loss.item()  # the loop's one sync: the loss it would print
        _synchronize(device)

    steps(WARMUP_STEPS)
    return steps


def _trainer_batches(package: str, trainer: Any, train_batches: Any) -> Iterator[tuple[int, Any, bool]]:
    """What ``Trainer._train_epoch`` hands ``_train_batch``, epoch after epoch, less what runs between epochs."""
    while True:
        trainer.num_train_batches = train_batches.per_epoch
        batches = train_batches.epoch(trainer.epoch)  # the epoch's shuffle, as _train_epoch sets it
        trainer.model.train()
        trainer._call("on_train_epoch_start", epoch=trainer.epoch)
        trainer._batch_hooks = project_module(package, "hooks").implemented(trainer.fabric.callbacks)
        yield from batches
        trainer.epoch, trainer.batch_idx = trainer.epoch + 1, 0


def trainer_steps(package: str, config: Any) -> Callable[[int], None]:
    """Steps of the generated trainer with ``config``'s default callbacks and loggers, set up as ``fit`` does."""
    callbacks = project_module(package, "callbacks").build_callbacks(config)
    loggers = project_module(package, "loggers").build_loggers(config)
    task = project_module(package, "task").Task(config)
    trainer = project_module(package, "trainer").Trainer(config, task, callbacks=callbacks, loggers=loggers)
    trainer.fabric.seed_everything(config.seed)
    train_batches = trainer._setup()
    trainer._call("on_fit_start", model=trainer.model, optimizer=trainer.optimizer)
    batches = _trainer_batches(package, trainer, train_batches)

    def steps(n: int) -> None:
        for _ in range(n):
            batch_idx, batch, is_last = next(batches)
            trainer._train_batch(batch, batch_idx, is_last)
        _synchronize(trainer.fabric.device)

    steps(WARMUP_STEPS)
    return steps


@dataclasses.dataclass(frozen=True)
class Measured:
    """One device's results: per ``compile`` setting, the variants' timings against the raw loop."""

    setup: Setup
    parameters: int
    timings: dict[bool, dict[str, Result]]  # compile -> variant -> timing


def measure(package: str, setup: Setup, number: int, rounds: int) -> Measured:
    """Time the raw loop, its control and the trainer side by side, with ``compile`` off, then on."""
    if setup.threads is not None:
        torch.set_num_threads(setup.threads)  # before compiling: the generated kernels keep the count
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        render_project(Path(tmp) / "project", package, task="language_model")
        for compile in (False, True):
            config = make_config(package, Path(tmp) / f"run-{compile}", setup, compile)
            variants = {
                "raw nanoGPT-style loop": raw_steps(package, config),
                # The same raw loop again: how far apart two identical variants land is the noise floor.
                "raw nanoGPT-style loop (control)": raw_steps(package, config),
                "generated Trainer, default callbacks": trainer_steps(package, config),
            }
            timings[compile] = compare(variants, number, rounds)
        task = project_module(package, "task").Task(config)
        model = project_module(package, "model").GPT(config.model, vocab_size=len(task.vocabulary))
    return Measured(setup, sum(p.numel() for p in model.parameters()), timings)


def run(number: int = 5, rounds: int = 31) -> Measured:
    return measure(PACKAGE, CPU, number, rounds)


def report(measured: Measured) -> str:
    setup, shape = measured.setup, measured.setup.model
    tokens = setup.batch_size * shape["block_size"]
    threads = f", {setup.threads} thread{'s' if setup.threads > 1 else ''}" if setup.threads else ""
    parts = [
        f"GPT of {measured.parameters / 1e6:.2f} M parameters ({shape['n_layer']} layers, {shape['n_head']} heads, "
        f"width {shape['n_embd']}, context {shape['block_size']}), batches of {setup.batch_size} ({tokens} tokens "
        f"a step), {setup.precision}{threads}. Each throughput is against the raw loop with the same `compile`."
    ]
    for compile, results in measured.timings.items():
        rows = [
            (name, f"{r.seconds * 1e3:.2f} ms", f"{tokens / r.seconds:,.0f}", f"{1 / r.ratio:.3f}×")
            for name, r in results.items()
        ]
        header = ("variant", "per step", "tokens/s", "throughput vs raw")
        parts.append(f"`compile` {'on' if compile else 'off'}:\n\n" + table(rows, header))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(report(run()))
