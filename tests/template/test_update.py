"""`copier update` brings template changes into a project whose user edited it, without losing the edits.

Each test builds a throwaway git repository of the template with release tags, as a user's
template source would be, and a git repository of the generated project, as copier requires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import copier
import pytest
import yaml

from tests.template.helpers import ROOT, render

TIMING = Path("src/my_trainer/callbacks/timing.py")
TEMPLATE_TIMING = Path("template/src/{{package_name}}/callbacks/{% if 'timing' in callbacks %}timing.py{% endif %}")
TEMPLATE_LR_MONITOR = Path(
    "template/src/{{package_name}}/callbacks/{% if 'lr_monitor' in callbacks %}lr_monitor.py{% endif %}"
)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def template_repo(tmp_path, monkeypatch) -> Path:
    """A copy of the template in its own git repository, tagged v0.0.1."""
    for key, value in {"NAME": "Test", "EMAIL": "test@example.com"}.items():
        monkeypatch.setenv(f"GIT_AUTHOR_{key}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{key}", value)
    repo = tmp_path / "template-repo"
    repo.mkdir()
    shutil.copy(ROOT / "copier.yml", repo / "copier.yml")
    shutil.copytree(ROOT / "template", repo / "template", ignore=shutil.ignore_patterns("__pycache__", ".ruff_cache"))
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "template v0.0.1")
    git(repo, "tag", "v0.0.1")
    return repo


@pytest.fixture
def project(template_repo, tmp_path) -> Path:
    """A project generated from v0.0.1, committed, with the user's edits committed on top."""
    project = render(tmp_path / "project", src=template_repo, vcs_ref=None)
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "generated")
    # The user changes a line of the timing callback and adds a method, and deletes an optional file.
    edit(project / TIMING, "self.total = 0.0  # seconds", "self.total = 0.0  # seconds, summed by my team's rule")
    edit(
        project / TIMING,
        "    def state_dict(self) -> dict:",
        "    def mean_ms(self) -> float:\n        return self.total / max(self.count, 1) * 1e3\n\n"
        "    def state_dict(self) -> dict:",
    )
    (project / "LICENSE").unlink()
    commit_all(project, "my edits")
    return project


def release(template_repo: Path, tag: str) -> None:
    commit_all(template_repo, f"template {tag}")
    git(template_repo, "tag", tag)


def update(project: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_update(project, defaults=True, overwrite=True, quiet=True)


def conflict_markers(project: Path) -> list[Path]:
    """The files with a conflict marker at the start of a line (the README mentions them mid-line)."""
    files = [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [p for p in files if re.search(r"^<<<<<<< ", p.read_text("utf-8"), re.MULTILINE)]


def test_the_answers_file_records_the_source_and_release(project, template_repo):
    """.copier-answers.yml names the template source and the release it was generated from."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["_src_path"] == str(template_repo)
    assert answers["_commit"] == "v0.0.1"


def test_an_update_keeps_the_users_edits_and_brings_the_template_change(project, template_repo):
    """Edits to timing.py survive, the lr_monitor change lands, the deleted file stays deleted, no conflicts."""
    edit(
        template_repo / TEMPLATE_LR_MONITOR,
        "        self.config = config or LRMonitorConfig()",
        "        self.config = config or LRMonitorConfig()\n        self.template_v2 = True",
    )
    release(template_repo, "v0.0.2")
    update(project)
    timing = (project / TIMING).read_text(encoding="utf-8")
    assert "summed by my team's rule" in timing
    assert "def mean_ms(self)" in timing
    assert "self.template_v2 = True" in (project / "src/my_trainer/callbacks/lr_monitor.py").read_text("utf-8")
    assert not (project / "LICENSE").exists()
    assert conflict_markers(project) == []
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["_commit"] == "v0.0.2"


def test_an_overlapping_edit_gets_inline_conflict_markers(project, template_repo):
    """When the template changes the very line the user changed, the file shows both sides between markers."""
    edit(template_repo / TEMPLATE_TIMING, "self.total = 0.0  # seconds", "self.total = 0.0  # seconds (template v2)")
    release(template_repo, "v0.0.2")
    update(project)
    timing = (project / TIMING).read_text(encoding="utf-8")
    assert conflict_markers(project) == [project / TIMING]
    assert "<<<<<<< before updating" in timing
    assert ">>>>>>> after updating" in timing
    assert "summed by my team's rule" in timing
    assert "(template v2)" in timing
