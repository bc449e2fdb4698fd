"""The scenario matrix: the generated trainer under the conditions users bring, each compared to a reference.

A scenario is a strategy on a number of processes (single; DDP and FSDP on 1 and 2 gloo
processes), data (map-style or a stream; sizes that divide by neither the world size, the batch
nor the accumulation window; 0 or 2 loader workers), a precision (32-true, bf16-mixed, 16-mixed
with its gradient scaler), accumulation (1 or 3) with clipping, a schedule (cosine, or OneCycleLR
driving SGD's momentum), and a fault: a signal at a step (an epoch's last included) or during
validation, SIGKILL, a NaN loss under each ``nonfinite_loss`` policy, or an unreachable tracker.

The reference is the same scenario without its fault, which a preempted or killed run must
match bit for bit after ``--resume=last``; a run on one process must match the single-device
run; a run on two processes must report the validation loss that one process computes from
its final weights. A fixed set of cases runs every time, plus a seeded random draw from the
whole matrix (the seed is printed; ``TRAINWRIGHT_SCENARIO_SEED`` repeats a draw, and
``TRAINWRIGHT_SCENARIOS=all`` runs the whole matrix, which takes hours).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.template import process_tree
from tests.template.helpers import render
from tests.template.scenario_seed import SEED

pytestmark = pytest.mark.slow

DRIVER = Path(__file__).with_name("scenario_driver.py")
PACKAGE = "scenario_trainer"
TIMEOUT = 240
# 171 samples: 34 for validation, 137 for training (odd: no world size, batch of 8 or window of 3 divides it).
SAMPLES, VALIDATION, BATCH, EPOCHS = 171, 34, 8, 2


@dataclasses.dataclass(frozen=True)
class Scenario:
    strategy: str = "single"
    processes: int = 1
    data: str = "map"
    workers: int = 0
    precision: str = "32-true"
    accumulation: int = 1
    schedule: str = "cosine"
    fault: str = "none"  # none, SIGTERM, SIGKILL, nan-stop, nan-skip, nan-ignore, tracker
    at: tuple = ()  # (epoch, batches) or (epoch, "val") for a signal; (epoch, batch_idx) for a NaN

    def __str__(self) -> str:
        at = "@" + ":".join(map(str, self.at)) if self.at else ""
        return (
            f"{self.strategy}x{self.processes}-{self.data}-w{self.workers}-{self.precision}-acc{self.accumulation}"
            f"-{self.schedule}-{self.fault}{at}"
        )

    def reference(self) -> Scenario:
        """The same run without its fault."""
        return dataclasses.replace(self, fault="none", at=())


def batches_per_epoch(scenario: Scenario) -> int:
    """Training batches per epoch on each process (the shards are padded to equal length)."""
    per_process = math.ceil((SAMPLES - VALIDATION) / scenario.processes)
    if scenario.data == "map" or scenario.workers == 0:
        return math.ceil(per_process / BATCH)
    shares = [len(range(w, per_process, scenario.workers)) for w in range(scenario.workers)]
    return sum(math.ceil(share / BATCH) for share in shares)


def finishes(scenario: Scenario) -> tuple[bool, bool]:
    """Whether ``scenario``'s SIGTERM must, and whether it may, find no step left to stop after, so
    that the fit finishes: in the last validation, or in a stream's last accumulation window, after
    which ``max_steps`` ends the fit (its last validation follows). With several processes a signal
    is agreed at the next read, which comes every 2 steps here (``--log-every-n-steps=2``) or
    sooner: in a stream's last 2 windows it may find the fit done. A map-style run ends with its
    last epoch's validation: a signal in its last steps saves before validating, as at any epoch's end.
    """
    if scenario.fault != "SIGTERM" or scenario.at[0] != EPOCHS - 1:
        return False, False
    if scenario.at[1] == "val":
        return True, True
    if scenario.data == "map":
        return False, False
    windows = math.ceil(batches_per_epoch(scenario) / scenario.accumulation)
    left = windows - math.ceil(scenario.at[1] / scenario.accumulation)  # steps after the signal's window
    return left == 0, left == 0 or (scenario.processes > 1 and left <= 2)


# -- the matrix ---------------------------------------------------------------------------------------

PLACES = ("single", 1), ("ddp", 1), ("ddp", 2), ("fsdp", 1), ("fsdp", 2)
FAULTS = ("none", "SIGTERM", "SIGKILL", "nan-stop", "nan-skip", "nan-ignore", "tracker")


def with_fault(scenario: Scenario, fault: str, rng: random.Random) -> Scenario:
    """Place ``fault`` at a random point of the run: any batch of either epoch (its last included), or validation."""
    last = batches_per_epoch(scenario)
    if fault in ("SIGTERM", "SIGKILL"):
        epoch = rng.randrange(EPOCHS)
        at = (epoch, "val") if fault == "SIGTERM" and rng.random() < 0.25 else (epoch, rng.randint(1, last))
        if fault == "SIGKILL" and at == (EPOCHS - 1, last):
            at = (EPOCHS - 1, last - 1)  # a kill after the very last batch would find the run done
        return dataclasses.replace(scenario, fault=fault, at=at)
    if fault.startswith("nan"):
        return dataclasses.replace(scenario, fault=fault, at=(rng.randrange(EPOCHS), rng.randrange(last)))
    return dataclasses.replace(scenario, fault=fault)


def whole_matrix(rng: random.Random) -> list[Scenario]:
    cases = []
    for (strategy, processes), data, workers, precision, accumulation, schedule, fault in itertools.product(
        PLACES,
        ("map", "iterable"),
        (0, 2),
        ("32-true", "bf16-mixed", "16-mixed"),
        (1, 3),
        ("cosine", "onecycle"),
        FAULTS,
    ):
        base = Scenario(strategy, processes, data, workers, precision, accumulation, schedule)
        cases.append(with_fault(base, fault, rng))
    return cases


# The cases that run every time: each path the matrix exists for, at a point chosen by hand.
FIXED = [
    # DDP on 2 processes with mixed precision, accumulation (no_backward_sync), loader workers and a
    # SIGTERM to the whole job (its loader workers too) in the middle of an epoch: resumed exactly.
    Scenario("ddp", 2, "map", 2, "bf16-mixed", 3, "cosine", "SIGTERM", (1, 4)),
    # A SIGTERM at an epoch's last step (18 batches of a stream): saved before validating.
    Scenario("single", 1, "iterable", 0, "bf16-mixed", 3, "cosine", "SIGTERM", (0, 18)),
    # FSDP on 2 processes, validation shards a batch apart, a SIGTERM during validation.
    Scenario("fsdp", 2, "map", 0, "32-true", 3, "onecycle", "SIGTERM", (0, "val")),
    # A SIGTERM at a stream's very last step (max_steps), on 2 processes with loader workers: no step is left
    # to stop after, so the fit finishes with its last validation and says so on each rank.
    Scenario("ddp", 2, "iterable", 2, "32-true", 3, "cosine", "SIGTERM", (1, 10)),
    # A stream with loader workers under 16-mixed, a NaN skipped.
    Scenario("single", 1, "iterable", 2, "16-mixed", 1, "cosine", "nan-skip", (1, 3)),
    # SIGKILL mid-window with loader workers; the resume starts from the last periodic checkpoint.
    Scenario("single", 1, "map", 2, "32-true", 3, "onecycle", "SIGKILL", (1, 4)),
    # The tracker's server is unreachable: every checkpoint is written, the run ends as without it.
    Scenario("single", 1, "map", 0, "32-true", 1, "cosine", "tracker"),
    # One process under DDP and FSDP takes the single-device run's steps.
    Scenario("ddp", 1, "map", 0, "bf16-mixed", 3, "onecycle", "none"),
    Scenario("fsdp", 1, "iterable", 0, "32-true", 1, "cosine", "nan-stop", (0, 5)),
]


def drawn() -> list[Scenario]:
    rng = random.Random(SEED)
    cases = whole_matrix(rng)
    if os.environ.get("TRAINWRIGHT_SCENARIOS") == "all":
        return cases
    return rng.sample(cases, 2)


DRAWN = drawn()


# -- running a scenario ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    answers = {"project_name": "Scenario Trainer", "distributed": True, "loggers": ["csv", "tensorboard", "mlflow"]}
    return render(tmp_path_factory.mktemp("scenarios") / "project", core_source="index", **answers)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once the socket closes: nothing listens there


def flags(scenario: Scenario, run_dir: Path) -> list[str]:
    result = [
        f"--run-dir={run_dir}",
        "--seed=3",
        "--accelerator=cpu",
        f"--strategy={scenario.strategy}",
        f"--precision={scenario.precision}",
        f"--batch-size={BATCH}",
        f"--grad-accum-steps={scenario.accumulation}",
        "--grad-clip-norm=0.5",
        "--log-every-n-steps=2",
        "--loggers=csv,mlflow" if scenario.fault == "tracker" else "--loggers=csv",
        f"--data.num-samples={SAMPLES}",
        f"--data.num-workers={scenario.workers}",
        "--data.persistent-workers=false",
        "--model.dropout=0.1",  # a random draw per batch: a resume must restore every process's random state
        "--checkpoint.every-n-steps=3",
        "--profiler.enabled=false",
        "--fsdp.checkpoint=full",
        f"--nonfinite-loss={scenario.fault[4:] if scenario.fault.startswith('nan') else 'stop'}",
    ]
    if scenario.data == "iterable":  # a stream has no length: max_steps sizes the schedule
        result.append(f"--max-steps={EPOCHS * math.ceil(batches_per_epoch(scenario) / scenario.accumulation)}")
    result.append(f"--max-epochs={EPOCHS}")
    return result


def launch(project: Path, scenario: Scenario, run_dir: Path, *extra: str, fault: bool = True):
    """Run ``fit`` for ``scenario`` in a session of its own (its signals reach only it); return the process."""
    spec = {"data": scenario.data, "schedule": scenario.schedule}
    if fault and scenario.fault in ("SIGTERM", "SIGKILL"):
        spec["fault"] = {"kind": scenario.fault, "at": list(scenario.at)}
    elif fault and scenario.fault.startswith("nan"):
        spec["fault"] = {"kind": "nan", "at": list(scenario.at), "rank": scenario.processes - 1}
    program = [str(DRIVER), PACKAGE, json.dumps(spec), "fit", *flags(scenario, run_dir), *extra]
    if scenario.strategy == "single":
        command = [sys.executable, *program]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc-per-node={scenario.processes}", *program]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(project / "src"), OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="sqlite:///unused.db")
    if scenario.fault == "tracker":
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{closed_port()}"
        # Each send fails at once. With MLflow's default retries a send backs off for minutes, and
        # finalize waits its whole close_timeout (30 s) for a send still in flight; that case is
        # tests/core/test_mlflow_logger.py's, with a short close_timeout.
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    with subprocess.Popen(
        command,
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process_tree.send(process.pid, signal.SIGKILL)  # torchrun's ranks too, which hold the pipes
            err = ""
            with contextlib.suppress(subprocess.TimeoutExpired):
                _, err = process.communicate(timeout=30)
            raise AssertionError(f"{scenario} did not end within {TIMEOUT} s:\n{err[-4000:]}") from None
        finally:
            with contextlib.suppress(ProcessLookupError):  # loader workers or ranks left behind
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@functools.cache
def reference_run(project: Path, scenario: Scenario, root: Path) -> Path:
    """The run of ``scenario`` without its fault, shared by every case that needs it."""
    run_dir = root / f"reference-{abs(hash(scenario))}" / "run"
    run_dir.parent.mkdir(parents=True)
    result = launch(project, scenario, run_dir)
    assert result.returncode == 0, f"{scenario}:\n{result.stderr[-4000:]}"
    return run_dir


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="", encoding="utf-8") as file:
        timed = ("time/", "throughput/")  # wall-clock measurements: different in every run
        return [{k: v for k, v in row.items() if not k.startswith(timed)} for row in csv.DictReader(file)]


def assert_bitwise(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_bitwise(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(expected: Path, got: Path, scenario: Scenario) -> None:
    a, b = checkpoint(expected), checkpoint(got)
    for part in ("model", "optimizer", "scheduler", "trainer", "rng"):
        assert_bitwise(a[part], b[part], f"{scenario}: {part}")
    assert rows(expected) == rows(got), f"{scenario}: metrics.csv differs"


def finite(state: dict) -> bool:
    return all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


# -- the checks --------------------------------------------------------------------------------------


def check(project: Path, scenario: Scenario, root: Path) -> None:
    run_dir = root / str(scenario).replace(":", "_") / "run"
    run_dir.parent.mkdir(parents=True)
    if scenario.fault == "none":
        got = reference_run(project, scenario, root)
        check_against_one_process(project, scenario, got, root)
        return
    expected = reference_run(project, scenario.reference(), root)
    result = launch(project, scenario, run_dir)
    if scenario.fault in ("SIGTERM", "SIGKILL"):
        if scenario.fault == "SIGTERM":
            said = [line for line in result.stderr.splitlines() if f"{PACKAGE} fit: " in line]
            assert len(said) == scenario.processes, f"{scenario}: each rank says so:\n{result.stderr[-4000:]}"
            must, may = finishes(scenario)
            finished = must or (may and "came after the last step" in said[0])
            says = "SIGTERM came after the last step" if finished else "stopped by SIGTERM after optimizer step"
            assert all(says in line for line in said), f"{scenario}: {said}"
            if scenario.strategy == "single":
                assert result.returncode == (0 if finished else 75), f"{scenario}:\n{result.stderr[-4000:]}"
            position = checkpoint(run_dir)["trainer"]
            if finished:  # already the whole run; the resume below must leave it so
                assert_same_run(expected, run_dir, scenario)
            elif scenario.at[1] == "val":  # validation ran to its end; the save is at the next epoch's start
                assert (position["epoch"], position["batch_idx"]) == (scenario.at[0] + 1, 0), scenario
            elif scenario.at[1] == batches_per_epoch(scenario):  # saved before the epoch's validation
                assert (position["epoch"], position["batch_idx"]) == tuple(scenario.at), scenario
                if (scenario.data == "map" or position["epoch"] < EPOCHS - 1) and position["epoch"] == 0:
                    assert not any(row.get("val/loss") for row in rows(run_dir)), f"{scenario}: validated first"
        else:
            assert result.returncode != 0, scenario
        # As the SLURM script does: resume from last.ckpt, or start again if the kill came before one.
        again = ("--resume=last",) if (run_dir / "checkpoints" / "last.ckpt").exists() else ()
        if scenario.fault == "SIGTERM":
            assert again, f"{scenario}: a preempted run saves"
        resumed = launch(project, scenario, run_dir, *again, fault=False)
        assert resumed.returncode == 0, f"{scenario}:\n{resumed.stderr[-4000:]}"
        assert_same_run(expected, run_dir, scenario)
    elif scenario.fault == "nan-stop":
        assert result.returncode != 0, scenario
        assert "the loss became nan" in result.stderr, f"{scenario}:\n{result.stderr[-4000:]}"
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            assert finite(checkpoint(run_dir)["model"]), f"{scenario}: a NaN reached a checkpoint"
    elif scenario.fault == "nan-skip":
        assert result.returncode == 0, f"{scenario}:\n{result.stderr[-4000:]}"
        saved = checkpoint(run_dir)
        assert finite(saved["model"]), scenario
        # One window's step was dropped on every process alike.
        assert saved["trainer"]["global_step"] == checkpoint(expected)["trainer"]["global_step"] - 1, scenario
        assert result.stdout.count("skipping a batch") == 1, f"{scenario}:\n{result.stdout[-4000:]}"
    elif scenario.fault == "nan-ignore":
        assert result.returncode == 0, f"{scenario}:\n{result.stderr[-4000:]}"
        assert checkpoint(run_dir)["trainer"]["global_step"] == checkpoint(expected)["trainer"]["global_step"]
    elif scenario.fault == "tracker":
        assert result.returncode == 0, f"{scenario}:\n{result.stderr[-4000:]}"
        a, b = checkpoint(expected), checkpoint(run_dir)
        for part in ("model", "optimizer", "scheduler", "trainer", "rng"):
            assert_bitwise(a[part], b[part], f"{scenario}: {part}")
        assert rows(expected) == rows(run_dir), f"{scenario}: metrics.csv differs"


def check_against_one_process(project: Path, scenario: Scenario, got: Path, root: Path) -> None:
    """On one process, any strategy takes the single-device run's steps; on two, validation is exact."""
    saved = checkpoint(got)
    if scenario.processes == 1 and scenario.strategy != "single":
        single = reference_run(project, dataclasses.replace(scenario, strategy="single"), root)
        expected = checkpoint(single)
        tolerance = 1e-5 if scenario.precision == "32-true" else 1e-2
        for name, value in expected["model"].items():
            torch.testing.assert_close(saved["model"][name], value, atol=tolerance, rtol=0, msg=f"{scenario}: {name}")
        return
    if scenario.processes > 1:
        # The logged val/loss of the two processes is the mean over every validation sample once:
        # one process computes the same from the final weights.
        sys.path.insert(0, str(project / "src"))
        try:
            from scenario_trainer.config import Config
            from scenario_trainer.task import DataConfig, Task

            config = Config(batch_size=BATCH, data=DataConfig(num_samples=SAMPLES), seed=3, accelerator="cpu")
            task = Task(config)
            model = task.build_model()
            model.load_state_dict(saved["model"])
            model.eval()
            total = count = 0.0
            with torch.no_grad():
                for batch in task.build_dataloaders()[1]:
                    out = task.validation_step(model, batch)
                    total += float(out["loss"]) * int(out.get("count", 1))
                    count += int(out.get("count", 1))
        finally:
            sys.path.remove(str(project / "src"))
        assert count == VALIDATION
        logged = [float(row["val/loss"]) for row in rows(got) if row.get("val/loss")][-1]
        tolerance = 1e-5 if scenario.precision == "32-true" else 2e-2
        assert logged == pytest.approx(total / count, rel=tolerance), scenario


