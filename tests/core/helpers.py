"""Small models and data shared by the core tests."""

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
