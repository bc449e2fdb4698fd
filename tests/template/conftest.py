"""Shared by the template's tests: the scenario matrix's seed, printed in the report's header."""

from __future__ import annotations

from tests.template.scenario_seed import SEED


def pytest_report_header() -> str:
    return f"scenario matrix: seed {SEED} (TRAINWRIGHT_SCENARIO_SEED={SEED} repeats its draw)"
