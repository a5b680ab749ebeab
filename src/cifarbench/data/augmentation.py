"""The seed's augmentation constants, shared by every data path so that they augment alike."""

from __future__ import annotations

# CIFAR-10 training-set channel statistics as the seed used them (pixel values scaled to [0, 1]).
CIFAR_MEAN = (0.491, 0.482, 0.447)
CIFAR_STD = (0.247, 0.244, 0.262)
# Cutout fills with the mean pixel, which normalises to ~0: the hole carries no signal.
MEAN_PIXEL_U8 = tuple(round(m * 255) for m in CIFAR_MEAN)
