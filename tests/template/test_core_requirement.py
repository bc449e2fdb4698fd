"""Where a generated project gets the trainwright core: the requirement copier renders for each kind
of template source, and that pip resolves it with nothing installed by hand.

The template (copier.yml, template/ and core/ of the working tree) is committed into a throwaway
git repository whose path holds a space. Remote sources are real git URLs that git's
`url.<base>.insteadOf` setting sends to that repository, so copier and pip clone them as they would
from a host, offline. pip runs with `--dry-run --no-build-isolation`: it clones and builds the
core's metadata, and installs nothing.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.template.helpers import ROOT, render, run
from tests.template.test_copier_yml import core_version

pytestmark = pytest.mark.slow

# The source as a user types it, and the repository URL that pip gets in the requirement.
REMOTE_SOURCES = {
    "gh:someone/trainwright": "git+https://github.com/someone/trainwright.git",
    "https://example.com/someone/trainwright.git": "git+https://example.com/someone/trainwright.git",
    "git+https://example.com/someone/trainwright": "git+https://example.com/someone/trainwright",
    "git@github.com:someone/trainwright.git": "git+ssh://git@github.com/someone/trainwright.git",
    "deploy@example.com:team/trainwright.git": "git+ssh://deploy@example.com/team/trainwright.git",
}


def git(cwd: Path, *args: str) -> str:
    return run("git", *args, cwd=cwd).stdout.strip()


def copy_template(dst: Path) -> Path:
    """copier.yml, template/ and core/ of the working tree, as a plain folder."""
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".ruff_cache", "*.egg-info")
    shutil.copy(ROOT / "copier.yml", dst / "copier.yml")
    for folder in ("template", "core"):
        shutil.copytree(ROOT / folder, dst / folder, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    """The template committed into its own git repository, at a path with a space in it."""
    repo = copy_template(tmp_path_factory.mktemp("src") / "template repo")
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, *identity, "commit", "-q", "-m", "template")
    return repo


@pytest.fixture(scope="module")
def offline_env(template_repo, tmp_path_factory) -> dict[str, str]:
    """The environment for copier and pip in which each remote URL they clone is template_repo."""
    home = tmp_path_factory.mktemp("home")
    # The URLs pip clones, and the scp-like ones that copier clones (it expands gh: to https itself).
    urls = [url.removeprefix("git+") for url in REMOTE_SOURCES.values()]
    urls += [source for source in REMOTE_SOURCES if "@" in source and "://" not in source]
    rules = "".join(f"\tinsteadOf = {url}\n" for url in urls)
    (home / "gitconfig").write_text(f'[url "{template_repo}"]\n{rules}', encoding="utf-8")
    return {**os.environ, "GIT_CONFIG_GLOBAL": str(home / "gitconfig"), "COPIER_CACHE_DIR": str(home / "copier")}


def requirement_of(project: Path) -> str:
    """The project's requirement on the core, as written in its pyproject.toml."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    (requirement,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("trainwright")]
    return requirement


def pip_resolves(requirement: str | Path, tmp_path: Path, env: dict | None = None) -> dict:
    """What `pip install <requirement>` would install for the core, from pip's --dry-run report."""
    report = tmp_path / "pip-report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation", "--quiet"]
    run(*command, "--disable-pip-version-check", "--report", report, requirement, env=env, timeout=300)
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    (core,) = [item for item in installs if item["metadata"]["name"] == "trainwright"]
    return core


