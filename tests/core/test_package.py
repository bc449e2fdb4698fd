"""The package as installed: version, public names, and what importing it does (and doesn't do)."""

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.version import Version

import trainwright

ROOT = Path(__file__).resolve().parents[2]


def test_version_is_exposed_and_matches_the_distribution():
    """trainwright.__version__ is the release pip installed from core/pyproject.toml; a build from git adds
    the commit as a local label (X.Y.Z+g<commit>, core/build_version.py)."""
    installed = Version(importlib.metadata.version("trainwright"))
    assert installed.public == trainwright.__version__
    assert installed.local is None or re.fullmatch(r"g[0-9a-f]{40}", installed.local), installed
    pyproject = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == ["torch>=2.3"]
    extras = pyproject["project"]["optional-dependencies"]
    assert set(extras) == {"tensorboard", "mlflow", "wandb", "dev"}
    # The dev environment runs every logger's tests with real clients.
    assert {"tensorboard>=2.14", "wandb>=0.19", *extras["mlflow"]} <= set(extras["dev"])


def test_public_names_exist():
    """Every name in __all__ is importable from trainwright."""
    for name in trainwright.__all__:
        assert hasattr(trainwright, name), name


def test_import_is_side_effect_free():
    """Importing trainwright writes no environment variable, probes no device and imports nothing heavy (FSDP too)."""
    probe = """
import json, os, sys
before = dict(os.environ)
import torch
loaded_by_torch = set(sys.modules)
import trainwright
new = sorted(m for m in set(sys.modules) - loaded_by_torch if not m.startswith("trainwright"))
print(json.dumps({
    "env_changed": dict(os.environ) != before,
    "new_modules": new,
    "loaded_by_torch": sorted({m.split(".")[0] for m in loaded_by_torch}),
    "cuda_initialized": torch.cuda.is_initialized(),
}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["env_changed"] is False
    assert result["cuda_initialized"] is False
    # numpy is not on the list: torch itself imports it, so trainwright cannot add it.
    heavy_packages = {"tensorboard", "lightning", "matplotlib", "mlflow", "wandb", "sqlalchemy", "pandas", "scipy"}
    # Only what torch has not loaded already can show up as new; a package it loaded would pass unchecked.
    assert heavy_packages.isdisjoint(result["loaded_by_torch"])
    heavy = [m for m in result["new_modules"] if m.split(".")[0] in heavy_packages]
    assert heavy == []
    assert not any(m.startswith("torch.utils.tensorboard") for m in result["new_modules"])
    # FSDP, distributed checkpoints, DTensor and the compiler load only when a job uses them.
    lazy = ("torch.distributed.fsdp", "torch.distributed.checkpoint", "torch.distributed.tensor", "torch._dynamo")
    assert [m for m in result["new_modules"] if m.startswith(lazy)] == []
