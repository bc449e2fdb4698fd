"""The template skeleton renders from the checkout and records its answers for `copier update`."""

from pathlib import Path

import copier
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_skeleton_renders_an_answers_file(tmp_path):
    """copier copy --defaults renders, and .copier-answers.yml names the source for later updates."""
    copier.run_copy(str(ROOT), tmp_path / "project", defaults=True, vcs_ref="HEAD", quiet=True)
    answers = yaml.safe_load((tmp_path / "project" / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(ROOT)
    assert "_commit" in answers
