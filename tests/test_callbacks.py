"""Each measurement callback on its own, against a toy module whose timings are known by construction."""

import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cifarbench.callbacks.data_wait import DataWait
from cifarbench.callbacks.throughput import SteadyStateThroughput
from cifarbench.callbacks.time_to_accuracy import TimeToAccuracy

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


def fit(module, callback, epochs=1):
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback])
    trainer.fit(module)
    return callback


def test_throughput_keeps_warmup_and_validation_off_the_steady_clock():
    result = fit(Toy(step_sleep=0.02, warmup_sleep=0.5, val_sleep=0.3), SteadyStateThroughput(warmup_steps=2), epochs=2).summary
    assert result["steady_steps"] == 18 and result["steady_images"] == 18 * BATCH
    assert result["images_per_sec"] == pytest.approx(BATCH / 0.02, rel=0.3)  # neither the 0.5 s nor the 0.3 s count
    assert result["warmup_seconds"] >= 1.0
    assert result["warmup_overhead_seconds"] == pytest.approx(1.0, abs=0.15)


def test_throughput_says_when_there_was_no_steady_state():
    result = fit(Toy(), SteadyStateThroughput(warmup_steps=50)).summary
    assert result["images_per_sec"] is None and "warm-up is 50" in result["note"]


def test_mfu_uses_the_given_flops_and_a_measured_cpu_peak():
    result = fit(Toy(), SteadyStateThroughput(warmup_steps=2, train_flops_per_image=1_000_000, precision="32-true")).summary
    assert result["flops_per_sec_per_device"] == pytest.approx(result["images_per_sec"] * 1e6)
    assert result["peak_flops_source"].startswith("cpu matmul probe") and result["peak_flops_per_device"] > 1e9
    assert 0 < result["mfu"] < 1


def test_data_wait_sees_a_slow_loader():
    slow = fit(Toy(step_sleep=0.01, item_sleep=0.005), DataWait()).summary  # 40 ms to load, 10 ms to compute
    fast = fit(Toy(step_sleep=0.01), DataWait()).summary
    assert slow["steps"] == 10 and 0.65 < slow["stall_fraction"] < 0.9
    assert slow["wait_ms_p50"] == pytest.approx(40, rel=0.3) and slow["compute_ms_p50"] == pytest.approx(10, rel=0.5)
    assert fast["stall_fraction"] < 0.3


def test_time_to_accuracy_with_and_without_validation_time():
    tta = fit(Toy(val_sleep=0.2, accuracies=(0.2, 0.5, 0.9, 0.95)), TimeToAccuracy(target=0.8), epochs=4)
    s = tta.summary
    assert s["reached"] and s["epoch"] == 3 and s["step"] == 30
    assert s["seconds"] - s["seconds_excl_val"] == pytest.approx(3 * 0.2, abs=0.1)  # three validations ran by then
    assert [p["val_acc"] for p in tta.curve] == pytest.approx([0.2, 0.5, 0.9, 0.95])
    assert all(a["seconds"] < b["seconds"] for a, b in zip(tta.curve, tta.curve[1:]))


def test_time_to_accuracy_not_reached_is_none_not_zero():
    s = fit(Toy(accuracies=(0.2, 0.5)), TimeToAccuracy(target=0.99), epochs=2).summary
    assert s["reached"] is False and s["seconds"] is None and s["seconds_excl_val"] is None and s["epoch"] is None


def test_measurements_go_on_across_a_preemption(tmp_path):
    """A run checkpointed after 2 of 4 epochs, with 0.3 s of work lost after the checkpoint, resumes in a
    new Trainer (as a requeued Slurm job does): the clock goes on from the end of the lost work, the curve
    and steady-state counts carry over, and each attempt's warm-up is warm-up again."""
    accuracies = (0.2, 0.5, 0.9, 0.95)
    first = [TimeToAccuracy(target=0.8), SteadyStateThroughput(warmup_steps=2), DataWait(warmup_steps=2)]
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=first)
    trainer.fit(Toy(step_sleep=0.02, warmup_sleep=0.5, accuracies=accuracies))
    trainer.save_checkpoint(tmp_path / "preempted.ckpt")
    time.sleep(0.3)  # work done after the checkpoint, lost with the attempt
    clock_at_end = first[0].clock()

    tta = TimeToAccuracy(target=0.8, prior_seconds=clock_at_end)
    throughput, data_wait = SteadyStateThroughput(warmup_steps=2), DataWait(warmup_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[tta, throughput, data_wait])
    trainer.fit(Toy(step_sleep=0.02, warmup_sleep=0.5, accuracies=accuracies), ckpt_path=tmp_path / "preempted.ckpt")

    assert [p["epoch"] for p in tta.curve] == [1, 2, 3, 4] and tta.curve[:2] == first[0].curve
    s = tta.summary
    assert s["reached"] and s["epoch"] == 3 and s["seconds"] > clock_at_end
    assert s["lost_seconds"] == pytest.approx(0.3, abs=0.1)
    t = throughput.summary
    assert t["attempts"] == 2 and t["steady_steps"] == 2 * (20 - 2)
    assert t["warmup_overhead_seconds"] == pytest.approx(2 * 1.0, abs=0.3)  # two cold starts of 2 x 0.5 s
    w = data_wait.summary
    assert w["attempts"] == 2 and w["steps"] == 40


def test_throttled_progress_bar_renders_rarely_and_ends_each_epoch_complete():
    import io
    import re

    from cifarbench.callbacks.progress import ThrottledRichProgressBar

    screen = io.StringIO()
    bar = ThrottledRichProgressBar(per_second=0.2, console_kwargs={"file": screen, "force_terminal": True, "width": 100})
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[bar])
    trainer.fit(Toy(step_sleep=0.05))  # 2 epochs of 10 batches: 1 s, inside one 5 s render interval
    frames = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue()).split("\r")
    train_frames = [f for f in frames if f.startswith("Epoch")]
    assert len(train_frames) <= 12, train_frames  # ~7 (each epoch: start, first batch, end); Lightning's own: ~27
    for epoch in (0, 1):
        assert any(f.startswith(f"Epoch {epoch}/1") and " 10/10 " in f for f in train_frames), train_frames
