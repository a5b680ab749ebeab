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

    ``stall_fraction`` leaves out the first ``warmup_steps`` steps, like the throughput does (worker
    start-up, FFCV's JIT compilation); ``stall_fraction_all_steps`` keeps them. After a preemption the
    steps saved with the checkpoint come back (``state_dict``) and the resumed attempt's first
    ``warmup_steps`` steps are warm-up again.
    """

    def __init__(self, warmup_steps: int = 0):
        self.warmup_steps = warmup_steps
        self.waits: list[float] = []
        self.computes: list[float] = []
        self.summary: dict[str, Any] = {}
        self._ready: Optional[float] = None
        self._step_start = 0.0
        self._attempt_starts: list[int] = []  # index of each attempt's first step

    def on_fit_start(self, trainer, pl_module) -> None:
        self._attempt_starts.append(len(self.computes))
        self._ready = synced_now(pl_module.device)

    def state_dict(self) -> dict[str, Any]:
        return {"waits": self.waits, "computes": self.computes, "attempt_starts": self._attempt_starts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.waits, self.computes = list(state["waits"]), list(state["computes"])
        self._attempt_starts = list(state["attempt_starts"])

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
        warmup = {i for start in self._attempt_starts for i in range(start, start + self.warmup_steps)}
        steady_waits = [w for i, w in enumerate(self.waits) if i not in warmup]
        steady_computes = [c for i, c in enumerate(self.computes) if i not in warmup]
        totals = [sum(steady_waits), sum(steady_computes), sum(self.waits), sum(self.computes)]
        rows = gather_rows(trainer, totals)
        steady = [_fraction(w, c) for w, c, _, _ in rows]
        self.summary = {
            "steps": len(self.computes),
            "warmup_steps": self.warmup_steps,
            "attempts": len(self._attempt_starts),
            "wait_seconds": totals[0],
            "compute_seconds": totals[1],
            "stall_fraction": float(np.mean(steady)) if steady_computes else None,
            "per_rank_stall_fraction": steady,
            "stall_fraction_all_steps": float(np.mean([_fraction(w, c) for _, _, w, c in rows])),
            "wait_ms_p50": _ms(steady_waits, 50), "wait_ms_p95": _ms(steady_waits, 95),
            "wait_ms_max": _ms(steady_waits, 100), "compute_ms_p50": _ms(steady_computes, 50),
            "first_wait_seconds": self.waits[0] if self.waits else None,
        }


def _fraction(wait: float, compute: float) -> float:
    return wait / (wait + compute) if wait + compute > 0 else 0.0


def _ms(values: list[float], percentile: float) -> Optional[float]:
    return float(np.percentile(values, percentile) * 1e3) if values else None
