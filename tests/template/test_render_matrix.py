"""Every callback alone and all together, both tasks, both loggers, distributed on and off:
each renders completely, parses, compiles, is ruff-clean and free of import circles, with exactly the files
its answers ask for."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.import_graph import import_cycles, import_graph
from tests.template.helpers import ALL_CALLBACKS, render, ruff

CASES = {
    "defaults": {},
    **{f"only-{name}": {"callbacks": [name]} for name in ALL_CALLBACKS},
    "no-callbacks": {"callbacks": []},
    "everything": {
        "callbacks": ALL_CALLBACKS,
        "loggers": ["csv", "tensorboard"],
        "distributed": True,
        "ci": "github",
        "license": "Apache-2.0",
    },
    "regression-tensorboard": {"task": "regression", "loggers": ["tensorboard"], "license": "BSD-3-Clause"},
    "custom-names": {
        "project_name": "Vision.Lab",
        "package_name": "vlab",
        "license": "Proprietary",
        "precision": "bf16-mixed",
    },
}


def answers_of(case: dict) -> dict:
    defaults = {"callbacks": ["timing", "lr_monitor", "profiler", "checkpoint", "progress_bar"], "loggers": ["csv"]}
    defaults |= {
        "distributed": False,
        "ci": "none",
        "license": "MIT",
        "package_name": "my_trainer",
        "task": "classification",
    }
    return defaults | case


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def project(request, tmp_path_factory) -> tuple[Path, dict]:
    case = CASES[request.param]
    return render(tmp_path_factory.mktemp(request.param) / "project", **case), answers_of(case)


def text_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


def test_nothing_is_left_unrendered(project):
    """No Jinja delimiter survives in any file or file name."""
    root, _ = project
    for path in text_files(root):
        assert "{{" not in str(path), path
        assert "{%" not in str(path), path
        text = path.read_text(encoding="utf-8")
        for marker in ("{{", "{%", "{#", "%}"):
            assert marker not in text, f"{path.relative_to(root)} contains {marker!r}"


def test_pyproject_parses_and_depends_on_what_the_answers_need(project):
    """pyproject.toml is valid TOML; tqdm and tensorboard are dependencies only when chosen."""
    root, answers = project
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    deps = pyproject["project"]["dependencies"]
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert any(d.startswith("trainwright") for d in deps)
    assert any(d.startswith("tqdm") for d in deps) == ("progress_bar" in answers["callbacks"])
    assert any("[tensorboard]" in d for d in deps) == ("tensorboard" in answers["loggers"])
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{answers['package_name']}"]


def test_conditional_files_follow_the_answers(project):
    """Each callback's module and test exist exactly when it was chosen; so do the scripts, CI and LICENSE."""
    root, answers = project
    package = root / "src" / answers["package_name"]
    for name in ALL_CALLBACKS:
        chosen = name in answers["callbacks"]
        assert (package / "callbacks" / f"{name}.py").exists() == chosen, name
        assert (root / "tests" / f"test_{name}.py").exists() == chosen, name
    assert (root / "scripts" / "launch.sh").exists() == answers["distributed"]
    assert (root / "scripts" / "slurm.sbatch").exists() == answers["distributed"]
    assert (root / "scripts").exists() == answers["distributed"]  # no empty folder left behind
    assert (root / ".github").exists() == (answers["ci"] == "github")
    assert (root / "LICENSE").exists() == (answers["license"] != "Proprietary")
    assert (root / "tests" / "test_distributed.py").exists() == answers["distributed"]
    assert (root / "tests" / "ddp_worker.py").exists() == answers["distributed"]
    if answers["distributed"]:
        assert (root / "scripts" / "launch.sh").stat().st_mode & 0o111, "launch.sh must be executable"
        for script in ("launch.sh", "slurm.sbatch"):  # bash parses them (the tests run launch.sh itself)
            subprocess.run(["bash", "-n", root / "scripts" / script], check=True, capture_output=True)


def test_the_tree_compiles(project):
    """Every Python file compiles."""
    root, _ = project
    for path in root.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_ruff_is_clean(project):
    """`ruff check` and `ruff format --check` pass on the generated project, with its own settings."""
    root, _ = project
    ruff("check", ".", cwd=root)
    ruff("format", "--check", ".", cwd=root)


def test_the_package_has_no_import_circles(project):
    """No module of the generated package imports, directly or through others, a module that imports it
    (an import under ``if TYPE_CHECKING:`` names a type and does not count)."""
    root, answers = project
    package = root / "src" / answers["package_name"]
    graph = import_graph(package)
    assert f"{answers['package_name']}.trainer" in graph, sorted(graph)
    cycles = import_cycles(package)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)
