"""The default project's seeded loss curve on the CPU is pinned, so any numeric change is noticed.

A change that should not touch the numbers (a refactor of the trainer, a new callback, a core
release) must leave these losses as they are. When a change is meant to alter them, regenerate
the file and say why in the commit:

    TRAINWRIGHT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/template/test_golden_loss.py
"""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest

from tests.template.helpers import render, run

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "default_loss.json")
FLAGS = [
    "--seed=0",
    "--max-steps=12",
    "--accelerator=cpu",
    "--precision=32-true",
    "--profiler.enabled=false",
    "--log-every-n-steps=1",
]


def test_the_default_projects_loss_curve_is_unchanged(tmp_path):
    """12 seeded steps of the default project give the stored training losses (to float32 rounding)."""
    project = render(tmp_path / "project")
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "OMP_NUM_THREADS": "1"}
    run(sys.executable, "-m", "my_trainer", "fit", *FLAGS, f"--run-dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    with (tmp_path / "run" / "metrics.csv").open(newline="") as file:
        losses = [float(row["train/loss"]) for row in csv.DictReader(file)]
    if os.environ.get("TRAINWRIGHT_UPDATE_GOLDEN"):
        with open(GOLDEN, "w", encoding="utf-8") as file:
            json.dump({"flags": FLAGS, "train/loss": losses}, file, indent=2)
            file.write("\n")
    with open(GOLDEN, encoding="utf-8") as file:
        golden = json.load(file)
    assert golden["flags"] == FLAGS
    assert len(losses) == 12
    assert losses == pytest.approx(golden["train/loss"], rel=1e-5, abs=1e-7)
