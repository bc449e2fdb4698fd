"""What a run directory holds beyond metrics and checkpoints, so that a run can be reproduced from it.

At the start of a fit, process 0 writes ``config.toml``, the resolved config (``fit --config
<run_dir>/config.toml`` runs it again), and ``metadata.json``: the versions of Python, torch and
trainwright (with the core's exact commit, ``trainwright_build``), the project's git commit and
whether its files differed from it, the host, and the devices. Checkpoints hold the same
metadata. At the end, the trackers receive these files, and the profiler's, as artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwright import run_metadata
from trainwright.config import dump_toml

if TYPE_CHECKING:
    from .trainer import Trainer


def record_run(trainer: Trainer) -> dict[str, Any]:
    """Write ``config.toml`` and ``metadata.json`` into the run directory (process 0); return the metadata."""
    fabric, run_dir = trainer.fabric, trainer.run_dir
    metadata = run_metadata(fabric, source_dir=Path(__file__).parent)
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(trainer.config, resume=None)  # the settings, not how this start began
        (run_dir / "config.toml").write_text(dump_toml(config), encoding="utf-8")
        (run_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        fabric.log_hyperparams(config)
    return metadata


def upload_artifacts(trainer: Trainer) -> None:
    """Hand the run's description and the profiler's output to the loggers (trackers keep them; CSV ignores them)."""
    run_dir = trainer.run_dir
    for path in (run_dir / "config.toml", run_dir / "metadata.json", run_dir / "profiler"):
        if path.exists():
            try:
                trainer.fabric.log_artifact(path)
            except Exception as error:  # the run's outcome does not hang on its artifacts: say so, go on
                warnings.warn(f"could not hand {path} to the loggers: {error}", stacklevel=2)
