"""The networks cifarbench trains, one file each, by ``model.name``; their parameter counts and FLOPs."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import measure_flops
from torch import nn

from ..config import ModelConfig
from .airbench94 import Airbench94
from .custom_resnet import CustomResNet
from .resnet9 import ResNet9

IMAGE_SHAPE = (3, 32, 32)
NETWORKS = {"custom_resnet": CustomResNet, "resnet9": ResNet9, "airbench94": Airbench94}


def build_network(cfg: ModelConfig) -> nn.Module:
    if cfg.name == "custom_resnet":
        return CustomResNet(cfg.width, cfg.dropout, cfg.num_classes)
    return NETWORKS[cfg.name](cfg.width, cfg.num_classes)


def count_parameters(model: nn.Module) -> int:
    """Every parameter, trained or frozen (airbench94's whitening filters and BatchNorm scales count)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_image(cfg: ModelConfig, training: bool = False) -> int:
    """FLOPs (2 per multiply-add) for one 32x32 image, counted on the meta device by Lightning's
    ``measure_flops`` (torch's FlopCounterMode underneath).

    ``training=False`` counts the forward pass (0.7585 GFLOP for the seed's network); ``training=True`` adds
    the backward pass as autograd really runs it (no input gradient for the first layer, no weight gradient
    for frozen ones). Only convolutions and matmuls count, as in every MFU figure.
    """
    with torch.device("meta"):
        model = build_network(cfg)
        x = torch.empty(1, *IMAGE_SHAPE)
    return measure_flops(model, lambda: model(x), (lambda out: out.sum()) if training else None)
