"""Shared test configuration."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` cleanly where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
