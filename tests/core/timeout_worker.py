"""One worker of the timeout test; ``torchrun`` starts two copies of it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 timeout_worker.py STRATEGY SECONDS OUT_DIR

Both processes join the job's process group through ``Fabric`` with ``STRATEGY(timeout=SECONDS)``.
Rank 1 then stays alive but never enters a collective, as a hung peer does; rank 0 all-reduces
and writes to ``OUT_DIR/rank0.json`` how long the call took and what it raised. Rank 1 leaves
once that file is there, or after 20 seconds: then a timeout that never came shows as a lost peer.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch

from trainwright import Fabric
from trainwright.strategies import DDPStrategy, FSDPStrategy

STRATEGIES = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}


def main(strategy: str, seconds: str, out_dir: str) -> None:
    out = Path(out_dir)
    fabric = Fabric(accelerator="cpu", strategy=STRATEGIES[strategy](timeout=timedelta(seconds=float(seconds))))
    report = out / "rank0.json"
    if fabric.global_rank == 1:
        deadline = time.monotonic() + 20
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    else:
        start = time.monotonic()
        try:
            fabric.all_reduce(torch.ones(1), op="sum")
            error = None
        except Exception as exc:  # the timeout's error, whatever its type; the test reads it
            error = f"{type(exc).__name__}: {exc}"
        staged = out / "rank0.json.tmp"
        staged.write_text(json.dumps({"seconds": time.monotonic() - start, "error": error}), encoding="utf-8")
        os.replace(staged, report)
    # The group is broken: leaving without tearing it down keeps either process from waiting on it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
