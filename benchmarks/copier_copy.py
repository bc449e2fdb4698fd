"""`copier copy --defaults` of the template, as a user runs it: the CLI in a fresh process.

The target is absolute (under 3 s), so this reports seconds; as a reference point it also times
`git clone` of the same checkout, which copier does first when the source is a git repository.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import table

ROOT = Path(__file__).resolve().parents[1]


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def run(repeats: int = 5) -> dict[str, float]:
    copies, clones = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            copy = [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD"]
            copies.append(_time([*copy, str(ROOT), f"{tmp}/project-{i}"]))
            clones.append(_time(["git", "clone", "--quiet", str(ROOT), f"{tmp}/clone-{i}"]))
    return {"copier copy --defaults": statistics.median(copies), "git clone (reference)": statistics.median(clones)}


def report(results: dict[str, float]) -> str:
    rows = [(name, f"{seconds:.2f} s") for name, seconds in results.items()]
    return table(rows, ("command", "median of 5"))


if __name__ == "__main__":
    print(report(run()))
