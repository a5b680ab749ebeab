"""No steady training step makes the host wait for the device: the sync sentinel over every shipped recipe, data
path and DDP, and what it counts."""

from __future__ import annotations

import pytest
import torch
import yaml

from cifarbench.config import ModelConfig, OptimConfig
from cifarbench.measure.host_syncs import FRAMEWORK, SyncSentinel
from cifarbench.train.module import CifarClassifier
from shipped import PATHS, RECIPES, assert_trained_without_waiting, on_this_cpu, recipe, train

SIGTERM_BROADCAST = FRAMEWORK[("training_epoch_loop.py", "_broadcast_sigterm_tensor")]


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2], ids=["1-device", "ddp-2"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", RECIPES)
def test_no_steady_step_waits_for_the_device(tmp_path, name, path, world):
    """Every recipe on every data path, alone and under 2-process DDP (gloo), with W&B offline and the progress
    output at their defaults: 0 waits per steady step from cifarbench's side; under DDP, Lightning's own SIGTERM
    broadcast is named as the framework's, once per step."""
    config = recipe(name)
    config["data"] = config.get("data", {}) | {"path": path}
    config["trainer"] = config.get("trainer", {}) | ({"strategy": "ddp", "devices": 2} if world == 2 else {})
    record = train(on_this_cpu(config, tmp_path, f"{name}-{path}-{world}"), tmp_path)
    assert_trained_without_waiting(record)
    framework = record["measure"]["framework_syncs_per_step"]
    assert framework == ({SIGTERM_BROADCAST: pytest.approx(3.0)} if world == 2 else {})  # flag, broadcast, .item()
    if name == "airbench94":
        assert record["accuracy"]["epochs_completed"] == 2  # past whiten_bias_epochs (1)


def sentinel_calls(action) -> list[str]:
    """The calls the sentinel records while ``action`` runs (on the CPU, standing in for a GPU)."""
    calls: list[str] = []
    with SyncSentinel(torch.device("cpu"), lambda what, stack: calls.append(what)) as sentinel:
        sentinel.active = True
        action()
        sentinel.active = False
    return calls


def test_the_sentinel_counts_reads_and_pageable_copies_and_leaves_out_what_does_not_wait():
    x = torch.ones(4)
    assert sentinel_calls(lambda: x.sum().item()) == ["item"]
    assert sentinel_calls(lambda: bool(x.sum() > 0)) == ["__bool__"]
    assert sentinel_calls(lambda: float(x.sum())) == ["__float__"]
    assert sentinel_calls(lambda: x.tolist()) == ["tolist"]
    assert sentinel_calls(lambda: torch.tensor((1, 2), device="cpu")) == ["tensor"]  # onto the "device"
    assert sentinel_calls(lambda: torch.as_tensor(3.0, device="cpu")) == ["as_tensor"]
    assert sentinel_calls(lambda: x.to("cpu")) == ["to"]
    # host-only on a GPU too: a tensor made on the host, a non-blocking copy, torch.optim's step counters
    assert sentinel_calls(lambda: torch.tensor((1, 2))) == []
    assert sentinel_calls(lambda: x.to("cpu", non_blocking=True)) == []
    weight = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([weight])
    weight.grad = torch.ones(3)
    assert sentinel_calls(adam.step) == []


class OneOutputBuffer(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.buffer = net, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.buffer = out if self.buffer is None else self.buffer.copy_(out)
        return self.buffer


def test_test_time_augmentation_is_right_when_the_network_reuses_its_output_buffer():
    """CUDA graphs (compile reduce-overhead, max-autotune) write every call's output into one buffer; a CPU has no
    CUDA graphs, so a network that does the same stands in: the views' mean must not change."""
    module = CifarClassifier(ModelConfig(width=4, tta="flip_translate"), OptimConfig()).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module.eval_logits(images)
        module.net = OneOutputBuffer(module.net)
        assert torch.allclose(module.eval_logits(images), expected, atol=1e-6)


def test_the_airbench94_whitening_bias_stops_changing_after_its_epochs(tmp_path):
    """Frozen by dropping its gradient (DDP-safe): it trains in epoch 0 and is the same after epochs 1 and 2 (with
    Lookahead off: airbench's Lookahead averages every float weight, this bias too, frozen or not)."""
    import lightning as L

    from cifarbench.config_parser import config_from_dict
    from cifarbench.data import build_datamodule

    config = on_this_cpu(recipe("airbench94"), tmp_path, "freeze", wandb="disabled")
    config["optim"]["lookahead_every"] = None
    cfg = config_from_dict(config)
    module = CifarClassifier(cfg.model, cfg.optim)
    biases = []

    class Watch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            biases.append(pl_module.net.whiten.bias.detach().clone())

    first = module.net.whiten.bias.detach().clone()
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, callbacks=[Watch()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(module, datamodule=build_datamodule(cfg.data, seed=0))
    assert not torch.equal(first, biases[0])  # trained in epoch 0
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])
    assert module.net.whiten.bias.requires_grad  # what DDP wrapped stays as it was


def test_on_cuda_each_steady_steps_sync_warnings_are_counted_and_other_warnings_still_shown(tmp_path, monkeypatch):
    """CUDA's sync debug mode makes every synchronising call warn; a CPU has none, so a training step that raises
    the same warning stands in for the device (the policy: counted per steady step, with its call site; any other
    warning still reaches the user)."""
    import warnings

    import lightning as L

    from cifarbench.config import DataConfig
    from cifarbench.data import build_datamodule
    from cifarbench.measure.host_syncs import HostSyncCount

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    class Syncing(CifarClassifier):
        def training_step(self, batch, batch_idx):
            warnings.warn("called a synchronizing CUDA operation")
            warnings.warn("something else", UserWarning)
            return super().training_step(batch, batch_idx)

    count = HostSyncCount(warmup_steps=2, counter="cuda")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, callbacks=[count], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False,
                        log_every_n_steps=0)
    data = DataConfig(source="synthetic", synthetic_train_size=700, synthetic_test_size=100, val_size=100,
                      batch_size=100, num_workers=0)
    with pytest.warns(UserWarning, match="something else"):
        trainer.fit(Syncing(ModelConfig(width=4), OptimConfig()), datamodule=build_datamodule(data, seed=0))
    summary = count.summary
    assert summary["source"].startswith("cuda") and summary["steady_steps"] == 3  # 6 steps, 2 warm-up, last apart
    assert summary["host_syncs_per_step"] == 1 and modes[:2] == ["warn", "default"]
    assert all("test_host_syncs.py" in site and site.endswith("(training_step)") for site in summary["sites"])


def test_fp16_mixed_precision_on_cuda_steps_with_the_fused_optimizer():
    """The policy that keeps GradScaler's inf check on the device (a CPU cannot run 16-mixed to count it)."""
    from cifarbench.train.module import fused_kernels

    assert fused_kernels("16-mixed", torch.device("cuda", 0)) == {"fused": True}
    assert fused_kernels("bf16-mixed", torch.device("cuda", 0)) == fused_kernels("16-mixed", torch.device("cpu")) == {}
