"""What a user watching training sees: the throttled rich bar against a real console, and plain log lines."""

import io
import re

import lightning as L

from cifarbench.callbacks.progress import LogLineProgress, ThrottledRichProgressBar
from test_measure import Toy


def test_throttled_progress_bar_renders_rarely_and_ends_each_epoch_complete():
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


def test_log_lines_one_per_epoch_and_a_shorter_one_within_a_long_epoch():
    """Not a terminal: plain lines. Every epoch ends with its line (validation accuracy, ETA); an epoch longer
    than ``every_seconds`` gets lines in between, which read only host clocks (no metric, so no device wait)."""
    log = io.StringIO()
    progress = LogLineProgress(every_seconds=0.2, stream=log)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[progress])
    trainer.fit(Toy(step_sleep=0.05, accuracies=(0.25, 0.5, 0.75)))  # 10 batches of 0.05 s per epoch
    lines = log.getvalue().splitlines()
    ends = [line for line in lines if "val acc" in line]
    assert [line.split(" | ")[0] for line in ends] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], lines
    assert [line.split(" | ")[2] for line in ends] == ["val acc 0.2500", "val acc 0.5000", "val acc 0.7500"]
    assert ends[-1].endswith("| ETA 0:00:00") and re.search(r"\| [\d,]+ img/s \|", ends[0])
    within = [line for line in lines if "of the epoch)" in line]
    assert within and all("val acc" not in line and "loss" not in line for line in within), lines
    assert len(lines) == len(ends) + len(within)
