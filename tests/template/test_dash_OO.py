"""A task whose libraries cannot be imported under `python -OO` (transformers parses docstrings at import,
and -OO drops them) leaves the project's hook-table test passing: the test reads hooks.py, not the task."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.template.helpers import render, run

FAILS_UNDER_OO = """

if __doc__ is None:  # as transformers fails under python -OO, which strips docstrings
    raise ValueError("No 'Args' or 'Parameters' section is found in the docstring")
"""


def test_the_hook_table_test_passes_with_a_task_that_fails_to_import_under_dash_OO(tmp_path):
    """With such a task.py, the generated test_the_hook_table_survives_python_dash_OO still passes."""
    project = render(tmp_path / "project", core_source="index")
    task = project / "src" / "my_trainer" / "task.py"
    task.write_text(task.read_text(encoding="utf-8") + FAILS_UNDER_OO, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "OMP_NUM_THREADS": "1"}
    imported = subprocess.run(
        [sys.executable, "-OO", "-c", "import my_trainer.task"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "No 'Args' or 'Parameters' section" in imported.stderr, "the task should fail to import under -OO"

    test = "tests/test_trainer.py::test_the_hook_table_survives_python_dash_OO"
    run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, cwd=project, env=env, timeout=300)
