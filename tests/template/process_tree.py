"""A run's processes: one process and its descendants, read from ``/proc``. torchrun starts its ranks
in sessions of their own, so a process group does not reach them, and SLURM signals them all.

    python process_tree.py ROOT SIGNAL    send SIGNAL (a number) to ROOT and every descendant
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def family(root: int) -> list[int]:
    """``root`` and its descendants (every rank and loader worker of a run)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(ValueError, OSError):  # not a process, or one that has ended
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def send(root: int, number: int) -> None:
    """Signal ``root`` and its descendants, except this process (when it is one of them)."""
    for pid in family(root):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


if __name__ == "__main__":
    send(int(sys.argv[1]), int(sys.argv[2]))
