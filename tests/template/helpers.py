"""Rendering the template from the checkout, for the tests in this folder."""

from __future__ import annotations

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
