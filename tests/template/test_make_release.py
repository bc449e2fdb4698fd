"""`make release` tags vX.Y.Z on HEAD only for a release, and refuses with a clear line otherwise.

Each case runs it in a throwaway clone of this repository whose last commit holds the working
tree's Makefile, .ci/release.py, copier.yml, core version and CHANGELOG (so that uncommitted
changes to them are what is tested), with no tags. A CHANGELOG entry is written into the clone
where a case needs one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.template.helpers import ROOT, run
from tests.template.test_copier_yml import core_version

FILES = ["Makefile", ".ci/release.py", "copier.yml", "core/src/trainwright/_version.py", "CHANGELOG.md"]
IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
VERSION = core_version()
TAG = f"v{VERSION}"


def git(cwd: Path, *args: str) -> str:
    return run("git", *IDENTITY, *args, cwd=cwd).stdout.strip()


def make_release(repo: Path) -> subprocess.CompletedProcess:
    command = ["make", "--no-print-directory", "release", f"PYTHON={sys.executable}"]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=120, check=False)


def edit(repo: Path, path: str, pattern: str, replacement: str) -> None:
    text = (repo / path).read_text(encoding="utf-8")
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} is not in {path}"
    (repo / path).write_text(new, encoding="utf-8")


def without_entry(text: str) -> str:
    """The CHANGELOG without a section for VERSION (the working tree's may already have one)."""
    return re.sub(rf"^## {re.escape(VERSION)}\b.*?(?=^## )", "", text, flags=re.MULTILINE | re.DOTALL)


def commit_entry(repo: Path, body: str = "Things users can see.\n") -> None:
    """Write a `## X.Y.Z (core and template)` entry after `## Unreleased`, and commit it."""
    text = without_entry((repo / "CHANGELOG.md").read_text(encoding="utf-8"))
    entry = f"## {VERSION} (core and template)\n\n{body}\n"
    (repo / "CHANGELOG.md").write_text(text.replace("## Unreleased\n\n", "## Unreleased\n\n" + entry, 1), "utf-8")
    git(repo, "commit", "-q", "-am", f"Release {VERSION}")


def tags(repo: Path) -> list[str]:
    return git(repo, "tag", "--list").split()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A clone of this repository, without tags, with the working tree's release files committed on top."""
    clone = tmp_path_factory.mktemp("source") / "trainwright"
    run("git", "clone", "--quiet", ROOT, clone)
    for tag in tags(clone):
        git(clone, "tag", "--delete", tag)
    for path in FILES:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, clone / path)
    (clone / "CHANGELOG.md").write_text(without_entry((ROOT / "CHANGELOG.md").read_text("utf-8")), "utf-8")
    git(clone, "add", "-A")
    if git(clone, "status", "--porcelain"):
        git(clone, "commit", "-q", "-m", "the working tree's release files")
    return clone


@pytest.fixture
def repo(source, tmp_path) -> Path:
    clone = tmp_path / "trainwright"
    run("git", "clone", "--quiet", "--no-tags", source, clone)
    return clone


def test_a_release_is_tagged_on_head(repo):
    """Same version in core/ and copier.yml, a CHANGELOG entry and a clean tree: an annotated vX.Y.Z on HEAD."""
    commit_entry(repo)
    result = make_release(repo)
    assert result.returncode == 0, result.stderr
    assert git(repo, "rev-parse", f"{TAG}^{{commit}}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "cat-file", "-t", TAG) == "tag"
    assert f"Tagged {TAG} on " in result.stdout
    assert "tests/template/releases.txt" in result.stdout


def test_a_dirty_tree_is_refused(repo):
    """An uncommitted change is refused, naming the file; no tag is made."""
    commit_entry(repo)
    with (repo / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nnot committed\n")
    result = make_release(repo)
    assert result.returncode != 0
    assert "refused: the working tree is not clean (README.md)" in result.stderr
    assert tags(repo) == []


def test_a_missing_or_empty_changelog_entry_is_refused(repo):
    """Without a `## X.Y.Z` heading, or with nothing under it, the refusal says what to add; no tag is made."""
    result = make_release(repo)
    assert result.returncode != 0
    assert f"CHANGELOG.md has no entry for {VERSION}: add a heading `## {VERSION} (core and template)`" in result.stderr
    commit_entry(repo, body="")
    result = make_release(repo)
    assert result.returncode != 0
    assert f"CHANGELOG.md's entry for {VERSION} is empty" in result.stderr
    assert tags(repo) == []


def test_a_version_mismatch_is_refused(repo):
    """copier.yml's core_version other than the core's __version__ is refused, naming both; no tag is made."""
    commit_entry(repo)
    edit(repo, "copier.yml", rf'^(  default: )"{re.escape(VERSION)}"$', r'\g<1>"9.9.9"')
    git(repo, "commit", "-q", "-am", "a template bumped alone")
    result = make_release(repo)
    assert result.returncode != 0
    differ = f"the versions differ: core/src/trainwright/_version.py says {VERSION}, copier.yml's core_version says"
    assert f"{differ} 9.9.9" in result.stderr
    assert tags(repo) == []


def test_an_existing_tag_is_refused(repo):
    """A vX.Y.Z that already exists (on any commit) is refused and left where it is."""
    commit_entry(repo)
    git(repo, "tag", TAG, "HEAD~1")
    result = make_release(repo)
    assert result.returncode != 0
    assert f"refused: the tag {TAG} already exists" in result.stderr
    assert git(repo, "rev-parse", f"{TAG}^{{commit}}") == git(repo, "rev-parse", "HEAD~1")
