"""The seed project's CustomResNet (ERA V1 session 12).

Layout, with ``w`` the prep width (64 in the seed, 6,573,120 parameters)::

    prep    conv 3->w                                   32x32   dropout: model.dropout
    layer1  conv w->2w, maxpool, BN, ReLU  + res(2w)    16x16   residual blocks: dropout 0.05
    layer2  conv 2w->4w, maxpool, BN, ReLU              8x8     dropout: model.dropout
    layer3  conv 4w->8w, maxpool, BN, ReLU + res(8w)    4x4     residual blocks: dropout 0.05
    head    maxpool(4), flatten, linear 8w->10 (no bias)

Every conv is 3x3, stride 1, reflect padding, no bias. Dropout sits where the seed put it: the prep layer
and layer 2 take the configured rate, the residual blocks keep the seed's fixed 0.05. ``width`` exists only
so tests and CPU demos can train a narrower copy of the same architecture; benchmarks use the seed's 64.
"""

from __future__ import annotations

import torch
from torch import nn

RESIDUAL_DROPOUT = 0.05  # the seed's, whatever model.dropout says


def conv_bn_relu(c_in: int, c_out: int, dropout: float = 0.0, pool: bool = False) -> nn.Sequential:
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
    def __init__(self, width: int = 64, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        w = width
        self.prep = conv_bn_relu(3, w, dropout)
        self.layer1 = nn.Sequential(conv_bn_relu(w, 2 * w, pool=True), Residual(2 * w, RESIDUAL_DROPOUT))
        self.layer2 = conv_bn_relu(2 * w, 4 * w, dropout, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(4 * w, 8 * w, pool=True), Residual(8 * w, RESIDUAL_DROPOUT))
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))
