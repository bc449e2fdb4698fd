"""Side-by-side timing on a noisy machine.

Variants run in many short, interleaved rounds whose order is shuffled, so a slow patch of the
machine slows all of them alike. A variant's ratio to the baseline is the median of its
per-round ratios (each against the baseline's time in the same round), which cancels drift
that medians of absolute times would keep.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One variant's timing: seconds per iteration (median over rounds) and its ratio to the baseline."""

    seconds: float
    ratio: float


def compare(
    variants: dict[str, Callable[[int], None]],
    number: int,
    rounds: int,
    scale: dict[str, int] | None = None,
) -> dict[str, Result]:
    """Time each variant, the first being the baseline.

    Args:
        variants: name -> function running ``number`` iterations.
        number: iterations per round.
        rounds: how many interleaved rounds.
        scale: name -> divisor of ``number`` for a variant too slow to run ``number`` times per
            round; its time is still reported per iteration.
    """
    scale = scale or {}
    counts = {name: max(1, number // scale.get(name, 1)) for name in variants}
    for name, run in variants.items():  # warm-up: caches, lazy initialisation, the allocator
        run(max(1, counts[name] // 5))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name, run in order:
            start = time.perf_counter()
            run(counts[name])
            samples[name].append((time.perf_counter() - start) / counts[name])
    baseline = samples[next(iter(variants))]
    return {
        name: Result(
            seconds=statistics.median(values),
            ratio=statistics.median(v / b for v, b in zip(values, baseline, strict=True)),
        )
        for name, values in samples.items()
    }


def optional_lightning_fabric():
    """Lightning Fabric's class, or ``None`` when Lightning is not installed (``make bench`` installs it)."""
    try:
        from lightning.fabric import Fabric
    except ImportError:
        return None
    return Fabric


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