@pytest.mark.parametrize("scenario", FIXED, ids=str)
def test_a_fixed_scenario_holds(project, scenario, tmp_path_factory):
    """Each hand-placed scenario ends as its reference says (exact resume, one-process steps, exact validation)."""
    check(project, scenario, tmp_path_factory.getbasetemp() / "scenarios")


@pytest.mark.parametrize("scenario", DRAWN, ids=lambda scenario: f"seed{SEED}-{scenario}")
def test_a_drawn_scenario_holds(project, scenario, tmp_path_factory):
    """A seeded random draw from the whole matrix (its seed printed) ends as its reference says."""
    check(project, scenario, tmp_path_factory.getbasetemp() / "scenarios")


# -- paths that no other test takes -------------------------------------------------------------------


def test_a_run_started_again_from_its_config_toml_is_the_same_run(project, tmp_path):
    """fit --config <run_dir>/config.toml (into another run directory) trains the same weights, bit for bit."""
    scenario = Scenario("single", 1, "map", 0, "32-true", 3, "onecycle")
    first = tmp_path / "first" / "run"
    first.parent.mkdir()
    assert launch(project, scenario, first).returncode == 0
    again = tmp_path / "again" / "run"
    again.parent.mkdir()
    config = first / "config.toml"
    result = launch(project, scenario, again, f"--config={config}", f"--run-dir={again}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert_same_run(first, again, scenario)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_through_the_trainer_rewinds_on_resume(project, tmp_path):
    """Killed after a checkpoint, then resumed: TensorBoard holds each step once, with the unbroken run's values."""
    scenario = Scenario("single", 1, "map", 0, "32-true", 1, "cosine", "SIGKILL", (1, 7))
    runs = {}
    for name, fault in (("straight", False), ("killed", True)):
        runs[name] = tmp_path / name / "run"
        runs[name].parent.mkdir()
        result = launch(project, scenario, runs[name], "--loggers=csv,tensorboard", fault=fault)
        assert (result.returncode == 0) != fault, result.stderr[-4000:]
    resumed = launch(project, scenario, runs["killed"], "--loggers=csv,tensorboard", "--resume=last", fault=False)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    straight, killed = tensorboard_scalars(runs["straight"]), tensorboard_scalars(runs["killed"])
    assert "train/loss" in straight
    assert "val/loss" in straight
    assert killed.keys() == straight.keys()
    for tag, points in straight.items():
        got = killed[tag]
        assert [step for step, _ in got] == [step for step, _ in points], f"{tag}: steps repeated or missing"
        if not tag.startswith(("time/", "throughput/")):
            assert [value for _, value in got] == [value for _, value in points], tag


def test_the_fsdp_options_work_through_the_trainer(project, tmp_path):
    """On 2 processes: reshard_after_forward=false takes the default steps; meta_init trains, saves and resumes."""
    scenario = Scenario("fsdp", 2, "map", 0, "32-true", 1, "cosine")
    runs = {}
    for name, extra in {
        "default": (),
        "no-reshard": ("--fsdp.reshard-after-forward=false",),
        "meta": ("--fsdp.meta-init=true", "--max-epochs=1"),
    }.items():
        runs[name] = tmp_path / name / "run"
        runs[name].parent.mkdir()
        result = launch(project, scenario, runs[name], *extra)
        assert result.returncode == 0, f"{name}:\n{result.stderr[-4000:]}"
    default, no_reshard = checkpoint(runs["default"])["model"], checkpoint(runs["no-reshard"])["model"]
    for name, value in default.items():
        torch.testing.assert_close(no_reshard[name], value, atol=1e-6, rtol=0, msg=name)
    resumed = launch(project, scenario, runs["meta"], "--fsdp.meta-init=true", "--resume=last")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    meta = checkpoint(runs["meta"])
    assert meta["trainer"]["global_step"] == checkpoint(runs["default"])["trainer"]["global_step"]
    assert finite(meta["model"])
    losses = [float(row["train/loss"]) for row in rows(runs["meta"]) if row.get("train/loss")]
    assert losses[-1] < losses[0]
