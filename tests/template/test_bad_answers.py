"""A bad answer stops the copy with a message naming the question, and leaves no project behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.template.helpers import ROOT, render

# (question, bad answer, words the message must contain). One line per case.
BAD_ANSWERS = [
    ("project_name", "", "must not be empty"),
    ("project_name", "   ", "must not be empty"),
    ("project_name", "Fancy\nTrainer", "one line"),
    ("distribution_name", "my trainer!", "characters pip does not allow"),
    ("distribution_name", "-trainer", "start and end with a letter or digit"),
    ("distribution_name", "", "must not be empty"),
    ("package_name", "My-Trainer", "lowercase Python identifier"),
    ("package_name", "9lives", "lowercase Python identifier"),
    ("package_name", "class", "Python keyword"),
    ("package_name", "torch", "would shadow"),
    ("package_name", "trainwright", "would shadow"),
    ("package_name", "test", "would shadow"),
    ("package_name", "json", "would shadow"),
    ("package_name", "café", "lowercase Python identifier"),
    ("author_email", "not-an-email", "author_email"),
    ("license", "GPL-3.0", "license"),
    ("callbacks", ["timing", "tensorboard"], "callbacks"),
    ("loggers", ["neptune"], "loggers"),
    ("precision", "fp17", "precision"),
    ("accelerator", "tpu", "accelerator"),
    ("task", "segmentation", "task"),
    ("ci", "gitlab", "ci"),
    ("core_source", "pypi", "core_source"),
]


@pytest.mark.parametrize(("question", "answer", "words"), BAD_ANSWERS, ids=[f"{q}={a!r}" for q, a, _ in BAD_ANSWERS])
def test_a_bad_answer_names_the_question_and_writes_nothing(tmp_path, question, answer, words):
    """The API raises ValueError naming the question; the destination does not exist afterwards."""
    dst = tmp_path / "project"
    with pytest.raises(ValueError, match=question) as caught:
        render(dst, **{question: answer})
    assert words in str(caught.value)
    assert not dst.exists()


def test_the_cli_exits_non_zero_and_writes_nothing(tmp_path):
    """`copier copy --defaults -d package_name=os` exits non-zero, names the question, and creates nothing."""
    dst = tmp_path / "project"
    command = [sys.executable, "-m", "copier", "copy", "--defaults", "--vcs-ref=HEAD", "-d", "package_name=os"]
    result = subprocess.run([*command, str(ROOT), str(dst)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "package_name" in result.stderr
    assert not dst.exists()


def test_a_derived_package_name_is_validated_too(tmp_path):
    """A project name whose derived package name is invalid (a leading digit) is refused."""
    with pytest.raises(ValueError, match="package_name"):
        render(tmp_path / "project", project_name="3d-trainer")
    assert not (tmp_path / "project").exists()


def test_a_project_name_with_nothing_to_derive_a_distribution_name_from_is_refused(tmp_path):
    """A project name without a letter or digit leaves the derived distribution name empty, which is refused."""
    with pytest.raises(ValueError, match="distribution_name must not be empty") as caught:
        render(tmp_path / "project", project_name="???")
    assert '"???"' in str(caught.value)
    assert not (tmp_path / "project").exists()
