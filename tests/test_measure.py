"""Each measurement callback on its own, against a toy module whose timings are known by construction; and,
with a CUDA test double, how often measuring makes the host wait for the device."""

import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset

from cifarbench import measure
from cifarbench.measure import (DataWait, DivergenceGuard, PhaseTimer, SteadyStateThroughput, TimeToTarget,
                                UntimedWarmup)

BATCH = 8


class SlowItems(Dataset):
    def __init__(self, n: int, item_sleep: float):
        self.n, self.item_sleep = n, item_sleep

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.item_sleep)
        return torch.randn(4), torch.tensor(i % 2)


class Toy(L.LightningModule):
    """Each training step sleeps ``step_sleep`` (plus ``warmup_sleep`` in the first two steps);
    validation epoch e reports accuracy ``accuracies[e]`` after sleeping ``val_sleep``."""

    def __init__(self, step_sleep=0.01, warmup_sleep=0.0, val_sleep=0.0, accuracies=(0.5,), item_sleep=0.0):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.step_sleep, self.warmup_sleep, self.val_sleep = step_sleep, warmup_sleep, val_sleep
        self.accuracies, self.item_sleep, self.steps = accuracies, item_sleep, 0

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        self.steps += 1
        time.sleep(self.step_sleep + (self.warmup_sleep if self.steps <= 2 else 0.0))
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        time.sleep(self.val_sleep)

    def on_validation_epoch_end(self):
        self.log("val/acc", self.accuracies[min(self.current_epoch, len(self.accuracies) - 1)])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(SlowItems(80, self.item_sleep), batch_size=BATCH)

    def val_dataloader(self):
        return DataLoader(SlowItems(8, 0.0), batch_size=BATCH)


def fit(module, *callbacks, epochs=1, profiler=None, checkpoint_io=None, tmp_path=None):
    """A CPU Trainer with ``callbacks``; the PhaseTimer of the first one that has it times fetch and checkpoints."""
    profiler = profiler or next((getattr(c, "profiler", None) or getattr(c, "phases", None) for c in callbacks
                                 if getattr(c, "profiler", None) or getattr(c, "phases", None)), None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=tmp_path is not None,
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=list(callbacks), profiler=profiler,
                        plugins=[checkpoint_io] if checkpoint_io else None)
    trainer.fit(module)
    return callbacks[0]


def test_throughput_keeps_warmup_and_validation_off_the_steady_clock():
    result = fit(Toy(step_sleep=0.02, warmup_sleep=0.5, val_sleep=0.3), SteadyStateThroughput(warmup_steps=2), epochs=2).summary
    assert result["steady_steps"] == 18 and result["steady_images"] == 18 * BATCH
    assert result["images_per_sec"] == pytest.approx(BATCH / 0.02, rel=0.3)  # neither the 0.5 s nor the 0.3 s count
    assert result["warmup_seconds"] >= 1.0
    assert result["warmup_overhead_seconds"] == pytest.approx(1.0, abs=0.15)


def test_zero_warmup_steps_gives_the_same_throughput_as_three():
    """With no warm-up the window starts at the first epoch's start (it divided by a raw clock value once)."""
    rates = {warmup: fit(Toy(step_sleep=0.02), SteadyStateThroughput(warmup_steps=warmup), epochs=2).summary
             for warmup in (0, 3)}
    assert rates[0]["steady_steps"] == 20 and rates[0]["warmup_seconds"] == 0
    assert rates[0]["images_per_sec"] == pytest.approx(rates[3]["images_per_sec"], rel=0.2)


def test_throughput_says_when_there_was_no_steady_state():
    result = fit(Toy(), SteadyStateThroughput(warmup_steps=50)).summary
    assert result["images_per_sec"] is None and "measure.warmup_steps is 50" in result["note"]


def test_mfu_uses_the_given_flops_and_a_measured_cpu_peak():
    result = fit(Toy(), SteadyStateThroughput(warmup_steps=2, train_flops_per_image=1_000_000, precision="32-true")).summary
    assert result["flops_per_sec_per_device"] == pytest.approx(result["images_per_sec"] * 1e6)
    assert result["peak_flops_source"].startswith("cpu matmul probe") and result["peak_flops_per_device"] > 1e9
    assert 0 < result["mfu"] < 1


class SlowCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        time.sleep(0.4)
        super().save_checkpoint(checkpoint, path, storage_options)


def test_checkpoint_writes_are_timed_and_kept_off_the_steady_clock(tmp_path):
    """Three epochs, a 0.4 s checkpoint write after each: inside the window they would cost 0.8 s of ~0.6 s."""
    phases = PhaseTimer()
    throughput = SteadyStateThroughput(warmup_steps=2, phases=phases)
    tta = TimeToTarget(target=0.9, phases=phases)
    fit(Toy(step_sleep=0.02, accuracies=(0.2, 0.5, 0.95)), throughput, tta, epochs=3, profiler=phases,
        checkpoint_io=SlowCheckpointIO(), tmp_path=tmp_path)
    t = throughput.summary
    assert t["checkpoints"] == 3 and t["checkpoint_seconds"] >= 3 * 0.4
    assert t["images_per_sec"] == pytest.approx(BATCH / 0.02, rel=0.3)
    assert t["steady_seconds"] < 28 * 0.02 * 1.5 and "checkpoint writes excluded" in t["timed_region"]
    clocks = tta.summary["clocks"]  # two checkpoints were written before the third validation reached 0.9
    assert clocks["mlperf"]["seconds"] - clocks["train_only"]["seconds"] >= 2 * 0.4


def test_data_wait_sees_a_slow_loader():
    slow = fit(Toy(step_sleep=0.01, item_sleep=0.005), DataWait()).summary  # 40 ms to load, 10 ms to compute
    fast = fit(Toy(step_sleep=0.01), DataWait()).summary
    assert slow["steps"] == 10 and 0.65 < slow["fetch_fraction"] < 0.9 and slow["stall_fraction"] == slow["fetch_fraction"]
    assert slow["fetch_ms_p50"] == pytest.approx(40, rel=0.3) and slow["step_ms_p50"] == pytest.approx(10, rel=0.5)
    assert fast["fetch_fraction"] < 0.3


