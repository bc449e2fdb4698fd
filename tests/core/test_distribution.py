"""The core as it would be published: `python -m build` makes a wheel and an sdist that pass
`twine check`, carry py.typed and the license, and install and import in a fresh environment.

Both are built without build isolation, from the hatchling and build in .venv, so nothing is
downloaded.
"""

from __future__ import annotations

import email
import runpy
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import trainwright

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RELEASE = trainwright.__version__
# What a build of this checkout is: the release at its tagged commit, else release+g<commit>
# (core/build_version.py), which is what the files are named by.
VERSION = runpy.run_path(str(ROOT / "core" / "build_version.py"))["__version__"]


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False)
    shown = " ".join(map(str, command))
    assert result.returncode == 0, f"{shown} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The folder holding the core's sdist and wheel, built from core/."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT / "core")
    return out


def test_build_makes_one_wheel_and_one_sdist_of_the_core(dist):
    """`python -m build` writes trainwright-<version>.tar.gz and trainwright-<version>-py3-none-any.whl."""
    assert sorted(p.name for p in dist.iterdir()) == [
        f"trainwright-{VERSION}-py3-none-any.whl",
        f"trainwright-{VERSION}.tar.gz",
    ]


def test_twine_check_passes_on_both(dist):
    """`twine check --strict` accepts the metadata and the README of the wheel and of the sdist."""
    result = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_carries_py_typed_the_license_and_torch_as_its_only_dependency(dist):
    """The wheel holds the package with py.typed, the MIT license file, and requires torch alone outside extras."""
    with zipfile.ZipFile(dist / f"trainwright-{VERSION}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
        metadata = email.message_from_bytes(wheel.read(f"trainwright-{VERSION}.dist-info/METADATA"))
        license_text = wheel.read(f"trainwright-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert {"trainwright/__init__.py", "trainwright/fabric.py", "trainwright/py.typed"} <= names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "template/"))]
    assert metadata["Name"] == "trainwright"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert "MIT License" in license_text
    requires = metadata.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == ["torch>=2.3"]


def test_the_sdist_holds_the_sources_the_license_and_the_readme(dist):
    """The sdist holds what rebuilding the wheel needs: pyproject.toml, README.md, LICENSE, the package, py.typed."""
    with tarfile.open(dist / f"trainwright-{VERSION}.tar.gz") as sdist:
        names = {name.removeprefix(f"trainwright-{VERSION}/") for name in sdist.getnames()}
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "build_version.py"} <= names
    assert {"src/trainwright/__init__.py", "src/trainwright/py.typed"} <= names


def test_the_wheel_installs_into_a_fresh_environment_and_imports(dist, tmp_path):
    """Installed alone into a new venv, the wheel imports from there, reports its version and trains a step.

    The venv gets torch from this environment through a path file, so the test does not unpack
    torch again; path files are not read from that folder, so .venv's editable core stays invisible.
    """
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    torch_site = Path(torch.__file__).parents[1]
    (purelib / "torch_from_dev_env.pth").write_text(f"{torch_site}\n", encoding="utf-8")
    wheel = dist / f"trainwright-{VERSION}-py3-none-any.whl"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel)

    probe = """
import importlib.metadata, pathlib, torch, trainwright
from trainwright import Fabric
fabric = Fabric(accelerator="cpu")
model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = fabric.setup(model, optimizer)
fabric.backward(model(torch.ones(4, 2)).sum())
optimizer.step()
package = pathlib.Path(trainwright.__file__).parent
print(package)
print(trainwright.__version__, importlib.metadata.version("trainwright"), (package / "py.typed").is_file())
"""
    lines = run(python, "-c", probe, cwd=tmp_path).stdout.split()
    assert Path(lines[0]).is_relative_to(purelib), "trainwright was imported from outside the fresh venv"
    assert lines[1:] == [RELEASE, VERSION, "True"]


def test_a_wheel_built_from_the_sdist_keeps_its_version(dist, tmp_path):
    """Outside git, the sdist's PKG-INFO gives the wheel the version the sdist was built with (commit included)."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    run(*command, "--wheel-dir", tmp_path, dist / f"trainwright-{VERSION}.tar.gz", cwd=tmp_path)
    assert [p.name for p in tmp_path.glob("*.whl")] == [f"trainwright-{VERSION}-py3-none-any.whl"]
