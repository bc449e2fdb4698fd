"""Seeding and capturing random number generator state."""

import random

import numpy
import pytest
import torch

from trainwright import Fabric, capture_rng_state, restore_rng_state, seed_everything


def draw():
    return (random.random(), numpy.random.rand(), torch.rand(1).item())


def test_seed_everything_makes_every_generator_repeat():
    """The same seed gives the same draws from Python, NumPy and torch; another seed does not."""
    assert seed_everything(7) == 7
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert all(a != b for a, b in zip(draw(), first, strict=True))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True, None])
def test_invalid_seeds_are_rejected(seed):
    """A seed outside [0, 2**32 - 1] or not an integer raises ValueError naming it."""
    with pytest.raises(ValueError, match=f"seed={seed!r} is not an integer between 0 and {2**32 - 1}"):
        seed_everything(seed)


def test_rng_state_survives_a_checkpoint(tmp_path):
    """RNG state captured into a checkpoint and restored makes the generators continue identically."""
    seed_everything(3)
    draw()
    fabric = Fabric(accelerator="cpu")
    fabric.save(tmp_path / "rng.ckpt", {"rng": capture_rng_state()})
    expected = [draw() for _ in range(3)]
    seed_everything(99)
    restore_rng_state(fabric.load(tmp_path / "rng.ckpt")["rng"])
    assert [draw() for _ in range(3)] == expected
