"""The device-resident data path: the uint8 data set lives on the training device and is augmented there.

No worker processes and no per-image Python: each batch is one gather that applies the random crop (of
the reflect-padded image) and the flip together, one masked fill for the cutout, and one normalisation.
This is how the fastest public CIFAR-10 trainers (airbench, hlb-CIFAR10) feed the GPU.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from ..config import DataConfig
from .augmentation import CIFAR_MEAN, CIFAR_STD, MEAN_PIXEL_U8, AlternatingFlip
from .module import CifarDataModule
from .sources import ImageSet

SIZE = 32


def reflect(index: torch.Tensor) -> torch.Tensor:
    """Maps coordinates of the reflect-padded image (-pad .. 31+pad) back into 0..31 (OpenCV REFLECT_101)."""
    index = index.abs()
    return torch.where(index > SIZE - 1, 2 * (SIZE - 1) - index, index)


class Constants:
    """The cutout fill and the normalisation's mean and scale on one device, made once per loader: a
    ``torch.tensor(<tuple>, device=...)`` per batch would be a copy from pageable host memory, which waits for
    the GPU's queue every step."""

    def __init__(self, device: torch.device):
        self.fill = torch.tensor(MEAN_PIXEL_U8, dtype=torch.uint8, device=device)
        self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.scale = 1 / (torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255)


def augment_batch(images: torch.Tensor, cfg: DataConfig, generator: torch.Generator,
                  flip: Optional[torch.Tensor] = None, constants: Optional[Constants] = None) -> torch.Tensor:
    """The seed's augmentation on a uint8 N x 32 x 32 x 3 batch: reflect-pad and random crop, flip (random with
    ``flip_prob``, or as ``flip``, N x 1 bool, says), cutout."""
    n, device = images.shape[0], images.device
    constants = constants or Constants(device)
    span = torch.arange(SIZE, device=device)

    def uniform_int(high: int) -> torch.Tensor:
        return torch.randint(0, high, (n, 1), generator=generator, device=device)

    shift_y, shift_x = uniform_int(2 * cfg.pad + 1) - cfg.pad, uniform_int(2 * cfg.pad + 1) - cfg.pad
    if flip is None:
        flip = torch.rand(n, 1, generator=generator, device=device) < cfg.flip_prob
    rows = reflect(shift_y + span)  # N x 32: source row of each output row
    cols = reflect(shift_x + torch.where(flip, SIZE - 1 - span, span))  # flip after crop, as albumentations does
    pixel = (torch.arange(n, device=device).view(n, 1, 1) * SIZE * SIZE + rows.view(n, SIZE, 1) * SIZE
             + cols.view(n, 1, SIZE))
    out = images.reshape(n * SIZE * SIZE, 3).index_select(0, pixel.reshape(-1)).view(n, SIZE, SIZE, 3)

    hole = cfg.cutout_size
    top, left = uniform_int(SIZE - hole + 1), uniform_int(SIZE - hole + 1)
    apply = torch.rand(n, 1, generator=generator, device=device) < cfg.cutout_prob
    inside_rows = ((span - top) >= 0) & ((span - top) < hole) & apply  # N x 32
    inside_cols = ((span - left) >= 0) & ((span - left) < hole)  # N x 32
    mask = (inside_rows.view(n, SIZE, 1) & inside_cols.view(n, 1, SIZE)).unsqueeze(-1)
    return torch.where(mask, constants.fill, out)


def normalise(images: torch.Tensor, constants: Optional[Constants] = None) -> torch.Tensor:
    """uint8 N x 32 x 32 x 3 -> float32 N x 3 x 32 x 32 (contiguous), normalised with the CIFAR statistics."""
    constants = constants or Constants(images.device)
    return (images.permute(0, 3, 1, 2).contiguous().float() - constants.mean) * constants.scale


class EpochCounter:
    """Lightning calls ``sampler.set_epoch`` on every train loader it sees: this is how ours learns the epoch."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class DeviceBatches:
    """Batches of one split, sharded per rank, shuffled and augmented on the device.

    Training: each epoch's permutation comes from (seed, epoch), identical on all ranks; rank r takes
    every world-th image of it, so shards are disjoint and equal (the remainder is dropped, as
    DistributedSampler with drop_last does). Evaluation: rank r takes images r, r + world, ... in order.
    """

    def __init__(self, images: ImageSet, device: torch.device, batch_size: int, augment: Optional[DataConfig],
                 drop_last: bool, seed: int, rank: int = 0, world: int = 1, flips: Optional[AlternatingFlip] = None):
        self.images = torch.from_numpy(images.images).to(device)
        self.labels = torch.from_numpy(images.labels).to(device)
        self.device, self.batch_size, self.augment, self.drop_last = device, batch_size, augment, drop_last
        self.seed, self.rank, self.world = seed, rank, world
        self.sampler = EpochCounter()
        self.batch_sampler = None  # Lightning looks for one next to a sampler
        self.flips = flips.to(device) if flips is not None else None  # the same on every rank
        self.constants = Constants(device)

    def _shard(self) -> torch.Tensor:
        """This rank's indices for the epoch, made on the device (a permutation made on the host and copied
        would wait for the GPU once an epoch, inside the timed window)."""
        n = len(self.labels)
        if self.augment is None:
            return torch.arange(self.rank, n, self.world, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.sampler.epoch)
        order = torch.randperm(n, generator=generator, device=self.device)
        return order[: n // self.world * self.world][self.rank :: self.world]

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = n // self.world if self.augment is not None else len(range(self.rank, n, self.world))
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        shard = self._shard()
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * 100_003 + self.sampler.epoch) * 1009 + self.rank)
        for b in range(len(self)):
            index = shard[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images.index_select(0, index)
            if self.augment is not None:
                flip = self.flips.flipped(index).unsqueeze(1) if self.flips is not None else None
                images = augment_batch(images, self.augment, generator, flip, self.constants)
            yield normalise(images, self.constants), self.labels.index_select(0, index)


class DeviceDataModule(CifarDataModule):
    def loader(self, split: str, train: bool) -> DeviceBatches:
        rank, world = self.world
        images = self.splits[split]
        return DeviceBatches(images, self.device, self.cfg.batch_size, self.cfg if train else None,
                             drop_last=train and self.drop_last_train, seed=self.seed, rank=rank, world=world,
                             flips=self.alternating_flip(len(images)) if train else None)
