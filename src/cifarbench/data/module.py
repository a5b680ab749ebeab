"""What every data path shares: load the source once per process, apply the seed's split."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch

from ..config import DataConfig
from .sources import ImageSet, load_train_test, prepare_source, split_train_val


class CifarDataModule(L.LightningDataModule):
    """Holds the train/val/test ImageSets; each data path subclass turns them into loaders.

    ``drop_last_train`` keeps every training batch the same shape (static shapes for torch.compile, and
    the same number of steps per epoch on every path).
    """

    def __init__(self, cfg: DataConfig, drop_last_train: bool = True):
        super().__init__()
        self.cfg, self.drop_last_train = cfg, drop_last_train
        self.splits: Optional[dict[str, ImageSet]] = None
        self.standalone_device = torch.device("cpu")  # where batches go when no Trainer is attached

    def prepare_data(self) -> None:
        prepare_source(self.cfg)  # downloads once (local rank 0) when the source is torchvision

    def setup(self, stage: str) -> None:
        if self.splits is None:
            self.splits = load_splits(self.cfg)

    def loader(self, split: str, train: bool):
        """The path's loader over one split; ``train`` turns augmentation, shuffling and drop_last on."""
        raise NotImplementedError

    def train_dataloader(self):
        return self.loader("train", train=True)

    def val_dataloader(self):
        return self.loader("val", train=False)

    def test_dataloader(self):
        return self.loader("test", train=False)

    @property
    def device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else self.standalone_device

    @property
    def world(self) -> tuple[int, int]:
        """(rank, world size) of this process; (0, 1) outside a Trainer."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)


def load_splits(cfg: DataConfig) -> dict[str, ImageSet]:
    train, test = load_train_test(cfg)
    train, val = split_train_val(train, cfg.val_size, cfg.split_seed)
    return {"train": train, "val": val, "test": test}
