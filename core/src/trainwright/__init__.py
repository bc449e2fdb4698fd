"""trainwright: a device-aware helper for the training loop you write yourself.

The public surface is small: ``Fabric``, the loggers, seeding, ``run_metadata``, and
``trainwright.config`` for typed configuration. Accelerators, precisions and strategies live
in their subpackages for those who extend them.
"""

__version__ = "0.6.0"

from trainwright._dispatch import HookSignatureError, UnusedHook
from trainwright.config import ConfigError
from trainwright.fabric import Fabric
from trainwright.loggers import CSVLogger, Logger, MLflowLogger, TensorBoardLogger, WandbLogger
from trainwright.metadata import run_metadata
from trainwright.seed import capture_rng_state, restore_rng_state, seed_everything, select_rng_state

__all__ = [
    "CSVLogger",
    "ConfigError",
    "Fabric",
    "HookSignatureError",
    "Logger",
    "MLflowLogger",
    "TensorBoardLogger",
    "UnusedHook",
    "WandbLogger",
    "__version__",
    "capture_rng_state",
    "restore_rng_state",
    "run_metadata",
    "seed_everything",
    "select_rng_state",
]
