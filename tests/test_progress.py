"""The throttled rich progress bar, against a real console."""

import io
import re

import lightning as L

from cifarbench.callbacks.progress import ThrottledRichProgressBar
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
