"""core/build_version.py: the version a build of the core gets, X.Y.Z or X.Y.Z+g<commit>.

Each case builds nothing: it runs the version source, as hatchling does, on a copy of core/ in a
throwaway git repository (or none).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trainwright

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def built_version(core: Path) -> str:
    """What hatchling's ``code`` source reads: build_version.py's ``__version__``, run in ``core``."""
    code = "import build_version; print(build_version.__version__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=core, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def copy_core(dst: Path) -> Path:
    shutil.copytree(ROOT / "core", dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dst


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with the core in core/, committed."""
    repo = tmp_path / "repo"
    copy_core(repo / "core")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "core")
    return repo


@needs_git
def test_a_commit_of_a_git_checkout_carries_the_commit_as_a_local_label(repo):
    """Built at an untagged commit, the core is X.Y.Z+g<the full commit>, and the next commit changes it."""
    first = git(repo, "rev-parse", "HEAD")
    assert built_version(repo / "core") == f"{trainwright.__version__}+g{first}"
    (repo / "core" / "NOTES.md").write_text("a change without a version bump\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    assert built_version(repo / "core") == f"{trainwright.__version__}+g{git(repo, 'rev-parse', 'HEAD')}"


@needs_git
def test_the_release_commit_is_the_plain_version(repo):
    """At the commit tagged vX.Y.Z (X.Y.Z being __version__), the version is X.Y.Z, as an index publishes it."""
    git(repo, "tag", f"v{trainwright.__version__}")
    assert built_version(repo / "core") == trainwright.__version__
    git(repo, "tag", "--delete", f"v{trainwright.__version__}")
    git(repo, "tag", "v0.0.1")  # another release's tag says nothing about this commit
    assert re.fullmatch(rf"{re.escape(trainwright.__version__)}\+g[0-9a-f]{{40}}", built_version(repo / "core"))


def test_a_folder_outside_git_or_untracked_in_another_repository_is_the_plain_version(tmp_path, monkeypatch):
    """A plain folder (an unpacked sdist, a template copied without git), or one that the repository around
    it does not track, gives X.Y.Z."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path
    assert built_version(copy_core(tmp_path / "plain")) == trainwright.__version__
    outer = tmp_path / "project"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    (outer / "README.md").write_text("someone else's project\n", encoding="utf-8")
    git(outer, "add", "README.md")
    git(outer, "commit", "-q", "-m", "theirs")
    assert built_version(copy_core(outer / "vendored" / "core")) == trainwright.__version__
