"""Progress as people watch it: a rich bar in a terminal that does not slow down what it shows, and plain\nlines in a log file."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Optional, TextIO

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's RichProgressBar, updating and rendering at most ``per_second`` times a second.

    Lightning's updates the bar and its metrics and renders it on every training batch; on the 2-core
    development CPU that took about 5% of a 50 ms training step (bench/harness_overhead.py measures it).
    The last batch of an epoch and final renders (``hard``) always show, so what is left on screen is complete.
    """

    def __init__(self, per_second: float = 2.0, **rich_progress_bar_kwargs):
        super().__init__(**rich_progress_bar_kwargs)
        self._interval, self._last = 1.0 / per_second, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_of_epoch = batch_idx + 1 == self.total_train_batches
        if last_of_epoch or self._due():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if last_of_epoch:
            self._render(hard=False)

    def refresh(self, hard: bool = False) -> None:
        if hard or self._due():
            self._render(hard)

    def _due(self) -> bool:
        return time.monotonic() - self._last >= self._interval

    def _render(self, hard: bool) -> None:
        self._last = time.monotonic()
        super().refresh(hard=hard)


class LogLineProgress(ProgressBar):
    """Progress for a log file (Slurm output, ``cifarbench run``'s logs, CI): plain lines instead of a bar.

    One line per finished epoch: epoch, step, the epoch's mean training loss, validation accuracy, images/s,
    elapsed time and an ETA; within an epoch longer than ``every_seconds``, a shorter line every ``every_seconds``.
    Images/s here are wall-clock (validation included), for a human watching; the run record has the measured
    rates. Mid-epoch lines read host clocks only; an epoch's line is printed once Lightning has computed (and
    read, for its loggers) the epoch means, at the next epoch's start or at the end, so it adds no device wait.
    """

    def __init__(self, every_seconds: float = 60.0, stream: Optional[TextIO] = None):
        super().__init__()
        self.every_seconds, self.stream, self._enabled = every_seconds, stream, True
        self._started = self._epoch_started = self._last_line = 0.0
        self._images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = self._epoch_started = self._last_line = time.monotonic()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0 and self._images:
            self._epoch_line(trainer)
        self._epoch_started, self._images = time.monotonic(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[0]) * trainer.world_size
        now = time.monotonic()
        if now - self._last_line >= self.every_seconds and batch_idx + 1 < self.total_train_batches:
            share = (batch_idx + 1) / self.total_train_batches
            self._line(trainer, trainer.current_epoch + 1, f"step {trainer.global_step} ({share:.0%} of the epoch)",
                       trainer.current_epoch + share, now)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._images:
            self._epoch_line(trainer)

    def _epoch_line(self, trainer) -> None:
        metrics = trainer.callback_metrics
        parts = [f"step {trainer.global_step}"] + [f"{label} {float(metrics[key]):.4f}" for key, label in
                                                   (("train/loss_epoch", "train loss"), ("val/acc", "val acc"))
                                                   if key in metrics]
        self._line(trainer, trainer.current_epoch, " | ".join(parts), trainer.current_epoch, time.monotonic())

    def _line(self, trainer, epoch: int, middle: str, epochs_done: float, now: float) -> None:
        if not self._enabled:
            return
        rate = self._images / max(now - self._epoch_started, 1e-9)
        elapsed = now - self._started
        eta = _clock(elapsed / epochs_done * (trainer.max_epochs - epochs_done)) if epochs_done > 0 else "?"
        print(f"epoch {epoch}/{trainer.max_epochs} | {middle} | {rate:,.0f} img/s | {_clock(elapsed)} elapsed "
              f"| ETA {eta}", file=self.stream or sys.stdout, flush=True)
        self._last_line = now


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
