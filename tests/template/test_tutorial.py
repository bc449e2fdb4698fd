"""The tutorial's last section, followed in a generated project: its file blocks are written
into a freshly rendered default project, and its script block runs there."""

from __future__ import annotations

import csv
import os
import re
import sys

from tests.template.helpers import ROOT, render, run

TUTORIAL = ROOT / "docs" / "tutorial.md"
TITLED_BLOCK = re.compile(r'^```python title="([^"]+)"\n(.*?)^```', re.DOTALL | re.MULTILINE)


def test_the_tutorial_callback_works_in_a_generated_project(tmp_path):
    blocks = dict(TITLED_BLOCK.findall(TUTORIAL.read_text()))
    files = {title: code for title, code in blocks.items() if title.startswith("src/")}
    scripts = {title: code for title, code in blocks.items() if not title.startswith("src/")}
    assert list(files) == ["src/my_trainer/callbacks/slowest_batch.py"]
    assert list(scripts) == ["try_it.py"]

    project = render(tmp_path / "my-trainer")
    for title, code in blocks.items():
        (project / title).write_text(code)
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    result = run(sys.executable, "try_it.py", cwd=project, env=env)
    assert "slowest iteration:" in result.stdout

    with (project / "runs" / "default" / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    logged = [float(row["time/slowest_iteration_ms"]) for row in rows if row.get("time/slowest_iteration_ms")]
    assert len(logged) == 1  # once, at the end of the one epoch
    assert logged[0] > 0
    # The new file is as clean as the project it joins.
    run(sys.executable, "-m", "ruff", "check", "src", cwd=project)
    run(sys.executable, "-m", "ruff", "format", "--check", "src", cwd=project)