class SlowHarness(L.Callback):
    """Harness work between steps, as a logger or a progress bar does it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.02)


def test_harness_time_is_never_data_wait():
    """20 ms of hook time after each 10 ms step: the old wait (end of one step to the start of the next)
    called two thirds of the time a data stall."""
    wait = fit(Toy(step_sleep=0.01), DataWait(), SlowHarness(), epochs=2).summary
    assert wait["fetch_fraction"] < 0.1 and wait["stall_fraction"] < 0.1
    assert wait["harness_fraction"] == pytest.approx(2 / 3, abs=0.12)
    assert wait["harness_ms_p50"] == pytest.approx(20, rel=0.3)


def test_data_wait_needs_its_profiler_on_the_trainer():
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[DataWait()])
    with pytest.raises(Exception, match="Trainer\\(profiler=data_wait.profiler\\)"):
        trainer.fit(Toy())


def test_time_to_target_clocks_with_and_without_validation_time():
    warmup = UntimedWarmup(steps=1, batch_size=BATCH, eval_batch_sizes=[BATCH], image_shape=(4,), num_classes=2)
    tta = TimeToTarget(target=0.8, untimed_warmup=True)
    fit(Toy(val_sleep=0.2, accuracies=(0.2, 0.5, 0.9, 0.95)), warmup, tta, epochs=4)
    s = tta.summary
    mlperf, train_only, steady = (s["clocks"][name]["seconds"] for name in ("mlperf", "train_only", "steady"))
    assert s["reached"] and s["epoch"] == 3 and s["step"] == 30
    assert mlperf - train_only == pytest.approx(3 * 0.2, abs=0.1)  # three validations ran by then
    assert steady == pytest.approx(30 * 0.01, rel=0.5) and steady < train_only
    assert all(s["clocks"][name]["region"] for name in ("mlperf", "train_only", "steady"))
    assert [p["val_acc"] for p in tta.curve] == pytest.approx([0.2, 0.5, 0.9, 0.95])
    assert all(a["seconds"]["mlperf"] < b["seconds"]["mlperf"] for a, b in zip(tta.curve, tta.curve[1:]))


def test_time_to_target_not_reached_is_none_not_zero():
    s = fit(Toy(accuracies=(0.2, 0.5)), TimeToTarget(target=0.99), epochs=2).summary
    assert s["reached"] is False and s["epoch"] is None
    assert all(clock["seconds"] is None for clock in s["clocks"].values())
    assert "no untimed warm-up" in s["clocks"]["steady"]["note"]


def test_untimed_warmup_leaves_the_weights_as_they_were():
    module = Toy()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    warmup = UntimedWarmup(steps=2, batch_size=BATCH, eval_batch_sizes=[BATCH, 3], image_shape=(4,), num_classes=2)
    after = {}

    class Snapshot(L.Callback):
        def on_train_start(self, trainer, pl_module):  # after the warm-up's, before the first step
            after.update({k: v.clone() for k, v in pl_module.state_dict().items()})
            assert all(p.grad is None for p in pl_module.parameters())

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[warmup, Snapshot()])
    trainer.fit(module)
    assert warmup.done and module.steps == 1 and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_measurements_go_on_across_a_preemption(tmp_path):
    """A run checkpointed after 2 of 4 epochs, with 0.3 s of work lost after the checkpoint, resumes in a
    new Trainer (as a requeued Slurm job does): the clock goes on from the end of the lost work, the curve
    and steady-state counts carry over, and each attempt's warm-up is warm-up again."""
    accuracies = (0.2, 0.5, 0.9, 0.95)
    first = [TimeToTarget(target=0.8), SteadyStateThroughput(warmup_steps=2), DataWait(warmup_steps=2)]
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=first, profiler=first[2].profiler)
    trainer.fit(Toy(step_sleep=0.02, warmup_sleep=0.5, accuracies=accuracies))
    trainer.save_checkpoint(tmp_path / "preempted.ckpt")
    time.sleep(0.3)  # work done after the checkpoint, lost with the attempt
    clock_at_end = first[0].clock()

    tta = TimeToTarget(target=0.8, prior_seconds=clock_at_end)
    throughput, data_wait = SteadyStateThroughput(warmup_steps=2), DataWait(warmup_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[tta, throughput, data_wait],
                        profiler=data_wait.profiler)
    trainer.fit(Toy(step_sleep=0.02, warmup_sleep=0.5, accuracies=accuracies), ckpt_path=tmp_path / "preempted.ckpt")

    assert [p["epoch"] for p in tta.curve] == [1, 2, 3, 4] and tta.curve[:2] == first[0].curve
    s = tta.summary
    assert s["reached"] and s["epoch"] == 3 and s["clocks"]["mlperf"]["seconds"] > clock_at_end
    assert s["lost_seconds"] == pytest.approx(0.3, abs=0.1)
    t = throughput.summary
    assert t["attempts"] == 2 and t["steady_steps"] == 2 * (20 - 2)
    assert t["warmup_overhead_seconds"] == pytest.approx(2 * 1.0, abs=0.3)  # two cold starts of 2 x 0.5 s
    w = data_wait.summary
    assert w["attempts"] == 2 and w["steps"] == 40 and w["steady_steps"] == 40 - 2 * 2


def test_an_attempt_resumed_mid_epoch_measures_from_its_first_step(tmp_path):
    """Slurm's SIGUSR1 checkpoint lands mid-epoch; the resumed attempt gets no on_train_epoch_start for it."""
    class StopMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 15:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                trainer.should_stop = True

    first = [SteadyStateThroughput(warmup_steps=0), DataWait(warmup_steps=0)]
    fit(Toy(step_sleep=0.01), *first, StopMidEpoch(), epochs=3)
    again = [SteadyStateThroughput(warmup_steps=0), DataWait(warmup_steps=0)]
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=again, profiler=again[1].profiler)
    trainer.fit(Toy(step_sleep=0.01), ckpt_path=tmp_path / "mid.ckpt")
    assert trainer.global_step == 30
    assert again[0].summary["steady_steps"] == 30 and again[0].summary["images_per_sec"] > 0
    assert again[1].summary["steps"] == 30 and again[1].summary["fetch_fraction"] is not None


