"""The "A Hugging Face model" page, followed in a generated language-model project: its dependency line,
task.py and tests/task_under_test.py are written in; the project then trains a randomly initialised GPT-2
of transformers, samples from it, and passes its whole test suite (the -OO test included), offline."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from tests.template.helpers import ROOT, project_tests, render, run, titled_blocks

pytestmark = pytest.mark.slow

pytest.importorskip("transformers", reason="transformers is a test dependency of this repository (core's dev extra)")

PAGE = ROOT / "docs" / "huggingface.md"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A language-model project with the page's three changes made."""
    blocks = titled_blocks(PAGE)
    assert list(blocks) == ["pyproject.toml", "src/my_trainer/task.py", "tests/task_under_test.py"]
    project = render(tmp_path_factory.mktemp("hf") / "my-trainer", task="language_model")
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert text.count('    "tqdm>=4.60",\n') == 1
    pyproject.write_text(text.replace('    "tqdm>=4.60",\n', '    "tqdm>=4.60",\n' + blocks["pyproject.toml"]))
    for name in ("src/my_trainer/task.py", "tests/task_under_test.py"):
        (project / name).write_text(blocks[name], encoding="utf-8")
    return project


@pytest.fixture(scope="module")
def env(project) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project / "src"), "HF_HUB_OFFLINE": "1"}


def test_the_page_adds_transformers_to_the_dependencies_and_its_files_are_clean(project):
    """pyproject.toml lists transformers among the dependencies; the written files pass ruff as the project does."""
    dependencies = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert any(requirement.startswith("transformers>=") for requirement in dependencies)
    run(sys.executable, "-m", "ruff", "check", "src", "tests", cwd=project)
    run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", cwd=project)


def test_the_pages_gpt2_trains_and_samples(project, env, tmp_path):
    """A fit lowers the loss of a transformers GPT2LMHeadModel; sample continues a prompt with its characters."""
    run_dir = tmp_path / "run"
    flags = ["--accelerator=cpu", "--max-epochs=2", "--limit-train-batches=30", "--limit-val-batches=4"]
    flags += ["--model.n-layer=1", "--model.n-embd=32", "--model.n-head=2", "--model.block-size=32", "--lr=1e-2"]
    fit = run(sys.executable, "-m", "my_trainer", "fit", *flags, f"--run-dir={run_dir}", cwd=project, env=env)
    assert "epoch 1: val/loss" in fit.stdout
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    train = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    val = [float(row["val/loss"]) for row in rows if row["val/loss"]]
    assert train[-1] < 0.8 * train[0]
    assert val[1] < val[0]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "transformer.h.0.attn.c_attn.weight" in checkpoint["model"]  # GPT-2's own names

    prompt = ["--prompt=The ", "--num-chars=50"]
    text = run(sys.executable, "-m", "my_trainer", "sample", run_dir, *prompt, cwd=project, env=env).stdout.rstrip("\n")
    assert text.startswith("The ")
    assert len(text) == len("The ") + 50


def test_the_project_passes_its_whole_suite_with_the_pages_task(project, env):
    """Every test of the project, fast and slow, passes with the page's task.py and task_under_test.py; among
    them the hook-table test under python -OO, where the task itself cannot be imported."""
    under_oo = subprocess.run(
        [sys.executable, "-OO", "-c", "import my_trainer.task"], env=env, capture_output=True, text=True, timeout=300
    )
    assert under_oo.returncode != 0, "transformers imported under -OO: the suite's -OO test proves less than it says"
    project_tests(project, env, "--durations=5")
