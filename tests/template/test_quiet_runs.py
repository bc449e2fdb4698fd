"""A default fit prints only the project's own output: the profiler callback drops the
``USDT: ... profiler_start`` and ``profiler_stop`` lines that torch's profiler (kineto) writes to
stderr, and lets everything else written to stderr through."""

from __future__ import annotations

import csv
import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.template.helpers import render, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return render(tmp_path_factory.mktemp("quiet") / "project")


def python_in(project: Path, *args: str, cwd: Path):
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "OMP_NUM_THREADS": "1"}
    return run(sys.executable, *args, cwd=cwd, env=env)


def test_a_default_fit_with_the_profiler_writes_nothing_to_stderr(project, tmp_path):
    """`fit` with the default callbacks (profiler included) leaves stderr empty and still writes the trace."""
    result = python_in(
        project, "-m", "my_trainer", "fit", "--max-steps=6", f"--run-dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.stderr == ""
    assert "profiler:" in result.stdout
    assert (tmp_path / "run" / "profiler" / "trace.json").stat().st_size > 0
    summary = (tmp_path / "run" / "profiler" / "summary.txt").read_text(encoding="utf-8")
    assert summary.startswith("training batches 3 to 5 of the fit")
    with (tmp_path / "run" / "metrics.csv").open(newline="") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["6"]  # the last step (logs come every 10)


def test_the_filter_drops_kinetos_markers_and_nothing_else(project, tmp_path):
    """torch's profiler writes a profiler_start and a profiler_stop line; inside the filter those are dropped,
    while lines from C (file descriptor 2) and from Python, a line that merely mentions profiler_start, a last
    line without a newline, and what was written before an exception all get through."""
    script = textwrap.dedent(
        """
        import os, sys, torch
        from my_trainer.callbacks.profiler import _without_kineto_markers

        def profile():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
                torch.ones(4) @ torch.ones(4)

        profile()
        print("filtered from here", file=sys.stderr)
        with _without_kineto_markers():
            profile()
            os.write(2, b"ERROR: something real went wrong\\n")
            print("a Python warning", file=sys.stderr)
            os.write(2, b"note: profiler_start is a kineto marker\\n")
            os.write(2, b"no newline at the end")
        print("", file=sys.stderr)
        try:
            with _without_kineto_markers():
                os.write(2, b"written before an error\\n")
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        print("stderr still works", file=sys.stderr)
        """
    )
    lines = python_in(project, "-c", script, cwd=tmp_path).stderr.splitlines()
    # If this fails because the first two lines are missing, torch no longer prints the markers:
    # drop _without_kineto_markers from the profiler callback.
    assert [line.rsplit("] ", 1)[-1] for line in lines[:2] if line.startswith("USDT:")] == [
        "profiler_start",
        "profiler_stop",
    ], lines
    assert lines[2:] == [
        "filtered from here",
        "ERROR: something real went wrong",
        "a Python warning",
        "note: profiler_start is a kineto marker",
        "no newline at the end",
        "written before an error",
        "stderr still works",
    ]
