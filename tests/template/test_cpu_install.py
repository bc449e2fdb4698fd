"""A user on a machine without a GPU is told, before installing, how to get the CPU build of torch."""

from __future__ import annotations

import warnings

import copier

from tests.template.helpers import ROOT

CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def test_the_readme_and_the_message_after_copy_give_the_cpu_torch_command_before_the_install(tmp_path, capsys):
    """Both name the one command that installs torch's CPU build, and put it before `pip install -e`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", copier.errors.DirtyLocalWarning)
        copier.run_copy(str(ROOT), tmp_path / "project", defaults=True, vcs_ref="HEAD", quiet=False)
    message = capsys.readouterr().err
    readme = (tmp_path / "project" / "README.md").read_text(encoding="utf-8")
    for text in (message, readme):
        assert CPU_TORCH in text
        assert text.index(CPU_TORCH) < text.index("pip install -e '.[test,plot]'")
