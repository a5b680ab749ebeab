"""Every strategy knob really does what it says on CPU, and impossible ones are refused up front."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from cifarbench.record import read_record
from cifarbench.train.run import fit
from cifarbench.train.module import CifarClassifier
from cifarbench.cli import main
from conftest import REPO, last_line, run_cli, tiny_config


class Spy(CifarClassifier):
    """Records what the network saw in the first training step."""

    seen: dict = {}

    def training_step(self, batch, batch_idx):
        if not Spy.seen:
            images = batch[0]
            with torch.no_grad():
                logits = self.net(images)
            Spy.seen = {"channels_last": images.is_contiguous(memory_format=torch.channels_last) and images.dim() == 4
                        and not images.is_contiguous(), "input_dtype": images.dtype, "logits_dtype": logits.dtype,
                        "weights_channels_last": self.net.prep[0].weight.is_contiguous(memory_format=torch.channels_last),
                        "weight_dtype": self.net.prep[0].weight.dtype}
        return super().training_step(batch, batch_idx)


@pytest.fixture
def spy(monkeypatch):
    Spy.seen = {}
    monkeypatch.setattr("cifarbench.train.run.CifarClassifier", Spy)
    return Spy


def test_channels_last_reaches_every_batch_and_the_weights(tmp_path, spy):
    fit(tiny_config(tmp_path, trainer={"channels_last": True, "epochs": 1}))
    assert spy.seen["channels_last"] and spy.seen["weights_channels_last"]


def test_default_layout_is_contiguous(tmp_path, spy):
    fit(tiny_config(tmp_path, trainer={"epochs": 1}))
    assert not spy.seen["channels_last"] and not spy.seen["weights_channels_last"]


def test_bf16_mixed_computes_in_bf16_with_fp32_weights(tmp_path, spy):
    _, record = fit(tiny_config(tmp_path, trainer={"precision": "bf16-mixed", "epochs": 1}))
    assert spy.seen["logits_dtype"] == torch.bfloat16 and spy.seen["weight_dtype"] == torch.float32
    assert record["status"] in ("completed", "not-reached")
    assert "bfloat16" in record["throughput"]["peak_flops_source"]  # MFU against the bf16 peak


def test_bf16_on_a_cpu_without_bf16_units_is_warned_about_not_refused():
    from cifarbench.checks import slow_precision
    from cifarbench.config import TrainerConfig
    from cifarbench.measure.environment import cpu_native_bf16

    warning = slow_precision(TrainerConfig(accelerator="cpu", precision="bf16-mixed"))
    assert (warning is None) == cpu_native_bf16()  # this machine's CPU decides
    assert warning is None or warning.startswith("trainer.precision='bf16-mixed' on a CPU without bf16 units")
    assert slow_precision(TrainerConfig(accelerator="cpu", precision="32-true")) is None


def test_bf16_true_keeps_weights_in_bf16(tmp_path, spy):
    fit(tiny_config(tmp_path, trainer={"precision": "bf16-true", "epochs": 1}))
    assert spy.seen["weight_dtype"] == torch.bfloat16 and spy.seen["input_dtype"] == torch.bfloat16


@pytest.mark.parametrize("untimed_warmup_steps", [2, 0])
def test_torch_compile_happens_before_the_clocks_or_in_the_reported_warmup(tmp_path, untimed_warmup_steps):
    """With the untimed warm-up (default) compile is done before the first step, and the record says how long it
    took (``warmup.seconds``): the warm-up steps cost what steady steps cost. Without it the first steps pay for
    compilation, reported apart from the steady rate."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = tiny_config(tmp_path, model={"width": 4}, trainer={"compile": "default", "epochs": 1},
                      data={"synthetic_train_size": 700, "val_size": 100, "batch_size": 100}, test=False,
                      measure={"target_accuracy": 0.3, "warmup_steps": 2, "untimed_warmup_steps": untimed_warmup_steps})
    _, record = fit(cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # really compiled
    tp = record["throughput"]
    assert tp["steady_steps"] == 4 and tp["images_per_sec"] > 0
    step = tp["steady_seconds"] / tp["steady_steps"]
    if untimed_warmup_steps:
        assert tp["warmup_seconds"] < 2 * 3 * step
        assert record["warmup"]["seconds"] > 10 * step and record["warmup"]["steps"] == 2  # the compile, apart
    else:
        assert tp["warmup_seconds"] > 10 * step
        assert record["warmup"]["seconds"] is None


def test_ddp_two_processes_gloo(tmp_path):
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                     "--trainer.epochs", "2", "--trainer.ddp.gradient_as_bucket_view", "true",
                     "--output.dir", str(tmp_path), "--output.wandb", "disabled")
    assert result.returncode == 0, result.stdout[-3000:]
    record = read_record(Path(last_line(result)))
    env, tp, wait = record["environment"], record["throughput"], record["data_wait"]
    assert env["world_size"] == 2 and env["strategy"] == "DDPStrategy" and env["process_group_backend"] == "gloo"
    steps = 3000 // 2 // 128  # each rank sees its own half of the data
    assert wait["steps"] == 2 * steps and len(wait["per_rank_fetch_fraction"]) == 2
    assert len(tp["per_rank_images_per_sec"]) == 2 and tp["steady_images"] == 2 * (2 * steps - 3) * 128
    # the job's rate: every rank's steady images over the slowest rank's seconds (not a sum of per-rank rates)
    assert tp["steady_seconds"] == max(tp["per_rank_steady_seconds"])
    assert tp["images_per_sec"] == pytest.approx(tp["steady_images"] / tp["steady_seconds"])
    assert len(record["curve"]) == 2 and record["status"] in ("completed", "not-reached")
    assert len(list(tmp_path.iterdir())) == 1  # both ranks wrote into one run directory


