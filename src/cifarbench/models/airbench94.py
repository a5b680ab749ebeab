"""airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498, 2024).

Layout, with ``w`` the first group's width (64; groups of w, 4w, 4w: 1,972,792 parameters, 2,304 of
them BatchNorm weights that stay 1)::

    whiten  conv 2x2 3->24 (+bias, no padding), GELU        31x31   weights frozen: patch whitening
    group1  conv w, maxpool, BN, GELU, conv w, BN, GELU     15x15
    group2  conv 4w, maxpool, BN, GELU, conv 4w, BN, GELU   7x7
    group3  conv 4w, maxpool, BN, GELU, conv 4w, BN, GELU   3x3
    head    maxpool(3), flatten, linear 4w->10 (no bias), x 1/9

Written from the paper's description: the first layer's 24 filters are the 12 eigenvectors of the 2x2x3
patch covariance of training images, scaled by 1/sqrt(eigenvalue + 5e-4), and their negations (a frozen
whitening; ``init_whitening`` computes them from the data); its bias trains for the first epochs only
(``model.whiten_bias_epochs``). Every 3x3 conv starts as an identity (dirac) on its first input channels.
BatchNorm keeps a running average with momentum 0.6 (torch's 0.4) and eps 1e-12, its scale fixed at 1 and
its bias trained (with a 64x learning rate in the recipe: ``optim.bias_lr_scale``). The logits are scaled by
1/9.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUT_SCALE = 1 / 9
WHITEN_EPS = 5e-4
WHITEN_IMAGES = 5000  # training images whose patches estimate the covariance


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with the scale fixed at 1 (not trained) and airbench's momentum and eps."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=1 - 0.6)
        self.weight.requires_grad_(False)


class Conv(nn.Conv2d):
    """3x3, same padding, no bias, initialised as an identity on the first ``c_in`` output channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        weight = self.weight.data
        nn.init.dirac_(weight[: weight.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(c_in, c_out), nn.MaxPool2d(2), BatchNorm(c_out)
        self.conv2, self.norm2, self.activation = Conv(c_out, c_out), BatchNorm(c_out), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class Airbench94(nn.Module):
    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.layers = nn.Sequential(nn.GELU(), ConvGroup(24, width), ConvGroup(width, 4 * width),
                                    ConvGroup(4 * width, 4 * width), nn.MaxPool2d(3), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.whiten(x))) * OUTPUT_SCALE


@torch.no_grad()
def init_whitening(layer: nn.Conv2d, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """Sets ``layer``'s filters to the whitening of its input patches: ``images`` (N x 3 x 32 x 32, normalised
    as in training) give every 2x2 patch; the filters are the covariance's eigenvectors over sqrt(eigenvalue +
    eps), largest first, then the same negated (so a GELU after it keeps both signs)."""
    c, (h, w) = images.shape[1], layer.weight.shape[2:]
    patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).unsqueeze(1)).flip(0).reshape(-1, c, h, w)
    layer.weight.copy_(torch.cat([filters, -filters]).to(layer.weight))
