"""How long each training step waits for its batch, against how long it computes."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np

from .sync import gather_rows, synced_now


class DataWait(L.Callback):
    """Per step: wait = from the synchronised end of the previous step to the start of this one, i.e.
    fetching, collating and copying the batch to the device (for the first step of the run it counts
    from the start of fit, so DataLoader worker start-up is in; after a validation, from the start of
    the next epoch); compute = from the start
    of the step to its synchronised end. Because the device has drained at the end of each step, the
    whole wait is time the device sat idle: the data-stall fraction is wait / (wait + compute).
    """

    def __init__(self):
        self.waits: list[float] = []
        self.computes: list[float] = []
        self.summary: dict[str, Any] = {}
        self._ready: Optional[float] = None
        self._step_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._ready = synced_now(pl_module.device)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._ready = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._ready is None:
            self._ready = synced_now(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = synced_now(pl_module.device)
        if self._ready is not None:
            self.waits.append(self._step_start - self._ready)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._ready = synced_now(pl_module.device)
        self.computes.append(self._ready - self._step_start)

    def on_train_end(self, trainer, pl_module) -> None:
        wait, compute = float(np.sum(self.waits)), float(np.sum(self.computes))
        rows = gather_rows(trainer, [wait, compute])
        fractions = [w / (w + c) if w + c > 0 else 0.0 for w, c in rows]
        self.summary = {
            "steps": len(self.computes),
            "wait_seconds": wait,
            "compute_seconds": compute,
            "stall_fraction": float(np.mean(fractions)),
            "per_rank_stall_fraction": fractions,
            "wait_ms_p50": _ms(self.waits, 50), "wait_ms_p95": _ms(self.waits, 95), "wait_ms_max": _ms(self.waits, 100),
            "compute_ms_p50": _ms(self.computes, 50),
        }


def _ms(values: list[float], percentile: float) -> Optional[float]:
    return float(np.percentile(values, percentile) * 1e3) if values else None
