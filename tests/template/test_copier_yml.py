"""copier.yml itself: the settings the brief requires, and a core pin in step with core/."""

from __future__ import annotations

import keyword
import re
import sys

import yaml

from tests.template.helpers import ROOT

CONFIG = yaml.safe_load((ROOT / "copier.yml").read_text(encoding="utf-8"))
QUESTIONS = {name: spec for name, spec in CONFIG.items() if not name.startswith("_")}


def core_version() -> str:
    text = (ROOT / "core" / "src" / "trainwright" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def test_the_core_pin_matches_the_core_version():
    """The template's core version, which the index pin uses, is exactly the version that core/ declares."""
    assert QUESTIONS["core_version"]["when"] is False
    assert QUESTIONS["core_version"]["default"] == core_version()
    assert QUESTIONS["core_requirement"]["when"] is False
    assert "trainwright=={{ core_version }}" in QUESTIONS["core_requirement"]["default"]


def test_settings_need_no_trust():
    """No tasks, no Jinja extensions; the template lives in template/ and needs copier 9.11+."""
    assert "_tasks" not in CONFIG
    assert "_jinja_extensions" not in CONFIG
    assert CONFIG["_subdirectory"] == "template"
    assert CONFIG["_min_copier_version"] == "9.11"
    assert "_message_after_copy" in CONFIG


def test_every_question_has_help_and_a_default():
    """Every asked question has help and a default, so `copier copy --defaults` works."""
    asked = {name: spec for name, spec in QUESTIONS.items() if spec.get("when", True) is not False}
    assert set(asked) == {
        "project_name", "distribution_name", "package_name", "description", "author_name", "author_email",
        "license", "callbacks", "loggers", "accelerator", "precision", "task", "distributed", "ci", "core_source",
    }  # fmt: skip
    for name, spec in asked.items():
        assert spec.get("help"), name
        assert "default" in spec, name


def test_reserved_names_cover_the_standard_library():
    """Every lowercase top-level standard-library module is a reserved package name."""
    reserved = set(QUESTIONS["reserved_package_names"]["default"])
    stdlib = {name for name in sys.stdlib_module_names if not name.startswith("_") and name.islower()}
    assert stdlib <= reserved
    assert {"torch", "trainwright", "test"} <= reserved
    assert not reserved & set(keyword.kwlist)  # keywords are rejected by their own, clearer message
