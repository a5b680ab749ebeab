"""The seed's data path: per-image albumentations transforms in DataLoader worker processes."""

from __future__ import annotations

import os
import signal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

from typing import Optional

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from ..config import DataConfig
from .augmentation import CIFAR_MEAN, CIFAR_STD, MEAN_PIXEL_U8, AlternatingFlip
from .module import CifarDataModule
from .sources import ImageSet


def train_transform(cfg: DataConfig) -> A.Compose:
    """Pad (reflect) and random-crop back to 32, flip, one square cutout, normalise.

    Uses the albumentations 2.x argument names: 2.x silently ignores 1.x's ``max_holes``/``fill_value``.
    With ``alternating_flip`` the flip is not random: ``AugmentedImages`` mirrors the images the epoch flips.
    """
    size = 32 + 2 * cfg.pad
    hole = (cfg.cutout_size, cfg.cutout_size)
    return A.Compose([
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(height=32, width=32),
        A.HorizontalFlip(p=0.0 if cfg.alternating_flip else cfg.flip_prob),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=hole, hole_width_range=hole,
                        fill=MEAN_PIXEL_U8, p=cfg.cutout_prob),
        A.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD, max_pixel_value=255.0),
        ToTensorV2(),
    ])


def eval_transform() -> A.Compose:
    return A.Compose([A.Normalize(mean=CIFAR_MEAN, std=CIFAR_STD, max_pixel_value=255.0), ToTensorV2()])


class AugmentedImages(Dataset):
    """One image per item, transformed in the loader's worker process.

    An alternating flip mirrors the image before the transform: reflect-pad, random crop and cutout are
    symmetric under mirroring, so this is the same as mirroring after the crop as the other paths do."""

    def __init__(self, images: ImageSet, transform: A.Compose, flips: Optional[AlternatingFlip] = None):
        self.images, self.transform, self.flips = images, transform, flips

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images.images[i]
        if self.flips is not None and self.flips.flipped(torch.tensor([i])).item():
            image = np.ascontiguousarray(image[:, ::-1])
        return self.transform(image=image)["image"], torch.tensor(self.images.labels[i])


def worker_init(worker_id: int) -> None:
    """Each loader worker: seeded as Lightning seeds them (``seed_everything(workers=True)``), and deaf to SIGTERM.

    Slurm's requeue and ``scancel`` send SIGTERM to every process of the job; a worker dying of it first would
    fail the run ("DataLoader worker killed by signal: Terminated") before the training process could end the
    attempt as preempted. Workers still exit with their parent (PyTorch's worker loop watches it).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pl_worker_init_function(worker_id)


class AlbumentationsDataModule(CifarDataModule):
    """torch DataLoaders; Lightning adds the DistributedSampler under DDP (batches are per device)."""

    def loader(self, split: str, train: bool) -> DataLoader:
        transform = train_transform(self.cfg) if train else eval_transform()
        images = self.splits[split]
        flips = self.alternating_flip(len(images)) if train else None
        workers = self.cfg.num_workers
        return DataLoader(AugmentedImages(images, transform, flips), batch_size=self.cfg.batch_size,
                          shuffle=train, drop_last=train and self.drop_last_train, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          worker_init_fn=worker_init if workers > 0 else None)
