"""What produced a run: versions, code, machine and processes, as plain data."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainwright._version import __version__

if TYPE_CHECKING:
    from trainwright.fabric import Fabric


def run_metadata(fabric: Fabric, source_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Describe the run that ``fabric`` is part of, for a run directory's metadata file and for
    checkpoints. Only strings, numbers, booleans, ``None``, lists and dicts, so it is plain data
    for ``Fabric.save``, JSON and TOML alike (``None`` aside).

    Args:
        fabric: the run's ``Fabric``, for the processes and devices.
        source_dir: a folder of the project's code; when it is inside a git repository, the
            commit checked out there and whether tracked files differ from it are recorded.

    Returns:
        ``{"created": "2026-05-01T12:00:00+00:00", "python": "3.11.7", "torch": "2.5.1",
        "cuda": "12.4" or None, "trainwright": "0.6.0", "trainwright_build": {"version":
        "0.6.0+g3f2a...", "commit": "3f2a...", "url": "git+https://...", "dirty": None},
        "host": ..., "platform": ...,
        "world_size": 2, "accelerator": "cuda", "devices": 2, "device_name": "NVIDIA H100 ...",
        "precision": "bf16-mixed", "git": {"commit": "3f2a...", "dirty": False} or None}``,
        where ``devices`` counts this node's devices in the job, and ``git`` is ``None`` without
        ``source_dir``, outside a repository, or without a ``git`` command.
        ``trainwright_build`` is the core this process imported: its installed version, the
        commit it was built from (``None`` where nothing records one: a package index's
        release), where pip got it, and for an editable install or a source checkout on the
        path, whether that checkout differs from its commit.
    """
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a str subclass, which weights_only loading refuses
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
        "trainwright": __version__,
        "trainwright_build": _core_build(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "world_size": fabric.world_size,
        "accelerator": fabric.flags.accelerator,
        "devices": len(fabric.flags.devices),
        "device_name": _device_name(fabric.device),
        "precision": fabric.flags.precision,
        "git": _git_state(Path(source_dir)) if source_dir is not None else None,
    }


# The local label that core/build_version.py gives a build from git: X.Y.Z+g<commit>.
_COMMIT_LABEL = re.compile(r"\+g([0-9a-f]{40})$")


def _core_build() -> dict[str, Any]:
    """Which build of the core this process runs: ``{"version", "commit", "url", "dirty"}``.

    The commit is, in order: the running checkout's for an editable install or a core that is
    not installed (its code is what the checkout holds now, not what it held at install time);
    the one pip recorded in the PEP 610 ``direct_url.json`` for a VCS install; the one in the
    version's ``+g<commit>`` label for a build from a git checkout; else ``None``.
    """
    from importlib import metadata

    try:
        distribution = metadata.distribution("trainwright")
    except metadata.PackageNotFoundError:
        distribution = None
    version = distribution.version if distribution is not None else __version__
    try:
        direct_url = json.loads((distribution.read_text("direct_url.json") if distribution else None) or "{}")
    except ValueError:
        direct_url = {}
    url, commit, dirty = direct_url.get("url"), direct_url.get("vcs_info", {}).get("commit_id"), None
    if distribution is None or direct_url.get("dir_info", {}).get("editable"):
        state = _git_state(Path(__file__).resolve().parent)  # the package folder
        if state is not None:
            commit, dirty = state["commit"], state["dirty"]
    if commit is None and (label := _COMMIT_LABEL.search(version)):
        commit = label.group(1)
    return {"version": version, "commit": commit, "url": url, "dirty": dirty}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return f"{device.type} ({platform.machine()})"


def _git_state(folder: Path) -> dict[str, Any] | None:
    """The commit checked out in ``folder``'s repository and whether tracked files differ from it."""

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None  # no git, not a repository, or no commit yet
    # Untracked files are left out: a run directory inside the project must not make it "dirty".
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty}
