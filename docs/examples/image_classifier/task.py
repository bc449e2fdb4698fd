"""The task: sort small images into classes with a conv net, on augmented map-style data.

A stand-in for a folder of images: each class has a pattern of its own, drawn from the seed, and
each image is its class's pattern plus noise. Training images are flipped at random, and each
flip is drawn from the sample's index and the epoch (``set_epoch``), never from the global random
state, so a resume in the middle of an epoch flips exactly as the uninterrupted run did, with
any number of loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .schedule import build_scheduler

if TYPE_CHECKING:
    from .config import Config

__all__ = ["DataConfig", "ModelConfig", "Task"]


@dataclass
class DataConfig:
    """The images; set as ``--data.<field>=...`` or a ``[data]`` table."""

    num_samples: int = field(default=2048, metadata={"help": "training images"})
    num_val_samples: int = field(default=512, metadata={"help": "validation images"})
    num_classes: int = field(default=4, metadata={"help": "classes"})
    image_size: int = field(default=16, metadata={"help": "height and width of an image"})
    noise: float = field(default=1.0, metadata={"help": "standard deviation of the noise on each pixel"})
    flip: bool = field(default=True, metadata={"help": "flip training images at random, left to right"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes (0: load in this process)"})

    def __post_init__(self) -> None:
        if min(self.num_samples, self.num_val_samples) < 1 or self.num_classes < 2 or self.image_size < 4:
            raise ValueError("data: num_samples and num_val_samples >= 1, num_classes >= 2, image_size >= 4")


@dataclass
class ModelConfig:
    """The conv net's shape; set as ``--model.<field>=...`` or a ``[model]`` table."""

    channels: int = field(default=16, metadata={"help": "channels of the first convolution (the second has twice)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})


class Images(Dataset):
    """``(image (3, S, S), label)`` pairs made from the seed; with ``flip``, each pair's flip depends on
    ``(epoch, index)`` alone."""

    def __init__(self, config: DataConfig, count: int, seed: int, flip: bool) -> None:
        generator = torch.Generator().manual_seed(seed)
        size = config.image_size
        patterns = torch.randn(config.num_classes, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.labels = torch.randint(0, config.num_classes, (count,), generator=generator)
        self.images = patterns[self.labels] + config.noise * torch.randn(count, 3, size, size, generator=generator)
        self.flip, self.epoch = flip, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer's loader before each epoch (it reaches the data set as it does the sampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.flip:
            generator = torch.Generator().manual_seed(self.epoch * 1_000_003 + index)
            if torch.rand((), generator=generator) < 0.5:
                image = image.flip(-1)
        return image, self.labels[index]


class EpochShuffle(Sampler[int]):
    """A shuffle that depends only on ``(seed, epoch)``, so that a resumed run reads the same order."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


class ConvNet(nn.Module):
    """Two convolutions with GroupNorm, then the mean over the image and a linear classifier.

    GroupNorm normalises each image alone, so a batch of 32 trains as 2 accumulated batches of
    16 do, and 2 processes as one: BatchNorm, whose statistics are the batch's, would not.
    """

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        c = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.GroupNorm(4, c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.GroupNorm(4, 2 * c), nn.ReLU(),
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images).mean(dim=(2, 3))  # (B, 2C)
        return self.head(self.dropout(x))  # (B, classes)


class Task:
    """Image classification; the settings come from ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def build_dataloaders(self) -> tuple[DataLoader, DataLoader | None]:
        """Workers load the images; they are started for each epoch, so that each sees that epoch's
        ``set_epoch`` (persistent workers would keep the data set of their first epoch)."""
        c = self.config
        train = Images(c.data, c.data.num_samples, seed=c.seed, flip=c.data.flip)
        val = Images(c.data, c.data.num_val_samples, seed=c.seed + 1, flip=False)
        pin = torch.cuda.is_available()  # page-locked batches, which copy to a GPU without blocking
        loading = {"batch_size": c.batch_size, "num_workers": c.data.num_workers, "pin_memory": pin}
        return DataLoader(train, sampler=EpochShuffle(len(train), c.seed), **loading), DataLoader(val, **loading)

    def build_model(self) -> nn.Module:
        return ConvNet(self.config.model, self.config.data.num_classes)

    def configure_optimizers(
        self, model: nn.Module, num_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        return optimizer, build_scheduler(optimizer, self.config, num_steps)

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = batch  # (B, 3, S, S), (B,)
        logits = model(images)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "acc": accuracy}

    def validation_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = model(images)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "acc": accuracy, "count": len(labels)}
