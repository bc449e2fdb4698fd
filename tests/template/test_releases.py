"""Releases update to later ones, on this repository's own history.

The repository carries no tags (CI clones main afresh, and tags made there do not survive), so the
test clones the history into a throwaway folder and tags each release where it was cut: at the
commit releases.txt records, or else the commit that set the core's ``__version__`` (in
core/src/trainwright/_version.py; up to 0.5.0, in its ``__init__.py``). A project is generated at the
latest release before HEAD, edited as a user would, committed, and updated to HEAD with
`copier update`; and a project of the release before that is updated to a chosen release with
`copier update --vcs-ref`. Uncommitted changes of the working tree are not part of the history.

When the template's files change, adjust USER_EDITS: each ``old`` text must be in the file as
the latest release before HEAD generates it.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import copier
import pytest
import yaml
from packaging.version import Version

from tests.template.helpers import ROOT, run

pytestmark = pytest.mark.slow

VERSION_FILE = "core/src/trainwright/_version.py"
# Where the version was set before it had a module of its own; the history of old releases is there.
OLD_VERSION_FILE = "core/src/trainwright/__init__.py"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)

# What a user changes in a generated project (default answers): (file, old text, new text).
USER_EDITS = [
    (
        "src/my_trainer/callbacks/timing.py",
        "self.total = 0.0  # seconds",
        "self.total = 0.0  # seconds, summed by my team's rule",
    ),
    (
        "src/my_trainer/callbacks/timing.py",
        "    def state_dict(self) -> dict:",
        "    def mean_ms(self) -> float:\n        return self.total / max(self.count, 1) * 1e3\n\n"
        "    def state_dict(self) -> dict:",
    ),
    (
        "src/my_trainer/config.py",
        '    seed: int = field(default=0, metadata=_help("seeds Python, torch and NumPy, and the data"))\n',
        '    seed: int = field(default=0, metadata=_help("seeds Python, torch and NumPy, and the data"))\n'
        '    team: str = field(default="vision", metadata=_help("who runs this"))\n',
    ),
]
IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
# The task's files (default answers): written at the copy and never touched by an update (copier.yml's
# _skip_if_exists), so after an update they are what the project held before it.
TASK_FILES = {"src/my_trainer/task.py", "src/my_trainer/model.py", "src/my_trainer/data.py"}
TEMPLATE_TASK = "template/src/{{package_name}}/{% if task != 'language_model' %}task.py{% endif %}.jinja"
TEMPLATE_MODEL = "template/src/{{package_name}}/{% if task != 'language_model' %}model.py{% endif %}.jinja"
# A user's own task.py, replacing the example's whole (a regression, where the example classifies).
USERS_TASK = '''"""My team's task: a linear regression on our own data."""

from __future__ import annotations

import torch

from .config import Config


