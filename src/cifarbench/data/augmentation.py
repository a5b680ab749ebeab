"""What every data path augments with, so that they augment alike: the seed's constants and the alternating flip."""

from __future__ import annotations

import torch

# CIFAR-10 training-set channel statistics as the seed used them (pixel values scaled to [0, 1]).
CIFAR_MEAN = (0.491, 0.482, 0.447)
CIFAR_STD = (0.247, 0.244, 0.262)
# Cutout fills with the mean pixel, which normalises to ~0: the hole carries no signal.
MEAN_PIXEL_U8 = tuple(round(m * 255) for m in CIFAR_MEAN)


class AlternatingFlip:
    """airbench's alternating flip (arXiv 2404.00498, section 3.6), in place of a random flip per image.

    Epoch 0 flips a random half of the training images (fixed by the seed); every later epoch flips exactly the
    images the epoch before did not, so each image is seen from both sides every two epochs. The epoch lives in
    a shared-memory tensor: the training process sets it (``DataEpoch``), DataLoader worker processes read it.
    """

    def __init__(self, n: int, seed: int):
        chance = torch.rand(n, generator=torch.Generator().manual_seed(seed * 100_003 + 7))
        self.first = chance < 0.5
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def to(self, device: torch.device) -> "AlternatingFlip":
        """The same flips (and the same shared epoch) with the per-image table on ``device``."""
        moved = object.__new__(AlternatingFlip)
        moved.first, moved.epoch = self.first.to(device), self.epoch
        return moved

    def flipped(self, index: torch.Tensor) -> torch.Tensor:
        """Whether this epoch shows each image at ``index`` (on the table's device) mirrored."""
        return self.first.index_select(0, index) ^ bool(int(self.epoch) % 2)
