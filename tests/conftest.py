"""Shared test configuration."""

import os

import pytest
import torch
from hypothesis import settings

# Property tests run without Hypothesis's 200 ms per-example deadline: on a loaded 2-core machine
# an example can take longer for reasons that are not the code's (and a first example compiles
# plans and analyses signatures). The example counts still bound each test.
settings.register_profile("trainwright", deadline=None)
settings.load_profile("trainwright")


# `make test` runs the suite on two pytest-xdist workers (`pytest -n 2 --no-loadscope-reorder`).
# The modules that take longest (each runs generated projects' own suites or many trainings in
# subprocesses) go first, so that the two workers do not end with one long module on one of them.
HEAVIEST_FIRST = [
    "tests/template/test_generated_projects.py",
    "tests/template/test_huggingface.py",
    "tests/template/test_image_classifier.py",
    "tests/template/test_own_model.py",
    "tests/template/test_scenarios.py",
    "tests/template/test_releases.py",
    "tests/template/test_one_install.py",
    "tests/template/test_update.py",
    "tests/core/test_fsdp.py",
    "tests/core/test_ddp.py",
]
# Modules whose tests share a module-scoped fixture that takes long to make (a torchrun job, a
# clone of the history, a virtual environment, a built wheel, rendered projects): each runs on
# one worker, so that the fixture is made once. Every other test goes to whichever worker is free.
ONE_WORKER = {
    "tests/core/test_ddp.py",
    "tests/core/test_distribution.py",
    "tests/core/test_fsdp.py",
    "tests/core/test_mlflow_logger.py",
    "tests/template/test_core_requirement.py",
    "tests/template/test_make_release.py",
    "tests/template/test_one_install.py",
    "tests/template/test_quiet_runs.py",
    "tests/template/test_releases.py",
    "tests/template/test_render_matrix.py",
}


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` cleanly where no CUDA device is present; on xdist workers, heaviest first."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller schedules in this order
        heavy = {path: rank for rank, path in enumerate(HEAVIEST_FIRST)}
        items.sort(key=lambda item: heavy.get(module_of(item), len(heavy)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def module_of(item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With -n and the default --dist=load: each module of ONE_WORKER is one unit of work, every other test one.

    (``--dist loadgroup`` would do this with markers, but pytest-xdist 3.8 groups by renaming the
    node ids, which pytest 9 no longer lets it do.)
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixturesOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid

    return SharedFixturesOnOneWorker(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Each xdist worker draws the scenario matrix with the controller's seed (the header's), so that both
    collect the same tests."""
    from tests.template.scenario_seed import SEED

    node.workerinput["scenario_seed"] = SEED


def pytest_configure(config):
    seed = getattr(config, "workerinput", {}).get("scenario_seed")
    if seed is not None:  # this worker's own environment, read when tests/template/scenario_seed.py is imported
        os.environ["TRAINWRIGHT_SCENARIO_SEED"] = str(seed)


def pytest_report_header() -> str:
    """The scenario matrix's seed, at the top of every run (tests/template/test_scenarios.py draws with it)."""
    from tests.template.scenario_seed import SEED

    return f"scenario matrix: seed {SEED} (TRAINWRIGHT_SCENARIO_SEED={SEED} repeats its draw)"
