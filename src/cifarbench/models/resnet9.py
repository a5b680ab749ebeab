"""David Page's ResNet-9, the DAWNBench CIFAR-10 winner ("How to train your ResNet", parts 1-8, 2018).

Layout, with ``w`` the prep width (64 in the blog, 6,573,120 parameters)::

    prep    conv 3->w, BN, ReLU                                     32x32
    layer1  conv w->2w, BN, ReLU, maxpool  + res(2w)                16x16
    layer2  conv 2w->4w, BN, ReLU, maxpool                          8x8
    layer3  conv 4w->8w, BN, ReLU, maxpool + res(8w)                4x4
    head    maxpool(4), flatten, linear 8w->10 (no bias), x 0.125

The same layers as the seed's CustomResNet, in Page's order: the pool after the activation, zero padding, no
dropout, and the logits scaled by 0.125 (his fix for the overconfident outputs of the final layer).
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUT_SCALE = 0.125


def conv_bn_relu(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        w = width
        self.prep = conv_bn_relu(3, w)
        self.layer1 = nn.Sequential(conv_bn_relu(w, 2 * w, pool=True), Residual(2 * w))
        self.layer2 = conv_bn_relu(2 * w, 4 * w, pool=True)
        self.layer3 = nn.Sequential(conv_bn_relu(4 * w, 8 * w, pool=True), Residual(8 * w))
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x))))) * OUTPUT_SCALE