class Task:
    def __init__(self, config: Config) -> None:
        self.config = config

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Linear(8, 1)
'''


def git(cwd: Path, *args: str) -> str:
    return run("git", *args, cwd=cwd).stdout.strip()


RECORDED = Path(__file__).with_name("releases.txt")


def recorded_releases() -> dict[str, str]:
    """``{"vX.Y.Z": commit}`` as releases.txt records where each release was cut."""
    lines = RECORDED.read_text(encoding="utf-8").splitlines()
    return dict(line.split() for line in lines if line.strip() and not line.startswith("#"))


def release_commits(repo: Path, recorded: dict[str, str] | None = None) -> dict[str, str]:
    """``{"vX.Y.Z": commit}``, oldest first: the recorded commit of each release that ``repo`` holds, else the
    commit that set that version of the core."""
    releases: dict[str, str] = {}
    changes = git(
        repo, "log", "--reverse", "--format=%H", "-G", VERSION_LINE.pattern, "--", VERSION_FILE, OLD_VERSION_FILE
    ).split()
    for commit in changes:
        match = VERSION_LINE.search(version_source(repo, commit))
        tag = f"v{match.group(1)}" if match else None
        if tag and tag not in releases:
            releases[tag] = commit
    known = set(git(repo, "rev-list", "--all").split())
    releases.update({tag: commit for tag, commit in (recorded or {}).items() if commit in known and tag in releases})
    versions = [Version(tag) for tag in releases]
    assert versions == sorted(versions), f"the core's version went backwards in the history: {list(releases)}"
    return releases


def version_source(repo: Path, commit: str) -> str:
    """The text of the file that sets the core's ``__version__`` at ``commit``."""
    present = git(repo, "ls-tree", "--name-only", commit, "--", VERSION_FILE, OLD_VERSION_FILE).split()
    name = VERSION_FILE if VERSION_FILE in present else OLD_VERSION_FILE
    return git(repo, "show", f"{commit}:{name}")


def require_history(repo: Path) -> None:
    """Fail, with what to do, when ``repo`` lacks the history that the releases are found in."""
    if git(repo, "rev-parse", "--is-shallow-repository") == "true":
        pytest.fail(
            f"{repo} is a shallow clone, and this test needs the history of its releases: "
            "run `git fetch --unshallow` there (or clone without --depth)"
        )


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """A clone of this repository with a ``vX.Y.Z`` tag on each release commit."""
    require_history(ROOT)
    clone = tmp_path_factory.mktemp("history") / "trainwright"
    run("git", "clone", "--quiet", "--no-hardlinks", ROOT, clone)
    for tag in git(clone, "tag", "--list").split():
        git(clone, "tag", "--delete", tag)  # tags made by hand in the checkout do not count
    releases = release_commits(clone, recorded_releases())
    if len([tag for tag, commit in releases.items() if commit != git(clone, "rev-parse", "HEAD")]) < 2:
        pytest.fail(f"the history of {ROOT} has fewer than two releases before HEAD: {releases}")
    for tag, commit in releases.items():
        git(clone, "tag", tag, commit)
    return clone


def releases_before_head(clone: Path) -> list[str]:
    """The release tags whose commit comes before HEAD, newest first."""
    head = git(clone, "rev-parse", "HEAD")
    tags = [tag for tag in git(clone, "tag", "--list", "v*").split() if git(clone, "rev-list", "-n1", tag) != head]
    return sorted(tags, key=Version, reverse=True)


def generate(clone: Path, ref: str, dst: Path, answers: dict | None = None) -> Path:
    """The project at ``ref`` (default answers unless given), committed to its own git repository as
    copier update needs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(str(clone), dst, data=answers or {}, defaults=True, vcs_ref=ref, quiet=True)
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, *IDENTITY, "commit", "-q", "-m", f"generated at {ref}")
    return dst


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def answers_of(project: Path) -> dict:
    """The answers recorded in a project, without copier's own entries."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    return {key: value for key, value in answers.items() if not key.startswith("_")}


def has_conflict(text: str) -> bool:
    return re.search(r"^<<<<<<< ", text, re.MULTILINE) is not None


def test_a_project_of_the_latest_release_updates_to_head_keeping_the_users_edits(history, tmp_path):
    """Edits to timing.py and config.py survive; every other file becomes what HEAD generates; conflicts
    (if any) are copier's inline markers in edited files; the core requirement moves to HEAD's commit."""
    latest = releases_before_head(history)[0]
    project = generate(history, latest, tmp_path / "project")
    for path, old, new in USER_EDITS:
        text = (project / path).read_text(encoding="utf-8")
        assert old in text, f"USER_EDITS is out of date: {old!r} is not in {path} as {latest} generates it"
        (project / path).write_text(text.replace(old, new, 1), encoding="utf-8")
    git(project, *IDENTITY, "commit", "-q", "-am", "my edits")
    before = files(project)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # unsafe: a release that moves generated files does it with _migrations, which need trust.
        copier.run_update(
            project, vcs_ref="HEAD", defaults=True, overwrite=True, quiet=True, conflict="inline", unsafe=True
        )

    expected = files(generate(history, "HEAD", tmp_path / "fresh", answers_of(project)))
    updated = files(project)
    assert set(updated) == set(expected)
    edited = {path for path, _, _ in USER_EDITS}
    for path in sorted(TASK_FILES):
        assert updated[path] == before[path], f"the update changed {path}, which is the user's"
    for path in sorted(set(updated) - edited - TASK_FILES):
        assert updated[path] == expected[path], f"{path} is not what HEAD generates"
    for path, _, new in USER_EDITS:
        assert new in updated[path], f"the user's edit to {path} was lost"
    for path in sorted(edited):
        if has_conflict(updated[path]):
            assert "<<<<<<< before updating" in updated[path]
            assert ">>>>>>> after updating" in updated[path]
            continue
        # Without a conflict, the file is HEAD's with the user's edits, where their context still exists.
        ours = expected[path]
        for edit_path, old, new in USER_EDITS:
            if edit_path == path and old in ours:
                ours = ours.replace(old, new, 1)
        assert updated[path] == ours, f"{path} is not HEAD's file with the user's edits"

    answers = yaml.safe_load(updated[".copier-answers.yml"])
    assert answers["_commit"] == git(history, "describe", "--tags", "--always", "HEAD")
    assert f"@{git(history, 'rev-parse', 'HEAD')}#subdirectory=core" in updated["pyproject.toml"]


def test_copier_update_vcs_ref_goes_to_a_chosen_release(history, tmp_path):
    """`copier update --defaults --vcs-ref vX.Y.Z` takes a project of the release before to exactly that release."""
    chosen, previous = releases_before_head(history)[:2]
    project = generate(history, previous, tmp_path / "project")
    before = files(project)
    command = [sys.executable, "-m", "copier", "update", "--defaults", "--quiet", "--trust", f"--vcs-ref={chosen}"]
    run(*command, cwd=project)

    expected = files(generate(history, chosen, tmp_path / "fresh", answers_of(project)))
    updated = files(project)
    assert yaml.safe_load(updated[".copier-answers.yml"])["_commit"] == chosen
    if "_skip_if_exists" in git(history, "show", f"{chosen}:copier.yml"):  # the task stays as it was copied
        expected |= {path: before[path] for path in TASK_FILES}
    assert updated == expected
    assert git(project, "status", "--porcelain"), "the update changed nothing"


def test_a_replaced_task_stays_byte_for_byte_through_an_update_that_changes_the_example(history, tmp_path):
    """A project of 0.5.0 whose user replaced task.py and edited model.py updates to HEAD plus a commit that
    changes the example's task.py and model.py: no conflict marker anywhere, both files exactly the user's, and
    every file the user did not touch is what that commit generates."""
    template = tmp_path / "template"
    run("git", "clone", "--quiet", history, template)  # tags included
    project = generate(template, "v0.5.0", tmp_path / "project")
    (project / "src/my_trainer/task.py").write_text(USERS_TASK, encoding="utf-8")
    with (project / "src/my_trainer/model.py").open("a", encoding="utf-8") as model:
        model.write("\n\nHIDDEN = 64  # my team's width\n")
    git(project, *IDENTITY, "commit", "-q", "-am", "my task")
    before = files(project)

    # The next release rewrites the example task's first lines, where the user's task.py differs entirely.
    for path in (TEMPLATE_TASK, TEMPLATE_MODEL):
        text = (template / path).read_text(encoding="utf-8")
        (template / path).write_text('"""The example, as the next release writes it."""\n' + text, encoding="utf-8")
    git(template, *IDENTITY, "commit", "-q", "-am", "template: the example task changes")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_update(
            project, vcs_ref="HEAD", defaults=True, overwrite=True, quiet=True, conflict="inline", unsafe=True
        )
    updated = files(project)
    assert [path for path, text in updated.items() if has_conflict(text)] == []
    for path in sorted(TASK_FILES):
        assert updated[path] == before[path], f"the update changed {path}, which is the user's"
    expected = files(generate(template, "HEAD", tmp_path / "fresh", answers_of(project)))
    assert "The example, as the next release writes it." in expected["src/my_trainer/task.py"]
    for path in sorted(set(expected) - TASK_FILES):
        assert updated[path] == expected[path], f"{path} is not what HEAD generates"


def test_release_commits_are_found_where_the_core_version_changed(tmp_path):
    """The finder tags the commit that set each version, once, unless a release's cut is recorded."""
    repo = tmp_path / "repo"
    (repo / "core/src/trainwright").mkdir(parents=True)
    commits = []
    for version, note in [("0.1.0", ""), ("0.1.0", "# a comment\n"), ("0.2.0", "# a comment\n"), ("0.2.0", "")]:
        (repo / VERSION_FILE).write_text(f'{note}__version__ = "{version}"\n', encoding="utf-8")
        if not commits:
            git(repo.parent, "init", "-q", "-b", "main", "repo")
        git(repo, "add", "-A")
        git(repo, *IDENTITY, "commit", "-q", "-m", f"{version} {note!r}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    assert release_commits(repo) == {"v0.1.0": commits[0], "v0.2.0": commits[2]}
    recorded = {"v0.1.0": commits[1], "v0.9.0": commits[3], "v0.2.0": "0" * 40}  # a later cut, unknown ones
    assert release_commits(repo, recorded) == {"v0.1.0": commits[1], "v0.2.0": commits[2]}


def test_the_recorded_releases_are_in_this_history():
    """Every commit in releases.txt is in the checkout's history and holds the version its tag names."""
    for tag, commit in recorded_releases().items():
        text = version_source(ROOT, commit)
        assert VERSION_LINE.search(text).group(1) == tag.removeprefix("v"), (tag, commit)


def test_a_shallow_checkout_is_reported_not_skipped(tmp_path):
    """A shallow clone fails the release tests with advice instead of letting them test nothing."""
    shallow = tmp_path / "shallow"
    run("git", "clone", "--quiet", "--depth=1", ROOT.as_uri(), shallow)
    with pytest.raises(pytest.fail.Exception, match=r"shallow clone.*git fetch --unshallow"):
        require_history(shallow)
    require_history(ROOT)  # and the checkout under test is not one
