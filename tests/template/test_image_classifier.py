"""The image classifier of docs/examples/image_classifier, written into a generated default project: map-style
images with random flips seeded by the sample's index and the epoch, loaded by 2 workers, and a small conv net.
The project trains it, and passes its fast tests (exact resumes with workers and flips among them) and the slow
tests of resuming streams, after only tests/task_under_test.py was changed. The rest of the slow suite (real
processes: signals, SIGKILL, the command line) runs with the default task, in test_generated_projects
("everything") and, with a task of the user's, in test_own_model."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.template.helpers import ROOT, project_tests, render, run

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "docs" / "examples" / "image_classifier"
FILES = {"task.py": "src/my_trainer/task.py", "task_under_test.py": "tests/task_under_test.py"}
FILES["example.toml"] = "configs/example.toml"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A default project with the example's task, its test settings and its example config."""
    project = render(tmp_path_factory.mktemp("images") / "my-trainer")
    for name, destination in FILES.items():
        shutil.copyfile(EXAMPLE / name, project / destination)
    return project


@pytest.fixture(scope="module")
def env(project) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project / "src")}


def test_the_image_classifier_learns_with_two_workers_and_flips(project, env, tmp_path):
    """3 epochs with 2 loader workers and flips: the loss falls and validation beats chance (4 classes)."""
    run(sys.executable, "-m", "ruff", "check", "src", "tests", cwd=project)
    run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", cwd=project)
    run_dir = tmp_path / "run"
    flags = ["--accelerator=cpu", "--max-epochs=3", "--data.num-samples=512", "--data.num-val-samples=128"]
    fit = run(sys.executable, "-m", "my_trainer", "fit", *flags, f"--run-dir={run_dir}", cwd=project, env=env)
    assert "epoch 2: val/loss" in fit.stdout
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    train = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    assert train[-1] < train[0]
    assert float(rows[-1]["val/acc"]) > 0.5
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "features.0.weight" in checkpoint["model"]


def test_the_project_passes_its_tests_with_the_image_classifier(project, env):
    """The project's fast tests pass, and so do its slow tests of resuming (exact with workers and flips)."""
    project_tests(project, env, marks="not slow", timeout=900)
    # test_resume.py is fast, so it ran above; the streams' resumes are slow.
    project_tests(project, env, "tests/test_stream_resume.py", marks="slow", timeout=900)
