"""run_metadata: versions, code, machine and processes of a run, as plain data."""

import json
import platform
import shutil
import subprocess

import pytest
import torch

import trainwright
from trainwright import Fabric, run_metadata

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(folder, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(
        ["git", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PATH": "/usr/bin:/bin"},
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "train.py").write_text("print('train')\n")
    git(folder, "init", "-q")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first")
    return folder


def test_the_versions_and_the_processes_are_recorded(tmp_path):
    """Versions, world size, accelerator, devices and precision are recorded as plain data (JSON, checkpoints)."""
    fabric = Fabric(accelerator="cpu", precision="64-true")
    meta = run_metadata(fabric)
    assert meta["python"] == platform.python_version()
    assert (meta["torch"], meta["trainwright"]) == (torch.__version__, trainwright.__version__)
    assert meta["cuda"] == torch.version.cuda
    assert (meta["world_size"], meta["accelerator"], meta["devices"], meta["precision"]) == (1, "cpu", 1, "64-true")
    assert meta["host"]
    assert meta["device_name"]
    assert meta["created"].endswith("+00:00")
    assert meta["git"] is None
    assert json.loads(json.dumps(meta)) == meta
    fabric.save(tmp_path / "meta.ckpt", {"metadata": meta})
    assert fabric.load(tmp_path / "meta.ckpt")["metadata"] == meta


@needs_git
def test_the_commit_and_a_dirty_tree_are_recorded(repo):
    """The commit of the folder's repository; dirty once a tracked file changes, not for an untracked one."""
    fabric = Fabric(accelerator="cpu")
    commit = git(repo, "rev-parse", "HEAD")
    assert run_metadata(fabric, repo / "src")["git"] == {"commit": commit, "dirty": False}
    (repo / "runs").mkdir()
    (repo / "runs" / "metrics.csv").write_text("step\n")
    assert run_metadata(fabric, repo)["git"] == {"commit": commit, "dirty": False}
    (repo / "src" / "train.py").write_text("print('changed')\n")
    assert run_metadata(fabric, repo)["git"] == {"commit": commit, "dirty": True}


def test_no_repository_or_no_git_gives_none(tmp_path, monkeypatch):
    """A folder outside any repository, or a machine without git, records git as None."""
    fabric = Fabric(accelerator="cpu")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # stop git from finding a repository above
    assert run_metadata(fabric, tmp_path)["git"] is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
    assert run_metadata(fabric, tmp_path)["git"] is None


@needs_git
def test_the_core_build_names_the_installed_version_and_the_commit_it_runs():
    """trainwright_build holds the installed version (X.Y.Z+g<commit> from git), where pip got the core, and the
    exact commit: for this editable install, the checkout's commit now, and whether it differs from it."""
    from importlib import metadata
    from pathlib import Path

    build = run_metadata(Fabric(accelerator="cpu"))["trainwright_build"]
    core = Path(trainwright.__file__).resolve().parents[2]
    assert build["version"] == metadata.version("trainwright")
    assert build["commit"] == git(core, "rev-parse", "HEAD")
    assert build["url"] == core.as_uri()
    assert build["dirty"] is bool(git(core, "status", "--porcelain", "--untracked-files=no"))