def test_a_nan_is_noticed_within_the_check_interval_and_named_at_its_step():
    class NaNAt(Toy):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 3 else loss  # the 4th step's loss

    guard = DivergenceGuard(check_every=4)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[guard])
    trainer.fit(NaNAt(step_sleep=0.0))
    assert guard.summary["diverged"] and guard.step == 4 and guard.noticed_at_step == 4
    assert trainer.global_step == 4  # stopped at the check, not at the end of the epoch


# ---- a CUDA test double: what this machine cannot have, to check the waiting policy (not any number) ----

class FakeEvent:
    """A CUDA event on the host's clock: complete only once something waited after it was recorded."""

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self, stream=None):
        self.at = time.perf_counter()

    def query(self):
        return self.at <= Waits.done_until

    def synchronize(self):
        Waits.count("Event.synchronize")

    def elapsed_time(self, end):
        assert self.query() and end.query(), "elapsed_time of an event the device has not passed"
        return (end.at - self.at) * 1e3


class Waits:
    done_until = 0.0
    calls: list[str] = []

    @classmethod
    def count(cls, what: str) -> None:
        cls.calls.append(what)
        cls.done_until = time.perf_counter()


def test_a_steady_window_on_cuda_waits_for_the_device_at_most_four_times(monkeypatch):
    """50 steps with every measurement on, then validation and the end of training, driven hook by hook as
    Lightning calls them, on a device whose type is cuda: every wait for the device (synchronize, event
    synchronize, a read of a device tensor or a gather) is counted."""
    Waits.done_until, Waits.calls = 0.0, []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: Waits.count("cuda.synchronize"))
    for read in ("item", "tolist", "__bool__", "cpu"):
        original = getattr(torch.Tensor, read)
        monkeypatch.setattr(torch.Tensor, read, lambda self, *a, _o=original, _r=read, **k: (Waits.count(f"Tensor.{_r}"), _o(self, *a, **k))[1])

    def gather_rows(trainer, values):  # one rank's values, read on the host: a collective and a wait
        Waits.count("gather_rows")
        return [values.detach().numpy().tolist() if isinstance(values, torch.Tensor) else list(values)]

    for module in (measure.throughput, measure.data_wait, measure.divergence):
        monkeypatch.setattr(module, "gather_rows", gather_rows)
    cuda = torch.device("cuda")
    steps = 50
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=cuda), world_size=1,
                              global_step=0, num_training_batches=steps, sanity_checking=False, should_stop=False,
                              current_epoch=0, callback_metrics={"val/acc": torch.tensor(0.5)})
    module = SimpleNamespace(device=cuda)
    phases = PhaseTimer()
    trainer.profiler = phases
    callbacks = [TimeToTarget(target=0.9, phases=phases, untimed_warmup=True),
                 SteadyStateThroughput(warmup_steps=5, phases=phases), DataWait(warmup_steps=5, profiler=phases),
                 DivergenceGuard(check_every=50)]

    def hook(name, *args):
        for callback in callbacks:
            getattr(callback, name)(trainer, module, *args)

    hook("setup", "fit")
    hook("on_fit_start")
    hook("on_train_start")
    hook("on_train_epoch_start")
    batch = (torch.zeros(8, 3), torch.zeros(8))
    for step in range(steps):
        with phases.profile("[_TrainingEpochLoop].train_dataloader_next"):
            pass
        with phases.profile("[Strategy]DDPStrategy.batch_to_device"):
            pass
        hook("on_train_batch_start", batch, step)
        with phases.profile("run_training_batch"):
            loss = torch.tensor(1.0)
        trainer.global_step += 1
        hook("on_train_batch_end", {"loss": loss}, batch, step)
    hook("on_validation_start")
    hook("on_validation_end")
    hook("on_train_epoch_end")
    with phases.profile("save_checkpoint"):
        pass
    hook("on_train_end")

    assert len(Waits.calls) <= 4, Waits.calls
    assert callbacks[1].summary["steady_steps"] == steps - 5 and callbacks[2].summary["device_gap_fraction"] is not None


