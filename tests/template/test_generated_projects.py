"""Generated projects, installed as a user installs them, pass their own tests and train.

One virtual environment serves every case: torch (pinned by constraints.txt), the core built
from core/, then each generated project, installed with its test extra. The projects pin the
core release (core_source=index), which the core from core/ satisfies: they run against the
working tree's core, uncommitted changes included, and pip fetches no other.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.template.helpers import ALL_CALLBACKS, ROOT, render, run

pytestmark = pytest.mark.slow

CASES = {  # the longest first (make test runs two tests at a time)
    "everything": {
        "project_name": "full-trainer",
        "callbacks": ALL_CALLBACKS,
        "loggers": ["csv", "tensorboard", "mlflow", "wandb"],
        "task": "regression",
        "distributed": True,
    },
    "language model": {"project_name": "Char GPT", "task": "language_model", "distributed": True},
    "defaults": {},
    "minimal": {"project_name": "bare-trainer", "package_name": "bare", "callbacks": [], "precision": "64-true"},
}


# What each case runs of its own suite. Every generated test runs in "everything" (each callback and
# logger, and the distributed tests), and with other tasks in test_own_model, test_image_classifier
# and test_huggingface, which run the default and the language-model projects' whole suites.
# "defaults" and "minimal" run what `pytest` runs in a new project (its fast tests). "language
# model" runs its whole suite but for the tests whose subject is the loop, not the task, which run
# in "everything" and, for this template, in test_huggingface (a transformer with dropout too): the
# SIGKILL and preemption tests, and the distributed tests of SLURM requeues, failing ranks,
# agreements between ranks, checkpoints moving between one process and two, per-rank random and
# loader states, and SyncBatchNorm on a model of the test's own.
LOOP_ONLY = [
    "test_a_ddp_checkpoint_resumes_in_one_process",
    "test_a_single_process_checkpoint_resumes_on_two",
    "test_a_stop_on_one_rank_stops_every_rank_at_the_same_step",
    "test_a_nonfinite_loss_on_one_rank_is_skipped_by_every_rank",
    "test_a_failing_rank_ends_the_job_non_zero_and_quickly",
    "test_a_failing_rank_under_fsdp_ends_the_job_non_zero_and_quickly",
    "test_each_rank_draws_its_own_random_numbers_and_a_resume_restores_each",
    "test_a_stream_resumed_mid_epoch_on_two_processes_reads_no_trained_batch_again",
    "test_the_slurm_script_",
    "test_sync_batchnorm_",
    "test_without_sync_batchnorm_",
]
SELECTION = {
    "defaults": [],  # the project's own default: -m "not slow"
    "everything": ["-m", "slow or not slow"],
    "minimal": [],
    "language model": [
        *("-m", "slow or not slow", "--deselect=tests/test_crash.py", "--deselect=tests/test_preemption.py"),
        *(f"--deselect=tests/test_distributed.py::{t}" for t in LOOP_ONLY),
    ],
}


@pytest.fixture(scope="session")
def venv(tmp_path_factory) -> Path:
    """A virtual environment with torch and the core from core/ (built into a wheel by pip)."""
    root = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", root)
    python = root / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", ROOT / "constraints.txt"]
    run(*pip, "torch==2.13.0", ROOT / "core", timeout=900)
    return python


@pytest.mark.parametrize("case", list(CASES))
def test_a_generated_project_installs_passes_its_tests_and_trains(venv, tmp_path, case):
    """pip install -e '.[test]', then its pytest passes (the tests SELECTION names), then a seeded 3-step fit writes
    metrics and a checkpoint."""
    answers = CASES[case]
    project = render(tmp_path / "project", core_source="index", **answers)
    package = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))["package_name"]
    pip = [venv, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", ROOT / "constraints.txt"]
    run(*pip, "-e", f"{project}[test]", timeout=900)

    tests = subprocess.run(
        [venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION[case]],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]

    run_dir = tmp_path / "run"
    flags = ["--seed=0", "--max-steps=3", "--log-every-n-steps=1", f"--run-dir={run_dir}", "--accelerator=cpu"]
    run(venv, "-m", package, "fit", *flags, cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline"})
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["1", "2", "3"]
    assert all(float(row["train/loss"]) > 0 for row in rows)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["trainer"]["global_step"] == 3
