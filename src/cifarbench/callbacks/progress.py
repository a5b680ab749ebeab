"""A rich progress bar that does not slow down what it shows."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's RichProgressBar, rendering at most ``per_second`` times a second.

    Lightning's renders the bar on every training batch (twice); on the 2-core development CPU that took
    about 5% of a 50 ms training step (bench/harness_overhead.py measures it). Final renders (``hard``)
    always happen, so what is left on screen is complete.
    """

    def __init__(self, per_second: float = 2.0):
        super().__init__()
        self._interval, self._last = 1.0 / per_second, 0.0

    def refresh(self, hard: bool = False) -> None:
        now = time.monotonic()
        if hard or now - self._last >= self._interval:
            self._last = now
            super().refresh(hard=hard)
