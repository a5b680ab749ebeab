"""The seed project's CustomResNet (ERA V1 session 12), and its measured cost per image.

Layout, with ``w`` the prep width (64 in the seed, 6,573,120 parameters)::

    prep    conv 3->w                                   32x32
    layer1  conv w->2w, maxpool, BN, ReLU  + res(2w)    16x16
    layer2  conv 2w->4w, maxpool, BN, ReLU              8x8
    layer3  conv 4w->8w, maxpool, BN, ReLU + res(8w)    4x4
    head    maxpool(4), flatten, linear 8w->10 (no bias)

Every conv is 3x3, stride 1, reflect padding, no bias. ``width`` exists only so tests and CPU
demos can train a narrower copy of the same architecture; benchmarks use the seed's 64.
"""

from __future__ import annotations

import torch
from torch import nn
from lightning.fabric.utilities.throughput import measure_flops

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)


def conv_bn_relu(c_in: int, c_out: int, dropout: float, pool: bool = False) -> nn.Sequential:
    """3x3 conv (reflect padding, no bias) [+ 2x2 maxpool] + BN + ReLU [+ dropout]."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect", bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + two conv-BN-ReLU blocks at constant width."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels, dropout), conv_bn_relu(channels, channels, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CustomResNet(nn.Module):
    def __init__(self, width: int = 64, dropout: float = 0.0, num_classes: int = NUM_CLASSES):
        super().__init__()
        w = width
        self.prep = conv_bn_relu(3, w, dropout)
        self.layer1 = nn.Sequential(conv_bn_relu(w, 2 * w, dropout, pool=True), Residual(2 * w, dropout))
        self.layer2 = conv_bn_relu(2 * w, 4 * w, dropout, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(4 * w, 8 * w, dropout, pool=True), Residual(8 * w, dropout))
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_image(width: int = 64, training: bool = False) -> int:
    """FLOPs (2 per multiply-add) for one 32x32 image, counted on the meta device by Lightning's
    ``measure_flops`` (torch's FlopCounterMode underneath).

    ``training=False`` counts the forward pass (0.7585 GFLOP for the seed's network); ``training=True`` adds
    the backward pass as autograd really runs it (the first conv computes no input gradient, so it is a
    little under 3x forward). Only convolutions and matmuls count, as in every MFU figure.
    """
    with torch.device("meta"):
        model = CustomResNet(width)
        x = torch.empty(1, *IMAGE_SHAPE)
    return measure_flops(model, lambda: model(x), (lambda out: out.sum()) if training else None)
