"""What every data path shares: load the source once per process, split it as ``data.protocol`` says."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ..config import DataConfig
from .augmentation import AlternatingFlip
from .sources import ImageSet, load_train_test, prepare_source, split_train_val


class CifarDataModule(L.LightningDataModule):
    """Holds the train/val/test ImageSets; each data path subclass turns them into loaders.

    ``drop_last_train`` keeps every training batch the same shape (static shapes for torch.compile, and
    the same number of steps per epoch on every path).
    """

    def __init__(self, cfg: DataConfig, drop_last_train: bool = True, seed: int = 0):
        super().__init__()
        self.cfg, self.drop_last_train, self.seed = cfg, drop_last_train, seed
        self.splits: Optional[dict[str, ImageSet]] = None
        self.standalone_device = torch.device("cpu")  # where batches go when no Trainer is attached
        self.flips: Optional[AlternatingFlip] = None

    def prepare_data(self) -> None:
        prepare_source(self.cfg)  # downloads once (local rank 0) when the source is torchvision

    def setup(self, stage: str) -> None:
        if self.splits is None:
            self.splits = load_splits(self.cfg)

    def loader(self, split: str, train: bool):
        """The path's loader over one split; ``train`` turns augmentation, shuffling and drop_last on."""
        raise NotImplementedError

    def first_train_images(self, count: int) -> torch.Tensor:
        """The first ``count`` training images, unaugmented and normalised (N x 3 x 32 x 32 float, on the CPU):
        what airbench94's whitening layer is computed from. The same images on every rank."""
        from .device_path import normalise

        return normalise(torch.from_numpy(self.splits["train"].images[:count]))

    def alternating_flip(self, train_images: int) -> Optional[AlternatingFlip]:
        """The training images' alternating flip when ``data.alternating_flip`` asks for it (made once)."""
        if self.cfg.alternating_flip and self.flips is None:
            self.flips = AlternatingFlip(train_images, self.seed)
        return self.flips

    def set_epoch(self, epoch: int) -> None:
        """The training epoch about to start (``DataEpoch`` says it): what the alternating flip alternates on."""
        if self.flips is not None:
            self.flips.set_epoch(epoch)

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
    """train/val/test by ``data.protocol``: the seed's held-out split, or the published one (all training
    images; validation is the test set)."""
    train, test = load_train_test(cfg)
    if cfg.protocol == "published":
        return {"train": train, "val": test, "test": test}
    train, val = split_train_val(train, cfg.val_size, cfg.split_seed)
    return {"train": train, "val": val, "test": test}


class DataEpoch(Callback):
    """Tells the datamodule each training epoch before the epoch's first batch is asked for.

    Lightning tells a loader's sampler the epoch, but a DDP run replaces the albumentations path's sampler with
    its own DistributedSampler, and FFCV's loader has none: this one hook serves all three paths, resumed runs
    included (``current_epoch`` comes from the checkpoint)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.datamodule.set_epoch(trainer.current_epoch)
