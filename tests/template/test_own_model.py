"""The "Bring your own model and data" page, followed in a generated project: its task.py, config line,
example config and tests/task_under_test.py are written into a freshly rendered default project, which
then trains the new task and passes its whole test suite, fast and slow."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.template.helpers import ROOT, project_tests, render, run, titled_blocks

pytestmark = pytest.mark.slow

PAGE = ROOT / "docs" / "own-model.md"


def page_blocks() -> dict[str, str]:
    """The page's titled blocks, by title: whole files, or the definition that replaces one in a file."""
    blocks = titled_blocks(PAGE)
    assert list(blocks) == [
        "src/my_trainer/task.py",
        "src/my_trainer/config.py",
        "configs/example.toml",
        "tests/task_under_test.py",
    ]
    return blocks


def replace_once(text: str, pattern: str, replacement: str) -> str:
    """``text`` with the one match of ``pattern`` replaced; fails the test if there is not exactly one."""
    new, count = re.subn(pattern, lambda _: replacement, text, flags=re.DOTALL | re.MULTILINE)
    assert count == 1, f"{pattern!r} matched {count} times"
    return new


def follow_the_page(project) -> None:
    """Write the page's task.py, example config and tests/task_under_test.py, and make its edit to config.py."""
    blocks = page_blocks()
    for name in ("src/my_trainer/task.py", "configs/example.toml", "tests/task_under_test.py"):
        (project / name).write_text(blocks[name], encoding="utf-8")
    config_py = project / "src/my_trainer/config.py"
    config_py.write_text(
        replace_once(config_py.read_text(), r"^    max_steps: .*?\n", blocks["src/my_trainer/config.py"])
    )


def test_the_pages_task_trains_in_a_generated_project_and_passes_its_tests(tmp_path):
    """The page's task.py trains (the loss falls, validation runs after each pass), and the project's tests pass."""
    project = render(tmp_path / "my-trainer")
    follow_the_page(project)
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    # The changed files are as clean as the project they join.
    run(sys.executable, "-m", "ruff", "check", "src", "tests", cwd=project)
    run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", cwd=project)

    # Without max_steps the stream cannot train, and says so before writing anything.
    refused = subprocess.run(
        [sys.executable, "-m", "my_trainer", "fit", "--max-steps=none", "--run-dir=refused"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "the training data has no length: set max_steps" in refused.stderr
    assert not (project / "refused").exists()

    # 2 passes of 32 batches of 32 samples, validated after each, with 2 loader workers.
    flags = ["--accelerator=cpu", "--max-steps=64", "--data.num-samples=1024", "--data.num-workers=2"]
    result = run(sys.executable, "-m", "my_trainer", "fit", *flags, cwd=project, env=env)
    assert "epoch 1: val/loss" in result.stdout
    with (project / "runs" / "default" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    train = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    val = [float(row["val/loss"]) for row in rows if row["val/loss"]]
    assert [int(row["step"]) for row in rows if row["train/loss"]] == [*range(10, 61, 10), 64]  # and the last step
    assert all(0 <= float(row["train/acc"]) <= 1 for row in rows if row["train/loss"])
    assert len(val) == 2
    assert val[1] < val[0]
    assert train[-1] < train[0]
    assert 0.5 < float(rows[-1]["val/acc"]) <= 1  # 4 classes: chance is 0.25
    checkpoint = torch.load(project / "runs" / "default" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["trainer"]["global_step"] == 64
    assert "encoder.self_attn.in_proj_weight" in checkpoint["model"]
    assert len(checkpoint["optimizer"]["param_groups"]) == 2  # decay and no decay

    # The project's own tests, every one of them, on the new task.
    project_tests(project, env)
