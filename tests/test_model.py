"""The networks: parameter counts as their sources give them, architecture, FLOPs, and airbench94's whitening."""

from typing import get_args, get_type_hints

import pytest
import torch

from cifarbench.config import ModelConfig
from cifarbench.models import NETWORKS, build_network, count_parameters, flops_per_image
from cifarbench.models.airbench94 import init_whitening
from cifarbench.models.custom_resnet import CustomResNet


@pytest.mark.parametrize("name, parameters", [
    ("custom_resnet", 6_573_120),  # the seed's model summary
    ("resnet9", 6_573_120),  # Page's ResNet-9: the same convolutions, BatchNorms and head ("6.5M parameters")
    # airbench94 (its paper's table of layers): 2x2 whitening 3*24*4 + 24 bias; convs 24*64*9 + 64*64*9 +
    # 64*256*9 + 256*256*9 * 3; BatchNorm scale and bias on 64+64+256*4 channels; head 256*10
    ("airbench94", 288 + 24 + 13_824 + 36_864 + 147_456 + 3 * 589_824 + 2 * 1_152 + 2_560),
])
def test_parameter_counts(name, parameters):
    assert count_parameters(build_network(ModelConfig(name=name))) == parameters


def test_airbench94_trains_only_what_its_paper_trains():
    net = build_network(ModelConfig(name="airbench94"))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert "whiten.weight" in frozen and all(n.endswith("weight") for n in frozen)  # BatchNorm scales stay 1
    assert sum(p.numel() for n, p in net.named_parameters() if n in frozen) == 288 + 1_152  # whitening filters, BatchNorm scales
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_flops_are_counted_from_the_network():
    seed = ModelConfig()
    assert flops_per_image(seed) == 2 * 379_261_952  # 0.7585 GFLOP forward
    train = flops_per_image(seed, training=True)
    assert 2.5 * flops_per_image(seed) < train < 3 * flops_per_image(seed)  # backward ~2x forward, no dgrad at the input
    assert flops_per_image(ModelConfig(width=32)) < flops_per_image(seed) / 3  # computed, so it follows the width
    assert flops_per_image(ModelConfig(name="resnet9")) == flops_per_image(seed)  # same convolutions, pools move no MACs
    # airbench94: 2x2 whitening at 31x31, then groups at 31, 15, 7 and 3 pixels
    macs = 31 * 31 * 24 * 12 + 31 * 31 * 24 * 64 * 9 + 15 * 15 * 64 * 64 * 9 + 15 * 15 * 64 * 256 * 9 + \
        7 * 7 * 256 * 256 * 9 * 2 + 3 * 3 * 256 * 256 * 9 + 256 * 10
    assert flops_per_image(ModelConfig(name="airbench94")) == 2 * macs


def test_seed_architecture():
    net = CustomResNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding_mode == "reflect" and c.bias is None for c in convs)
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    linear = net.head[-1]
    assert (linear.in_features, linear.out_features, linear.bias) == (512, 10, None)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_seed_dropout_placement():
    """The prep layer and layer 2 take model.dropout; the residual blocks keep the seed's 0.05."""
    def rates(net):
        return {name.rsplit(".", 1)[0]: m.p for name, m in net.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert set(rates(CustomResNet()).values()) == {0.05}
    with_dropout = rates(CustomResNet(dropout=0.1))
    assert {k for k, p in with_dropout.items() if p == 0.1} == {"prep", "layer2"}
    assert {k.split(".")[0] for k, p in with_dropout.items() if p == 0.05} == {"layer1", "layer3"}


def test_resnet9_scales_its_logits_by_an_eighth():
    net = build_network(ModelConfig(name="resnet9")).eval()
    x = torch.randn(2, 3, 32, 32)
    unscaled = net.head(net.layer3(net.layer2(net.layer1(net.prep(x)))))
    assert torch.allclose(net(x), unscaled * 0.125)


def test_whitening_makes_patches_uncorrelated_with_unit_variance():
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(64, 3, 32, 32)).cumsum(-1) / 8  # correlated channels and pixels
    layer = torch.nn.Conv2d(3, 24, kernel_size=2, bias=False)
    init_whitening(layer, images, eps=0.0)
    out = layer(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the 12 filters; the other 12 are their negatives
    assert torch.allclose(torch.cov(out.T, correction=0) + out.mean(0).outer(out.mean(0)), torch.eye(12), atol=2e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])


def test_every_network_is_in_the_config_choices():
    assert set(get_args(get_type_hints(ModelConfig)["name"])) == set(NETWORKS)
