import torch

from cifarbench.model import CustomResNet, count_parameters, flops_per_image


def test_seed_network_has_exactly_the_seeds_parameter_count():
    assert count_parameters(CustomResNet()) == 6_573_120


def test_flops_are_counted_from_the_network():
    assert flops_per_image() == 2 * 379_261_952  # 0.7585 GFLOP forward
    train = flops_per_image(training=True)
    assert 2.5 * flops_per_image() < train < 3 * flops_per_image()  # backward ~2x forward, first conv needs no dgrad
    assert flops_per_image(width=32) < flops_per_image() / 3  # computed, so it follows the width


def test_architecture_follows_the_seed():
    net = CustomResNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding_mode == "reflect" and c.bias is None for c in convs)
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    linear = net.head[-1]
    assert (linear.in_features, linear.out_features, linear.bias) == (512, 10, None)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_dropout_is_a_parameter():
    assert not any(isinstance(m, torch.nn.Dropout) for m in CustomResNet().modules())
    drops = [m for m in CustomResNet(dropout=0.1).modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(d.p == 0.1 for d in drops)
