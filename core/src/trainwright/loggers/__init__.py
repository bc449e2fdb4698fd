"""Loggers: where ``Fabric.log`` sends metrics."""

from trainwright.loggers.base import Logger
from trainwright.loggers.csv import CSVLogger
from trainwright.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]
