"""Shared test configuration."""

import pytest
import torch
from hypothesis import settings

# Property tests run without Hypothesis's 200 ms per-example deadline: on a loaded 2-core machine
# an example can take longer for reasons that are not the code's (and a first example compiles
# plans and analyses signatures). The example counts still bound each test.
settings.register_profile("trainwright", deadline=None)
settings.load_profile("trainwright")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` cleanly where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_report_header() -> str:
    """The scenario matrix's seed, at the top of every run (tests/template/test_scenarios.py draws with it)."""
    from tests.template.scenario_seed import SEED

    return f"scenario matrix: seed {SEED} (TRAINWRIGHT_SCENARIO_SEED={SEED} repeats its draw)"
