"""The recipe options any network can use, and the recipes that combine them (bench/configs/*.yaml)."""

import pytest
import torch
import yaml

from cifarbench.config import DataConfig, ModelConfig, OptimConfig
from cifarbench.config_parser import config_from_file
from cifarbench.data.module import load_splits
from cifarbench.train.run import fit
from cifarbench.train.module import CifarClassifier
from conftest import REPO, tiny_config


def test_the_published_protocol_trains_on_everything_and_validates_on_the_test_set():
    seed = load_splits(DataConfig(source="synthetic", synthetic_train_size=1000, synthetic_test_size=300, val_size=100))
    published = load_splits(DataConfig(source="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
                                       protocol="published"))
    assert (len(seed["train"]), len(seed["val"]), len(seed["test"])) == (900, 100, 300)
    assert (len(published["train"]), len(published["val"])) == (1000, 300)
    assert published["val"] is published["test"]
    assert DataConfig(protocol="published", source="synthetic", synthetic_train_size=1000).train_images() == 1000


def test_flip_translate_tta_averages_six_views_with_half_the_weight_on_the_shifted_ones():
    module = CifarClassifier(ModelConfig(width=4, tta="flip_translate"), OptimConfig()).eval()
    net = module.net
    images = torch.randn(2, 3, 32, 32)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    views = [images, padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    with torch.no_grad():
        both = [(net(v) + net(v.flip(-1))) / 2 for v in views]
        assert torch.allclose(module.eval_logits(images), both[0] / 2 + (both[1] + both[2]) / 4, atol=1e-6)


def test_batchnorm_parameters_get_the_bias_lr_scale_and_frozen_ones_are_left_out():
    module = CifarClassifier(ModelConfig(name="airbench94", width=8), OptimConfig(optimizer="sgd", max_lr=1.5,
                                                                                   weight_decay=0.002, bias_lr_scale=64))
    other, norm = module.parameter_groups()
    assert (other["lr"], norm["lr"]) == (1.5, 96.0) and norm["weight_decay"] == pytest.approx(0.002 / 64)
    norm_params = {id(p) for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert all(id(p) in norm_params and p.ndim == 1 for p in norm["params"])  # the biases: scales are frozen
    trained = sum(p.numel() for g in (other, norm) for p in g["params"])
    assert trained == sum(p.numel() for p in module.net.parameters() if p.requires_grad)
    assert module.net.whiten.weight.requires_grad is False


def test_lookahead_ends_training_on_the_moving_average(tmp_path):
    """With Lookahead the weights at the end are the EMA's (the last step copies it in), saved in the checkpoint."""
    record_path, record = fit(tiny_config(tmp_path, optim={"optimizer": "sgd", "max_lr": 0.05, "lookahead_every": 5},
                                          trainer={"epochs": 2, "checkpoint": True}))
    assert record["status"] in ("completed", "not-reached"), record["error"]
    checkpoint = torch.load(record_path.parent / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    assert set(checkpoint["lookahead"]) <= set(weights)
    assert all(torch.equal(checkpoint["lookahead"][k], weights[k]) for k in checkpoint["lookahead"])


@pytest.mark.parametrize("recipe, network, protocol", [("seed", "custom_resnet", "seed"), ("resnet9", "resnet9", "published"),
                                                       ("airbench94", "airbench94", "published")])
def test_recipes_are_valid_configs_of_their_network_and_protocol(recipe, network, protocol):
    cfg = config_from_file(REPO / "bench/configs" / f"{recipe}.yaml")
    assert (cfg.model.name, cfg.data.protocol) == (network, protocol)


def test_airbench94_trains_on_the_device_path(tmp_path):
    """The whole airbench94 recipe, narrowed, on generated data: whitening from the data, bias frozen after its epochs."""
    recipe = yaml.safe_load((REPO / "bench/configs/airbench94.yaml").read_text())
    cfg = tiny_config(tmp_path, model=recipe["model"] | {"width": 8, "whiten_bias_epochs": 1},
                      optim=recipe["optim"] | {"max_lr": 0.3}, trainer={"epochs": 2},
                      data={"path": "device", "protocol": "published", "alternating_flip": True, "pad": 2,
                            "cutout_size": 0, "cutout_prob": 0.0, "batch_size": 100})
    _, record = fit(cfg)
    assert record["status"] in ("completed", "not-reached"), record["error"]
    assert record["accuracy"]["test"] == record["accuracy"]["final_val"]  # published: the test set was validated
    assert 0 < record["accuracy"]["final_val_no_tta"] <= 1  # with TTA on, the accuracy without it beside it
    assert all(p["val_acc_no_tta"] is not None for p in record["curve"])
    assert record["model"]["parameters"] > 0