@pytest.mark.parametrize("args, message", [
    (["--trainer.precision", "16-mixed"], "trainer.precision='16-mixed': fp16 autocast needs a CUDA GPU; on CPU use bf16-mixed"),
    (["--trainer.precision", "16-true", "--optim.optimizer", "sgd"], "trainer.precision='16-true': the CPU has no fast fp16 kernels"),
    (["--trainer.compile", "reduce-overhead"], "trainer.compile='reduce-overhead': this mode needs CUDA"),
    (["--trainer.compile", "max-autotune"], "trainer.compile='max-autotune': this mode needs CUDA"),
    (["--trainer.accelerator", "gpu"], "trainer.accelerator='gpu': no CUDA GPU is visible on this machine; use accelerator=cpu"),
    (["--trainer.devices", "64"], "trainer.devices=64: this node has"),
    (["--trainer.num_nodes", "2"], "trainer.num_nodes=2: several nodes need a cluster launcher"),
    (["--trainer.ddp.static_graph", "true"], "trainer.strategy='auto': trainer.ddp options apply only with strategy=ddp"),
    (["--data.batch_size", "4000"], "data.batch_size=4000: each of the 1 devices gets 3000 training images"),
    (["--measure.target_accuracy", "93"], "measure.target_accuracy=93: must be in (0, 1]"),
    (["--trainer.precision", "fp8"], "trainer.precision='fp8': expected one of 32-true, 16-mixed, bf16-mixed"),
    (["--trainer.precison", "bf16-mixed"], "trainer.precison: unknown config field; did you mean trainer.precision?"),
    (["--output.run_id", "a;rm -rf ~"], "output.run_id='a;rm -rf ~': use 1-128 letters"),
])
def test_impossible_combinations_are_refused_before_any_work(tmp_path, capsys, args, message):
    code = main(["fit", "-c", str(REPO / "bench/configs/smoke.yaml"), "--output.dir", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"cifarbench: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_the_installed_command_refuses_with_one_line_and_exit_2(tmp_path):
    result = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--trainer.precision", "16-mixed", timeout=60)
    assert result.returncode == 2
    assert result.stdout.strip() == ("cifarbench: error: trainer.precision='16-mixed': fp16 autocast needs a CUDA GPU; "
                                     "on CPU use bf16-mixed or 32-true")


def test_flip_tta_evaluates_the_mean_of_each_image_and_its_mirror():
    from cifarbench.config import ModelConfig, OptimConfig
    from cifarbench.train.module import CifarClassifier

    module = CifarClassifier(ModelConfig(width=4, tta="flip"), OptimConfig()).eval()
    module.trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)  # not fitted
    module.log = lambda *args, **kwargs: None
    seen = []
    net = module.net

    class Recorder(torch.nn.Module):  # the network, noting each input it is given
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, x):
            seen.append(x)
            return self.inner(x)

    module.net = Recorder()
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    with torch.no_grad():
        module.validation_step((images, labels), 0)
        expected = (net(images) + net(images.flip(-1))) / 2
        assert len(seen) == 2 and torch.equal(seen[1], images.flip(-1))
        assert module.val_acc.compute() == (expected.argmax(1) == labels).float().mean()
        module.training_step((images, labels), 0)  # training sees the image once
    assert len(seen) == 3


def test_stop_at_target_ends_training_at_the_first_validation_that_reaches_it(tmp_path):
    _, record = fit(tiny_config(tmp_path, measure={"target_accuracy": 0.2, "warmup_steps": 2, "stop_at_target": True},
                                trainer={"epochs": 6}))
    assert record["status"] == "completed"
    assert record["accuracy"]["epochs_completed"] == record["time_to_target"]["epoch"] < 6
