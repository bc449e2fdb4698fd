"""A project's name is for people; the names pip and Python use are derived from it."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from tests.template.helpers import render

# project_name -> (distribution_name, package_name) derived from it.
NAMES = {
    "Fancy Trainer 2": ("fancy-trainer-2", "fancy_trainer_2"),
    "Vision.Lab -- ResNet (v2)": ("vision-lab-resnet-v2", "vision_lab_resnet_v2"),
    "my-trainer": ("my-trainer", "my_trainer"),  # as projects generated before friendly names recorded it
}


@pytest.mark.parametrize("project_name", list(NAMES))
def test_the_distribution_and_package_names_are_derived_from_the_project_name(tmp_path, project_name):
    """The README's title is the name as given; pyproject.toml, the package folder and the answers use the
    derived names."""
    distribution, package = NAMES[project_name]
    project = render(tmp_path / "project", project_name=project_name)
    assert (project / "README.md").read_text(encoding="utf-8").startswith(f"# {project_name}\n")
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == distribution
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{package}"]
    assert (project / "src" / package / "__main__.py").is_file()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert (answers["project_name"], answers["distribution_name"], answers["package_name"]) == (
        project_name,
        distribution,
        package,
    )


def test_derived_names_can_be_overridden(tmp_path):
    """An explicit distribution_name and package_name win over the derived ones."""
    project = render(
        tmp_path / "project", project_name="Fancy Trainer 2", distribution_name="acme.fancy", package_name="fancy"
    )
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == "acme.fancy"
    assert (project / "src" / "fancy" / "trainer.py").is_file()
