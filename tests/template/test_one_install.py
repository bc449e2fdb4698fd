"""The one-install path, exactly as a new user takes it: `copier copy` from a `git clone` of this
repository, a fresh virtual environment holding only torch, `pip install -e <project>`, then
`python -m <package> fit --max-steps=3`.

The clone holds this repository's last commit (not the working tree's uncommitted changes), and
the copy takes it as it is (`--vcs-ref=HEAD`) rather than the newest tag a clone may carry. pip
fetches the core from the clone, and the build tools and tqdm from the package index.
"""

from __future__ import annotations

import csv
import json
import sys

import pytest

from tests.template.helpers import ROOT, run

pytestmark = pytest.mark.slow


def test_copy_from_a_git_clone_then_one_pip_install_then_fit(tmp_path):
    """`pip install -e <project>` alone brings the core at the rendered commit, and the fit trains and prints
    only the project's own output."""
    clone = tmp_path / "trainwright"
    run("git", "clone", "--quiet", ROOT, clone)
    commit = run("git", "rev-parse", "HEAD", cwd=clone).stdout.strip()
    project = tmp_path / "fancy-trainer"
    copy = [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--vcs-ref=HEAD"]
    run(*copy, "--data", "project_name=Fancy Trainer 2", clone, project, timeout=300)
    assert (project / "README.md").read_text(encoding="utf-8").startswith("# Fancy Trainer 2\n")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, "-c", ROOT / "constraints.txt", "torch", timeout=900)
    installed = json.loads(run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check").stdout)
    assert "trainwright" not in {package["name"] for package in installed}

    run(*pip, "-e", project, timeout=900)
    direct_url = "import importlib.metadata as m; print(m.distribution('trainwright').read_text('direct_url.json'))"
    source = json.loads(run(python, "-c", direct_url).stdout)
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