@pytest.fixture(scope="module")
def remote_copies(template_repo, offline_env, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The core requirement rendered from each remote source by `copier copy` as a user runs it, and
    what copier printed."""
    copies = {}
    for source in REMOTE_SOURCES:
        project = tmp_path_factory.mktemp("remote") / "project"
        result = run(
            sys.executable, "-m", "copier", "copy", "--defaults", "--vcs-ref=HEAD", source, project, env=offline_env
        )
        copies[source] = requirement_of(project), result.stdout + result.stderr
    return copies


@pytest.mark.parametrize("source", list(REMOTE_SOURCES))
def test_a_remote_source_gives_a_reference_to_its_repository_at_the_rendered_commit(
    source, remote_copies, template_repo
):
    """gh: shorthands, https, git+https and scp-like ssh sources become pip's git+ URL, pinned to the commit."""
    commit = git(template_repo, "rev-parse", "HEAD")
    requirement, _ = remote_copies[source]
    assert requirement == f"trainwright @ {REMOTE_SOURCES[source]}@{commit}#subdirectory=core"


@pytest.mark.parametrize("source", ["gh:someone/trainwright", "git@github.com:someone/trainwright.git"])
def test_pip_resolves_a_remote_reference_to_the_templates_core(
    source, remote_copies, template_repo, offline_env, tmp_path
):
    """pip clones the repository the requirement names, checks out the commit and finds the core at its version,
    which carries that commit."""
    requirement, _ = remote_copies[source]
    core = pip_resolves(requirement, tmp_path, env=offline_env)
    commit = git(template_repo, "rev-parse", "HEAD")
    assert core["metadata"]["version"] == f"{core_version()}+g{commit}"  # an untagged commit: core/build_version.py
    assert core["download_info"]["vcs_info"]["commit_id"] == commit
    assert core["download_info"]["subdirectory"] == "core"


def test_a_local_checkout_gives_a_file_reference_that_pip_installs_with_the_project(template_repo, tmp_path):
    """From an absolute path, `pip install project` would fetch the core from that checkout at the rendered commit."""
    project = render(tmp_path / "project", src=template_repo, vcs_ref="HEAD")
    commit = git(template_repo, "rev-parse", "HEAD")
    url = template_repo.as_uri().replace("file://", "file://localhost", 1)  # as_uri writes the space as %20
    assert requirement_of(project) == f"trainwright @ git+{url}@{commit}#subdirectory=core"

    core = pip_resolves(project, tmp_path)
    assert core["metadata"]["version"] == f"{core_version()}+g{commit}"
    assert core["download_info"]["vcs_info"]["commit_id"] == commit


def test_a_folder_that_is_not_a_git_repository_gives_a_reference_to_its_core_folder(tmp_path):
    """From a plain folder the project requires file://<folder>/core, which pip builds as it is."""
    folder = copy_template(tmp_path / "plain folder")
    project = render(tmp_path / "project", src=folder, vcs_ref=None)
    assert requirement_of(project) == f"trainwright @ {(folder / 'core').as_uri()}"
    assert "_commit" not in (project / ".copier-answers.yml").read_text(encoding="utf-8")

    core = pip_resolves(requirement_of(project), tmp_path)
    assert core["metadata"]["version"] == core_version()
    assert core["download_info"]["url"] == (folder / "core").as_uri()


def test_core_source_index_pins_the_release(template_repo, tmp_path):
    """core_source=index gives trainwright==<the core's version>, and the answer is recorded for updates."""
    project = render(tmp_path / "project", src=template_repo, vcs_ref="HEAD", core_source="index")
    assert requirement_of(project) == f"trainwright=={core_version()}"
    assert "core_source: index" in (project / ".copier-answers.yml").read_text(encoding="utf-8")


def test_a_relative_path_is_refused_unless_the_core_comes_from_the_index(template_repo, tmp_path, monkeypatch):
    """A relative source fails core_source=template with advice to give the absolute path, writes nothing,
    and renders with core_source=index."""
    monkeypatch.chdir(template_repo.parent)
    with pytest.raises(ValueError, match="core_source") as caught:
        render(tmp_path / "refused", src=template_repo.name, vcs_ref="HEAD")
    assert f'"{template_repo.name}" is a relative path' in str(caught.value)
    assert "realpath" in str(caught.value)
    assert not (tmp_path / "refused").exists()

    project = render(tmp_path / "project", src=template_repo.name, vcs_ref="HEAD", core_source="index")
    assert requirement_of(project) == f"trainwright=={core_version()}"


def test_the_generated_project_builds_a_wheel_that_requires_the_core(template_repo, tmp_path):
    """`python -m build --wheel` of a generated project packages its code and carries the core requirement."""
    project = render(tmp_path / "project", src=template_repo, vcs_ref="HEAD", project_name="Fancy Trainer 2")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", project)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name == "fancy_trainer_2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(archive.read("fancy_trainer_2-0.1.0.dist-info/METADATA"))
    assert {"fancy_trainer_2/__main__.py", "fancy_trainer_2/trainer.py", "fancy_trainer_2/callbacks/timing.py"} <= names
    assert metadata["Name"] == "fancy-trainer-2"
    assert requirement_of(project) in metadata.get_all("Requires-Dist")


def test_the_message_after_copy_tells_how_to_install(remote_copies):
    """`copier copy` ends with the one-install steps and the core requirement, and no manual core install."""
    requirement, message = remote_copies["gh:someone/trainwright"]
    assert "pip install -e '.[test,plot]'" in message
    assert f"The project requires the core as: {requirement}" in message
    assert "pip install path/to/trainwright/core" not in message
    assert "python -m my_trainer fit" in message


def test_a_dirty_checkout_is_rendered_but_its_commit_is_nowhere_pip_can_fetch(template_repo, tmp_path):
    """Uncommitted changes in a local clone reach the project through a commit that exists only in
    copier's temporary clone (the documented behaviour), and the message after the copy says what to do."""
    dirty = tmp_path / "dirty clone"
    run("git", "clone", "--quiet", template_repo, dirty)
    with (dirty / "template" / "README.md.jinja").open("a", encoding="utf-8") as readme:
        readme.write("\nA line that was never committed.\n")
    copy = [sys.executable, "-m", "copier", "copy", "--defaults", "--vcs-ref=HEAD", dirty, tmp_path / "project"]
    result = run(*copy)

    assert "A line that was never committed." in (tmp_path / "project" / "README.md").read_text(encoding="utf-8")
    commit = requirement_of(tmp_path / "project").split("@")[-1].split("#")[0]
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=dirty, check=False)
    assert known.returncode != 0, "the rendered commit unexpectedly exists in the clone"
    message = " ".join((result.stdout + result.stderr).split())
    assert "If copier warned above that it included uncommitted changes" in message
    assert "commit them in the checkout, then copy again" in message
