"""Rendering the template from the checkout, for the tests in this folder."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parents[2]
ALL_CALLBACKS = [
    "timing",
    "lr_monitor",
    "profiler",
    "checkpoint",
    "early_stopping",
    "progress_bar",
    "throughput",
    "ema",
]


def render(dst: Path, src: Path | str = ROOT, vcs_ref: str | None = "HEAD", **answers: object) -> Path:
    """Render the template into ``dst`` with the default answers, overridden by ``answers``."""
    with warnings.catch_warnings():
        # Rendering a checkout with uncommitted changes is what a developer does; copier warns.
        warnings.simplefilter("ignore", copier.errors.DirtyLocalWarning)
        copier.run_copy(str(src), dst, data=answers, defaults=True, vcs_ref=vcs_ref, quiet=True)
    return dst


def run(*command: str | Path, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def ruff(*args: str | Path, cwd: Path):
    return run(sys.executable, "-m", "ruff", *args, cwd=cwd)


TITLED_BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```', re.DOTALL | re.MULTILINE)


def titled_blocks(page: Path) -> dict[str, str]:
    """A docs page's code blocks that carry a title, by title: whole files, or lines to put into one."""
    return dict(TITLED_BLOCK.findall(page.read_text(encoding="utf-8")))


def project_tests(
    project: Path, env: dict[str, str], *args: str, marks: str = "slow or not slow", timeout: float = 2400
):
    """Run a generated project's tests that ``marks`` selects (by default all of them, fast and slow), with
    ``args``; fail with its output if it fails."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marks, *args]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    return result
