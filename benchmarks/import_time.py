"""How much ``import trainwright`` adds to ``import torch`` (and what Lightning Fabric adds).

Each measurement is a fresh interpreter that imports torch, then times the second import on
its own, so the number is exactly what the library adds. The variants alternate, and the median
over rounds is reported.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from _harness import optional_lightning_fabric, table

MODULES = {"trainwright": "trainwright", "Lightning Fabric": "lightning.fabric"}
CLOCK = "import time; import torch; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def run(rounds: int = 15) -> dict[str, float]:
    modules = dict(MODULES)
    if optional_lightning_fabric() is None:
        del modules["Lightning Fabric"]
    samples: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds):
        for name, module in modules.items():
            out = subprocess.run(
                [sys.executable, "-c", CLOCK.format(module=module)], capture_output=True, text=True, check=True
            ).stdout
            samples[name].append(float(out.strip().splitlines()[-1]))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(seconds: dict[str, float]) -> str:
    rows = [(f"`import {MODULES[name]}`", f"+{s:.3f} s") for name, s in seconds.items()]
    return table(rows, ("after `import torch`", "added time (median)"))


if __name__ == "__main__":
    print(report(run()))
