"""A rich progress bar that does not slow down what it shows."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar


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
