"""Rendering the template into a temporary folder and importing the generated project from there."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from types import ModuleType

import copier

ROOT = Path(__file__).resolve().parents[1]


def render_project(dst: Path, package: str, **answers: object) -> Path:
    """Render the template's committed HEAD into ``dst`` as the package ``package``; return ``dst``.

    Every benchmark renders under its own package name: they share one process in ``run.py``,
    and a second project under a name already imported would run the first one's modules.
    ``answers`` are copier answers beyond the defaults (``task="language_model"``).

    Raises:
        ValueError: ``package`` is already imported from somewhere else.
    """
    loaded = sys.modules.get(package)
    if loaded is not None:
        raise ValueError(f"a package {package!r} is already imported (from {loaded.__file__}); render under a new name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copier's notes on a template without tags
        # HEAD, not the working tree: another engineer's half-written edit is no part of the measurement.
        data = {"package_name": package, **answers}
        copier.run_copy(str(ROOT), dst, defaults=True, vcs_ref="HEAD", quiet=True, data=data)
    sys.path.insert(0, str(dst / "src"))
    return dst


def project_module(package: str, name: str) -> ModuleType:
    """The generated project's module ``<package>.<name>`` (``name`` as ``"trainer"`` or ``"callbacks"``)."""
    return importlib.import_module(f"{package}.{name}")
