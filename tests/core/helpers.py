"""Small models and data shared by the core tests, and the dev extra's tracker clients."""

import importlib
import types

import torch
from torch.utils.data import DataLoader, TensorDataset


def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def regression_data(n: int = 256, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)  # (n, 4)
    y = x.sum(dim=1, keepdim=True) + 0.05 * torch.randn(n, 1, generator=generator)  # (n, 1)
    return TensorDataset(x, y)


def loader(batch_size: int = 32, seed: int = 0) -> DataLoader:
    return DataLoader(regression_data(seed=seed), batch_size=batch_size, shuffle=False)


def dev_dependency(name: str) -> types.ModuleType:
    """Import ``name``, a dependency of ``core[dev]``; its absence fails the tests that need it, never skips them.

    Raises:
        ImportError: ``name`` is not installed; the message says how to install the dev extra.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"{name} is missing, and core[dev] requires it for these tests: install the dev environment "
            f"with `make .venv/.installed` (or pip install -e 'core[dev]' -c constraints.txt)"
        ) from error
