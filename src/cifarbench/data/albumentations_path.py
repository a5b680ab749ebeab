"""The seed's data path: per-image albumentations transforms in DataLoader worker processes."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from ..config import DataConfig
from .augmentation import CIFAR_MEAN, CIFAR_STD, MEAN_PIXEL_U8
from .module import CifarDataModule
from .sources import ImageSet


def train_transform(cfg: DataConfig) -> A.Compose:
    """Pad (reflect) and random-crop back to 32, flip, one square cutout, normalise.

    Uses the albumentations 2.x argument names: 2.x silently ignores 1.x's ``max_holes``/``fill_value``.
    """
    size = 32 + 2 * cfg.pad
    hole = (cfg.cutout_size, cfg.cutout_size)
    return A.Compose([
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(height=32, width=32),
        A.HorizontalFlip(p=cfg.flip_prob),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=hole, hole_width_range=hole,
                        fill=MEAN_PIXEL_U8, p=cfg.cutout_prob),
        A.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD, max_pixel_value=255.0),
        ToTensorV2(),
    ])


def eval_transform() -> A.Compose:
    return A.Compose([A.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD, max_pixel_value=255.0), ToTensorV2()])


class AugmentedImages(Dataset):
    def __init__(self, images: ImageSet, transform: A.Compose):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(image=self.images.images[i])["image"]
        return image, torch.tensor(self.images.labels[i])


class AlbumentationsDataModule(CifarDataModule):
    """torch DataLoaders; Lightning adds the DistributedSampler under DDP (batches are per device)."""

    def loader(self, split: str, train: bool) -> DataLoader:
        transform = train_transform(self.cfg) if train else eval_transform()
        workers = self.cfg.num_workers
        return DataLoader(AugmentedImages(self.splits[split], transform), batch_size=self.cfg.batch_size,
                          shuffle=train, drop_last=train and self.drop_last_train, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
