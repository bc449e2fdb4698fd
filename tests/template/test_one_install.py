"""The one-install path, exactly as a new user takes it: `copier copy` from a `git clone` of this
repository, a fresh virtual environment holding only torch, `pip install -e <project>`, then
`python -m <package> fit --max-steps=3`; and after `copier update` to a commit that changed the
core without a version bump, the same install command brings that commit's core.

The clone holds this repository's last commit (not the working tree's uncommitted changes), and
the copy takes it as it is (`--vcs-ref=HEAD`) rather than the newest tag a clone may carry. pip
fetches the core from the clone, and the build tools, tqdm and the extras from the package index.
Both tests share one virtual environment (torch is installed once); the second removes what it
installed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.template.helpers import ROOT, run

pytestmark = pytest.mark.slow


IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
INSTALLED_CORE = """
import importlib.metadata as m, json
core = m.distribution("trainwright")
print(json.dumps({"version": core.version, **json.loads(core.read_text("direct_url.json"))}))
"""


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    """The Python of a fresh virtual environment holding only torch (pinned by constraints.txt)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", *PIP, "-c", ROOT / "constraints.txt", "torch", timeout=900)
    return venv / "bin" / "python"


def installed_core(python: Path) -> dict:
    """The installed core's version and its PEP 610 record (url, vcs_info, subdirectory)."""
    return json.loads(run(python, "-c", INSTALLED_CORE).stdout)


def test_copy_from_a_git_clone_then_one_pip_install_then_fit(python, tmp_path):
    """`pip install -e <project>` alone brings the core at the rendered commit, and the fit trains and prints
    only the project's own output."""
    clone = tmp_path / "trainwright"
    run("git", "clone", "--quiet", ROOT, clone)
    commit = run("git", "rev-parse", "HEAD", cwd=clone).stdout.strip()
    project = tmp_path / "fancy-trainer"
    copy = [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD"]
    run(*copy, "--data", "project_name=Fancy Trainer 2", clone, project, timeout=300)
    assert (project / "README.md").read_text(encoding="utf-8").startswith("# Fancy Trainer 2\n")

    installed = json.loads(run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check").stdout)
    assert "trainwright" not in {package["name"] for package in installed}

    run(python, *PIP, "-e", project, timeout=900)
    source = installed_core(python)
    assert source["url"] == clone.as_uri().replace("file://", "file://localhost", 1)
    assert source["vcs_info"]["commit_id"] == commit
    assert source["subdirectory"] == "core"

    run_dir = tmp_path / "run"
    result = run(python, "-m", "fancy_trainer_2", "fit", "--max-steps=3", f"--run-dir={run_dir}", cwd=tmp_path)
    assert result.stderr == ""
    assert "iteration time over 3 iterations" in result.stdout
    with (run_dir / "metrics.csv").open(newline="") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["3"]  # logged every 10 steps, and at the end
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_after_copier_update_the_same_install_brings_the_new_commits_core(python, tmp_path):
    """The template's repository changes the core without a version bump; after `copier update`, the documented
    `pip install -e '.[test,plot]'` replaces the installed core with the new commit's, and a fit's metadata.json
    and checkpoint name that commit."""
    clone = tmp_path / "trainwright"
    run("git", "clone", "--quiet", ROOT, clone)
    project = tmp_path / "project"
    run(sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD", clone, project, timeout=300)
    run("git", "init", "-q", "-b", "main", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", *IDENTITY, "commit", "-q", "-m", "generated", cwd=project)
    try:
        run(python, *PIP, "-e", project, timeout=900)
        old = installed_core(python)

        probe = clone / "core" / "src" / "trainwright" / "_update_probe.py"
        probe.write_text('"""A change of the core that does not bump its version."""\n', encoding="utf-8")
        run("git", "add", "-A", cwd=clone)
        run("git", *IDENTITY, "commit", "-q", "-m", "core: a change without a version bump", cwd=clone)
        new = run("git", "rev-parse", "HEAD", cwd=clone).stdout.strip()
        assert old["vcs_info"]["commit_id"] != new

        update = [sys.executable, "-m", "copier", "update", "--defaults", "--quiet", "--vcs-ref=HEAD"]
        run(*update, cwd=project, timeout=300)
        run(python, *PIP, "-e", ".[test,plot]", cwd=project, timeout=900)  # as docs/updating.md says
        core = installed_core(python)
        assert core["vcs_info"]["commit_id"] == new
        assert core["version"] == f"{old['version'].split('+')[0]}+g{new}"
        run(python, "-c", "import trainwright._update_probe", cwd=tmp_path)  # the new commit's code is what runs

        run_dir = tmp_path / "run"
        run(python, "-m", "my_trainer", "fit", "--max-steps=1", f"--run-dir={run_dir}", cwd=tmp_path)
        metadata = json.loads((run_dir / "metadata.json").read_text(encoding="utf-8"))
        assert metadata["trainwright_build"]["commit"] == new
        assert metadata["trainwright_build"]["version"] == core["version"]
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["metadata"]["trainwright_build"]["commit"] == new
    finally:  # leave the shared environment with torch alone, as the other test expects it
        uninstall = [python, "-m", "pip", "uninstall", "--quiet", "--yes", "my-trainer", "trainwright"]
        subprocess.run(uninstall, capture_output=True, timeout=300, check=False)