def test_a_training_step_reads_nothing_from_the_device_between_logging_steps(monkeypatch):
    """The module's own step (loss, epoch metrics) must not wait for the device either: torchmetrics' NaN check
    and argument validation would (``.any()`` / ``.unique()`` read on the host)."""
    from cifarbench.config import ModelConfig, OptimConfig
    from cifarbench.train.module import CifarClassifier

    module = CifarClassifier(ModelConfig(width=4), OptimConfig())
    module.trainer = SimpleNamespace(log_every_n_steps=50, should_stop=False, global_step=0)  # not a logging step
    monkeypatch.setattr(CifarClassifier, "global_step", property(lambda self: 0))
    reads = []
    for read in ("item", "tolist", "__bool__", "cpu", "numpy"):
        original = getattr(torch.Tensor, read)
        monkeypatch.setattr(torch.Tensor, read, lambda self, *a, _o=original, _r=read, **k: (reads.append(_r), _o(self, *a, **k))[1])
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    for step in range(3):
        module.training_step(batch, step)
    assert reads == []


# ---- peak FLOP/s and environment ----

def test_an_fp32_peak_follows_the_tf32_switches(monkeypatch):
    """cuDNN convolutions run in TF32 whenever its switch is on: the fp32 MFU denominator must be the TF32 peak
    then, or MFU can pass 1. A stand-in device name (no CUDA here) checks the policy, not a number."""
    from cifarbench.measure.peak_flops import apply_math_mode, peak_flops, precision_flags

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        apply_math_mode("highest")
        assert not precision_flags()["cudnn_allow_tf32"] and not precision_flags()["matmul_allow_tf32"]
        assert peak_flops(torch.device("cuda"), "32-true").source.endswith("h200 fp32")
        apply_math_mode("high")
        assert precision_flags()["cudnn_allow_tf32"] and precision_flags()["matmul_allow_tf32"]
        assert peak_flops(torch.device("cuda"), "32-true").source.endswith("h200 tf32")
        assert peak_flops(torch.device("cuda"), "bf16-mixed").source.endswith("h200 bf16")
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def test_the_cpu_peak_is_measured_once_per_host_threads_and_dtype(tmp_path, monkeypatch):
    from cifarbench.measure import peak_flops as peaks

    monkeypatch.setenv("CIFARBENCH_CACHE_DIR", str(tmp_path))
    first = peaks.peak_flops(torch.device("cpu"), "32-true")
    assert (tmp_path / "cpu-peak-flops.json").is_file() and first.flops > 1e9  # fp32 runs at GFLOP/s on any CPU

    def no_second_probe(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(peaks, "measure_cpu_matmul", no_second_probe)
    assert peaks.peak_flops(torch.device("cpu"), "32-true") == first
    with pytest.raises(AssertionError, match="measured again"):  # another dtype is another entry
        peaks.peak_flops(torch.device("cpu"), "bf16-mixed")


def test_a_copied_tree_without_git_names_its_commit_from_revision_json(tmp_path, monkeypatch):
    from cifarbench.measure import environment

    revision = tmp_path / "REVISION.json"
    revision.write_text('{"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": false}')
    monkeypatch.setattr(environment, "REVISION_FILE", revision)
    monkeypatch.setattr(environment, "_run", lambda cmd, first_line=False: None)  # as if git found no .git
    assert environment.git_revision() == {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
                                          "source": "REVISION.json"}
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = environment.collect_environment()
    assert env["variables"]["NCCL_DEBUG"] == "INFO" and env["variables"]["OMP_NUM_THREADS"] == "2"
    assert set(env["precision_flags"]) == {"matmul_precision", "matmul_allow_tf32", "cudnn_allow_tf32", "cudnn_benchmark"}
