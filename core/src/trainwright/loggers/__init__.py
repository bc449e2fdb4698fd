"""Loggers: where ``Fabric.log`` sends metrics. MLflow and W&B are imported on first use only."""

from trainwright.loggers.base import Logger
from trainwright.loggers.csv import CSVLogger
from trainwright.loggers.mlflow import MLflowLogger
from trainwright.loggers.tensorboard import TensorBoardLogger
from trainwright.loggers.wandb import WandbLogger

__all__ = ["CSVLogger", "Logger", "MLflowLogger", "TensorBoardLogger", "WandbLogger"]
