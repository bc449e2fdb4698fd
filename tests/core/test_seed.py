"""Seeding and capturing random number generator state."""

import random

import numpy
import pytest
import torch

from trainwright import Fabric, capture_rng_state, restore_rng_state, seed_everything, select_rng_state


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


def test_rank_zero_keeps_the_streams_of_a_plain_seed():
    """seed_everything(s, rank=0) draws exactly what seeding every generator with s draws."""
    random.seed(11)
    numpy.random.seed(11)
    torch.manual_seed(11)
    plain = [draw() for _ in range(3)]
    assert seed_everything(11, rank=0) == 11
    assert [draw() for _ in range(3)] == plain


def test_every_rank_gets_its_own_repeatable_streams():
    """Ranks 0-7 draw different numbers from every generator, and each rank repeats its own."""
    draws = {}
    for rank in range(8):
        seed_everything(5, rank=rank)
        draws[rank] = draw()
    for generator in range(3):
        assert len({d[generator] for d in draws.values()}) == 8, generator
    seed_everything(5, rank=3)
    assert draw() == draws[3]


def test_neighbouring_seeds_and_ranks_do_not_share_streams():
    """Seed 1 on rank 0 and seed 0 on rank 1 draw different numbers (the rank is not added to the seed)."""
    seed_everything(1, rank=0)
    first = draw()
    seed_everything(0, rank=1)
    assert all(a != b for a, b in zip(draw(), first, strict=True))


@pytest.mark.parametrize("rank", [-1, 1.0, "1", True, None])
def test_invalid_ranks_are_rejected(rank):
    """A rank that is not an integer of at least 0 raises ValueError naming it."""
    with pytest.raises(ValueError, match=f"rank={rank!r} is not an integer of at least 0"):
        seed_everything(3, rank=rank)


def test_fabric_seeds_its_own_rank_and_gathers_one_object_per_process():
    """On one process, fabric.seed_everything is seed_everything(seed) and all_gather_object is [obj]."""
    fabric = Fabric(accelerator="cpu")
    assert fabric.seed_everything(9) == 9
    first = draw()
    seed_everything(9)
    assert draw() == first
    state = {"a": [1, 2]}
    assert fabric.all_gather_object(state) == [state]


STATES = [{"rank": 0}, {"rank": 1}, {"rank": 2}]


@pytest.mark.parametrize(
    ("saved", "rank", "expected"),
    [
        (STATES, 1, {"rank": 1}),  # the same number of processes: each rank its own
        (STATES, 2, {"rank": 2}),
        (STATES[:2], 2, None),  # more processes now: a new rank keeps its own seeding
        (STATES, 0, {"rank": 0}),  # fewer processes now: the states of gone ranks are dropped
        ({"rank": 0}, 0, {"rank": 0}),  # a single state (trainwright 0.4) is rank 0's
        ({"rank": 0}, 1, None),  # ... and is not copied to the other ranks
    ],
)
def test_select_rng_state_gives_each_rank_its_own_or_none(saved, rank, expected):
    """Each rank takes its own saved state; a rank with none saved, or a single 0.4 state on rank > 0, gets None."""
    assert select_rng_state(saved, rank) == expected


@pytest.mark.parametrize(("saved", "message"), [(b"state", "got a bytes"), ([{"rank": 0}, 3], "rank 1 is a int")])
def test_select_rng_state_rejects_what_is_not_a_state(saved, message):
    """Something other than a dict or a list of dicts raises TypeError naming what it got."""
    with pytest.raises(TypeError, match=message):
        select_rng_state(saved, 1)
